//! A circuit breaker for one destination: closed, open, half-open.
//!
//! ```text
//!            failure rate over the last `window` calls >= threshold
//!            (once at least `min_calls` were made)
//!   closed ---------------------------------------------------------> open
//!     ^                                                                 |
//!     |  `half_open_probes` probes succeeded           `open_for` later |
//!     +-------------------------------- half-open <---------------------+
//!                                          |
//!                                          +-- a probe failed --> open again
//! ```
//!
//! Closed lets every call through and records its outcome in a sliding window.
//! Open lets nothing through. Half-open lets at most `half_open_probes` calls
//! through at once, each with the normal deadline; the first failure reopens
//! the circuit, `half_open_probes` successes close it with an empty window.
//!
//! Every call holds a [`Permit`] naming the breaker's generation: the outcome
//! of a call that started before a transition (a slow reply of a call made
//! while still closed) does not count towards the next state. A call whose
//! outcome is unknown (the gather finished without it) gives its permit back
//! with [`Breaker::release`]. Time is `tokio::time::Instant`, so tests run on
//! paused time.

use std::collections::VecDeque;
use std::time::Duration;

use pipeline::api::CircuitState;
use pipeline::config::{at_least, between};
use tokio::time::Instant;

/// Every threshold of a breaker (`QUOTE_BREAKER_*` on the gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct BreakerConfig {
    /// The breaker's sliding window: the outcomes of the last this many
    /// calls to one supplier.
    #[arg(id = "QUOTE_BREAKER_WINDOW", long = "quote-breaker-window", env = "QUOTE_BREAKER_WINDOW", default_value = "20", value_parser = at_least::<usize>(1))]
    pub window: usize,
    /// A circuit never opens on fewer calls than this in the window (at
    /// most QUOTE_BREAKER_WINDOW).
    #[arg(id = "QUOTE_BREAKER_MIN_CALLS", long = "quote-breaker-min-calls", env = "QUOTE_BREAKER_MIN_CALLS", default_value = "5", value_parser = at_least::<usize>(1))]
    pub min_calls: usize,
    /// A circuit opens when at least this percentage of the window's calls
    /// failed.
    #[arg(id = "QUOTE_BREAKER_FAILURE_RATE", long = "quote-breaker-failure-rate", env = "QUOTE_BREAKER_FAILURE_RATE", default_value = "50", value_parser = between::<u8>(1, 100))]
    pub failure_rate_percent: u8,
    /// How long an open circuit stays open before it lets probes through
    /// (at most a day).
    #[arg(id = "QUOTE_BREAKER_OPEN_MS", long = "quote-breaker-open-ms", env = "QUOTE_BREAKER_OPEN_MS", default_value = "5000", value_parser = bounded_millis(86_400_000))]
    pub open_for: Duration,
    /// Probes let through at once while half-open, and the successes that
    /// close the circuit.
    #[arg(id = "QUOTE_BREAKER_HALF_OPEN_PROBES", long = "quote-breaker-half-open-probes", env = "QUOTE_BREAKER_HALF_OPEN_PROBES", default_value = "1", value_parser = at_least::<usize>(1))]
    pub half_open_probes: usize,
}

/// Positive milliseconds up to `max`.
pub fn bounded_millis(
    max: u64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |raw: &str| {
        let ms = between::<u64>(1, max)(raw)?;
        Ok(Duration::from_millis(ms))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: usize, successes: usize },
}

/// Leave to make one call; hand it back (once: it is not `Clone`) with
/// [`Breaker::record`] or [`Breaker::release`].
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    generation: u64,
    probe: bool,
}

impl Permit {
    /// Whether the call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    /// `true` = failure, newest last; only while closed.
    window: VecDeque<bool>,
    generation: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed,
            window: VecDeque::with_capacity(config.window),
            generation: 0,
        }
    }

    /// The state at `now` (an open circuit whose cool-down is over shows as
    /// half-open: the next call will be a probe).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if now >= until => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Until when an open circuit stays open.
    pub fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Calls and failures in the current window (closed only).
    pub fn window(&self) -> (usize, usize) {
        (
            self.window.len(),
            self.window.iter().filter(|failed| **failed).count(),
        )
    }

    /// A permit for one call, or `None` when the circuit keeps the call out.
    pub fn acquire(&mut self, now: Instant) -> Option<Permit> {
        if let State::Open { until } = self.state {
            if now < until {
                return None;
            }
            self.transition(State::HalfOpen {
                in_flight: 0,
                successes: 0,
            });
        }
        match &mut self.state {
            State::Closed => Some(Permit {
                generation: self.generation,
                probe: false,
            }),
            State::HalfOpen { in_flight, .. } if *in_flight < self.config.half_open_probes => {
                *in_flight += 1;
                Some(Permit {
                    generation: self.generation,
                    probe: true,
                })
            }
            _ => None,
        }
    }

    /// Records the outcome of the call `permit` was given for.
    pub fn record(&mut self, permit: Permit, success: bool, now: Instant) {
        if permit.generation != self.generation {
            return;
        }
        match &mut self.state {
            State::Closed => {
                if self.window.len() == self.config.window {
                    self.window.pop_front();
                }
                self.window.push_back(!success);
                let (calls, failures) = self.window();
                if calls >= self.config.min_calls.max(1)
                    && failures * 100 >= usize::from(self.config.failure_rate_percent) * calls
                {
                    self.open(now);
                }
            }
            State::HalfOpen {
                in_flight,
                successes,
            } => {
                *in_flight = in_flight.saturating_sub(1);
                if !success {
                    self.open(now);
                } else {
                    *successes += 1;
                    if *successes >= self.config.half_open_probes {
                        self.transition(State::Closed);
                    }
                }
            }
            State::Open { .. } => {}
        }
    }

    /// Gives back a permit whose call ended without an outcome.
    pub fn release(&mut self, permit: Permit) {
        if permit.generation != self.generation {
            return;
        }
        if let State::HalfOpen { in_flight, .. } = &mut self.state {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    fn open(&mut self, now: Instant) {
        self.transition(State::Open {
            until: now + self.config.open_for,
        });
    }

    fn transition(&mut self, to: State) {
        self.state = to;
        self.window.clear();
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            window: 10,
            min_calls: 4,
            failure_rate_percent: 50,
            open_for: Duration::from_secs(5),
            half_open_probes: 2,
        }
    }

    fn call(b: &mut Breaker, success: bool) {
        let permit = b.acquire(Instant::now()).expect("let through");
        b.record(permit, success, Instant::now());
    }

    #[test]
    fn states_read_and_write_as_their_names_and_gauge_values() {
        for (state, name, gauge) in [
            (CircuitState::Closed, "closed", 0.0),
            (CircuitState::HalfOpen, "half_open", 1.0),
            (CircuitState::Open, "open", 2.0),
        ] {
            assert_eq!(state.as_str(), name);
            assert_eq!(state.gauge(), gauge);
            let json = format!("\"{name}\"");
            assert_eq!(serde_json::to_string(&state).unwrap(), json);
            assert_eq!(serde_json::from_str::<CircuitState>(&json).unwrap(), state);
        }
        assert!(serde_json::from_str::<CircuitState>("\"ajar\"").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn stays_closed_below_the_minimum_number_of_calls() {
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            call(&mut b, false);
        }
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        call(&mut b, false);
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_the_failure_rate_over_the_sliding_window() {
        let mut b = Breaker::new(config());
        // 6 successes, then failures: 4 of 10 is below 50 %, 5 of 10 opens.
        for _ in 0..6 {
            call(&mut b, true);
        }
        for _ in 0..4 {
            call(&mut b, false);
        }
        assert_eq!(b.window(), (10, 4));
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        call(&mut b, false); // the oldest success slides out: 5 of 10
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
        assert!(b.acquire(Instant::now()).is_none(), "open keeps calls out");
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_slide_out_of_the_window() {
        let mut b = Breaker::new(config());
        call(&mut b, false);
        for _ in 0..10 {
            call(&mut b, true);
        }
        assert_eq!(b.window(), (10, 0));
        for _ in 0..4 {
            call(&mut b, false);
        }
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
    }

    async fn opened() -> Breaker {
        let mut b = Breaker::new(config());
        for _ in 0..4 {
            call(&mut b, false);
        }
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
        b
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_after_the_cool_down_lets_a_bounded_number_of_probes_through() {
        let mut b = opened().await;
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(b.acquire(Instant::now()).is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.state(Instant::now()), CircuitState::HalfOpen);
        let p1 = b.acquire(Instant::now()).unwrap();
        let p2 = b.acquire(Instant::now()).unwrap();
        assert!(p1.is_probe() && p2.is_probe());
        assert!(
            b.acquire(Instant::now()).is_none(),
            "only two probes at once"
        );
        // A probe that ended without an outcome frees its place.
        b.release(p2);
        let p3 = b.acquire(Instant::now()).unwrap();
        b.record(p1, true, Instant::now());
        assert_eq!(b.state(Instant::now()), CircuitState::HalfOpen);
        b.record(p3, true, Instant::now());
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        assert_eq!(b.window(), (0, 0), "closing starts a fresh window");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_a_full_cool_down() {
        let mut b = opened().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = b.acquire(Instant::now()).unwrap();
        b.record(probe, false, Instant::now());
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(b.acquire(Instant::now()).is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.acquire(Instant::now()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_of_calls_from_before_a_transition_do_not_count() {
        let mut b = Breaker::new(config());
        let slow = b.acquire(Instant::now()).unwrap();
        for _ in 0..4 {
            call(&mut b, false);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = b.acquire(Instant::now()).unwrap();
        // The slow call made while closed succeeds now: no probe result.
        b.record(slow, true, Instant::now());
        assert_eq!(b.state(Instant::now()), CircuitState::HalfOpen);
        b.record(probe, false, Instant::now());
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        /// The outcome of an outstanding call (index modulo their number).
        Record(usize, bool),
        Release(usize),
        Advance(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => Just(Op::Acquire),
            4 => (any::<usize>(), proptest::bool::weighted(0.6)).prop_map(|(i, ok)| Op::Record(i, ok)),
            1 => any::<usize>().prop_map(Op::Release),
            2 => (0u64..3_000).prop_map(Op::Advance),
        ]
    }

    fn any_config() -> impl proptest::strategy::Strategy<Value = BreakerConfig> {
        use proptest::prelude::*;
        // Round rates often, so the window meets them exactly.
        let rate = prop_oneof![Just(50u8), Just(100), Just(25), 1u8..=100];
        (1usize..12, 1usize..12, rate, 1u64..2_000, 1usize..4).prop_map(
            |(window, min_calls, rate, open_ms, probes)| BreakerConfig {
                window,
                min_calls: min_calls.min(window),
                failure_rate_percent: rate,
                open_for: Duration::from_millis(open_ms),
                half_open_probes: probes,
            },
        )
    }

    proptest::proptest! {
        /// Over any sequence of calls, outcomes, give-backs and waits: an
        /// open circuit lets nothing through until its time is up, a closed
        /// one everything; half-open never has more probes out than allowed;
        /// a closed circuit opens exactly when the window's failure rate
        /// reaches the threshold on enough calls; a half-open one opens on a
        /// failed probe and closes on enough good ones; and the outcome of a
        /// call from before a transition changes nothing.
        #[test]
        fn the_breaker_follows_its_state_machine(
            config in any_config(),
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            use proptest::prelude::*;
            let start = std::time::Instant::now();
            let mut now = Instant::from_std(start);
            let mut b = Breaker::new(config);
            let mut out: Vec<Permit> = Vec::new();
            for op in ops {
                let before = (b.state, b.generation, b.window.clone());
                match op {
                    Op::Acquire => {
                        let shown = b.state(now);
                        let permit = b.acquire(now);
                        match shown {
                            CircuitState::Open => prop_assert!(permit.is_none()),
                            CircuitState::Closed => {
                                prop_assert!(permit.as_ref().is_some_and(|p| !p.is_probe()));
                            }
                            CircuitState::HalfOpen => {
                                prop_assert!(permit.as_ref().is_none_or(Permit::is_probe));
                            }
                        }
                        out.extend(permit);
                    }
                    Op::Record(i, ok) if !out.is_empty() => {
                        let permit = out.swap_remove(i % out.len());
                        let current = permit.generation == b.generation;
                        b.record(permit, ok, now);
                        if !current {
                            prop_assert_eq!((b.state, b.generation, &b.window), (before.0, before.1, &before.2));
                            continue;
                        }
                        match before.0 {
                            State::Closed => {
                                let mut window = before.2.clone();
                                if window.len() == config.window {
                                    window.pop_front();
                                }
                                window.push_back(!ok);
                                let failures = window.iter().filter(|f| **f).count();
                                let trips = window.len() >= config.min_calls
                                    && failures * 100 >= usize::from(config.failure_rate_percent) * window.len();
                                if trips {
                                    prop_assert_eq!(b.state, State::Open { until: now + config.open_for });
                                } else {
                                    prop_assert_eq!(b.state, State::Closed);
                                    prop_assert_eq!(&b.window, &window);
                                }
                            }
                            State::HalfOpen { successes, .. } => {
                                if !ok {
                                    prop_assert_eq!(b.state, State::Open { until: now + config.open_for });
                                } else if successes + 1 >= config.half_open_probes {
                                    prop_assert_eq!(b.state, State::Closed);
                                    prop_assert!(b.window.is_empty());
                                } else {
                                    let half_open = matches!(b.state, State::HalfOpen { .. });
                                    prop_assert!(half_open, "{:?}", b.state);
                                }
                            }
                            State::Open { .. } => prop_assert!(false, "a current permit while open"),
                        }
                    }
                    Op::Release(i) if !out.is_empty() => {
                        let permit = out.swap_remove(i % out.len());
                        b.release(permit);
                        // A give-back never moves the state, only the probes.
                        let unmoved = matches!(
                            (before.0, b.state),
                            (State::Closed, State::Closed)
                                | (State::Open { .. }, State::Open { .. })
                                | (State::HalfOpen { .. }, State::HalfOpen { .. })
                        );
                        prop_assert!(unmoved, "{:?} -> {:?}", before.0, b.state);
                    }
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                    Op::Record(..) | Op::Release(_) => {}
                }
                // Probes out now, as the breaker counts them and as we do.
                let probes = out
                    .iter()
                    .filter(|p| p.probe && p.generation == b.generation)
                    .count();
                if let State::HalfOpen { in_flight, .. } = b.state {
                    prop_assert_eq!(in_flight, probes);
                    prop_assert!(in_flight <= config.half_open_probes);
                }
            }
        }
    }
}
