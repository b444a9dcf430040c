//! The ledger of one run: what was sent, what the pipeline did with it, and
//! whether every invariant of `reliability.md` held.

use std::fmt;

use serde::Serialize;

/// Counts from one run. See `README.md` ("Load and chaos") for each field.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ledger {
    /// Distinct orders the client tried to place. Every figure below is
    /// counted from the run's own order and notification records.
    pub sent: u64,
    /// Orders answered 202 (first time or replayed).
    pub accepted: u64,
    /// Extra requests re-sending an accepted order with the same key.
    pub client_retries: u64,
    /// Re-sends answered with something other than a replayed 202 or a 409.
    pub retry_anomalies: u64,
    pub reserved: u64,
    pub rejected_out_of_stock: u64,
    pub rejected_unknown_sku: u64,
    pub notified: u64,
    /// Accepted (or recovered) but never decided, or reserved but never
    /// notified.
    pub lost: u64,
    /// Orders decided more than once, or notified more than once (from each
    /// order's own `decisions` and `sends` fields).
    pub duplicated: u64,
    /// Orders whose record names another sku or qty than this run sent.
    pub mismatched: u64,
    /// Orders parked (status `parked`) rather than decided.
    pub parked: u64,
    /// Orders the client never got a 202 for (timeouts, 503s after retries).
    pub unknown: u64,
    /// Of the unknown, orders the pipeline did accept and process.
    pub recovered: u64,
    /// Deliveries the processor saw redelivered (from its /metrics).
    pub redelivered: u64,
    /// Messages that landed in the DLQs during the run.
    pub dead_lettered: u64,
    /// Initial stock minus reserved units, over the run's SKUs.
    pub stock_expected: i64,
    pub stock_actual: i64,
    /// The lowest stock seen on any of the run's SKUs.
    pub stock_min: i64,
    /// The history's side, when the run checks it (`None` otherwise).
    pub history: Option<HistoryLedger>,
}

/// What the order history holds of the run, once it caught up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistoryLedger {
    /// Orders of the run in the pipeline (accepted or recovered).
    pub expected: u64,
    /// Of those, in the history with their final status.
    pub complete: u64,
    /// In the pipeline but missing from the history, or not final there.
    pub missing: u64,
    /// In the history with another status or reason than Redis said, or
    /// without exactly the events their path implies (one each of placed,
    /// created or rejected, notified).
    pub mismatched: u64,
    /// Orders whose Redis records had already expired (retention), judged
    /// from the history alone.
    pub expired_in_redis: u64,
    /// Seconds from the pipeline's drain until the history held every order.
    pub catch_up_secs: f64,
    /// `/stats` against the Redis counters (orders = accepted, created =
    /// reserved, rejected = rejected, notified = notified).
    pub stats_equal_counters: bool,
    pub stats_detail: String,
}

impl Ledger {
    /// The invariants: nothing lost, nothing twice, stock exact and never
    /// negative.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.lost > 0 {
            v.push(format!("{} orders lost", self.lost));
        }
        if self.duplicated > 0 {
            v.push(format!("{} effects duplicated", self.duplicated));
        }
        if self.mismatched > 0 {
            v.push(format!(
                "{} order records name another sku or qty than was sent",
                self.mismatched
            ));
        }
        if self.parked > 0 {
            v.push(format!("{} orders parked", self.parked));
        }
        if self.stock_actual != self.stock_expected {
            v.push(format!(
                "stock is {} but initial stock minus reserved units is {}",
                self.stock_actual, self.stock_expected
            ));
        }
        if self.stock_min < 0 {
            v.push(format!("stock went below zero ({})", self.stock_min));
        }
        if let Some(h) = &self.history {
            if h.missing > 0 {
                v.push(format!("{} orders missing from the history", h.missing));
            }
            if h.mismatched > 0 {
                v.push(format!(
                    "{} orders with another story or other events in the history",
                    h.mismatched
                ));
            }
            if !h.stats_equal_counters {
                v.push(format!(
                    "history /stats differ from the Redis counters: {}",
                    h.stats_detail
                ));
            }
        }
        if self.retry_anomalies > 0 {
            v.push(format!(
                "{} client retries got an unexpected answer",
                self.retry_anomalies
            ));
        }
        v
    }
}

/// Latency of accepted orders to their 202, in milliseconds: from the first
/// attempt (closed loop) or from the order's scheduled send time (open loop,
/// so a backlog on the client's side is counted, not hidden).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn from_micros(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i] as f64 / 1000.0
        };
        Self {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: *samples.last().unwrap_or(&0) as f64 / 1000.0,
        }
    }
}

/// One second of the run, for the plot.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_secs: f64,
    /// Orders accepted in this second.
    pub accepted_per_sec: f64,
    /// Orders decided (reserved or rejected) in this second.
    pub decided_per_sec: f64,
    pub notified_per_sec: f64,
    /// p99 latency of the 202s answered in this second.
    pub p99_ms: f64,
}

/// Everything a run reports; `--json` writes this.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub ledger: Ledger,
    /// Seconds spent sending, and from the first send until drained.
    pub send_secs: f64,
    pub total_secs: f64,
    pub accepted_per_sec: f64,
    /// Orders fully through the pipeline (rejected, or notified) per second.
    pub end_to_end_per_sec: f64,
    pub latency: Latency,
    /// Seconds from the fault until each recovery mark (chaos): e.g. the
    /// first order *sent after the fault* accepted.
    pub recovery: Vec<(String, f64)>,
    pub drained: bool,
    pub violations: Vec<String>,
    pub samples: Vec<Sample>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.drained
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.ledger;
        writeln!(f, "ledger of run {}", self.run_id)?;
        let rows: [(&str, String); 19] = [
            ("sent", l.sent.to_string()),
            ("accepted", l.accepted.to_string()),
            (
                "client retries (same key)",
                format!("{} ({} anomalies)", l.client_retries, l.retry_anomalies),
            ),
            ("reserved", l.reserved.to_string()),
            ("rejected out_of_stock", l.rejected_out_of_stock.to_string()),
            ("rejected unknown_sku", l.rejected_unknown_sku.to_string()),
            ("notified", l.notified.to_string()),
            ("lost", l.lost.to_string()),
            ("duplicated", l.duplicated.to_string()),
            ("record mismatches", l.mismatched.to_string()),
            ("parked", l.parked.to_string()),
            (
                "unknown / recovered",
                format!("{} / {}", l.unknown, l.recovered),
            ),
            ("redelivered", l.redelivered.to_string()),
            ("dead-lettered", l.dead_lettered.to_string()),
            (
                "stock expected / actual",
                format!("{} / {}", l.stock_expected, l.stock_actual),
            ),
            ("stock minimum seen", l.stock_min.to_string()),
            (
                "throughput",
                format!(
                    "{:.0} accepted/s, {:.0} end-to-end/s",
                    self.accepted_per_sec, self.end_to_end_per_sec
                ),
            ),
            (
                "latency (202)",
                format!(
                    "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
                    self.latency.p50_ms,
                    self.latency.p90_ms,
                    self.latency.p99_ms,
                    self.latency.p999_ms,
                    self.latency.max_ms
                ),
            ),
            (
                "time",
                format!(
                    "{:.1} s sending, {:.1} s until drained",
                    self.send_secs, self.total_secs
                ),
            ),
        ];
        for (name, value) in rows {
            writeln!(f, "  {name:<27} {value}")?;
        }
        if let Some(h) = &l.history {
            writeln!(
                f,
                "  {:<27} {} of {} complete, {} missing, {} mismatched ({} already expired in Redis)",
                "history", h.complete, h.expected, h.missing, h.mismatched, h.expired_in_redis
            )?;
            writeln!(
                f,
                "  {:<27} caught up {:.1} s after the drain; /stats {} the counters{}",
                "",
                h.catch_up_secs,
                if h.stats_equal_counters {
                    "equal"
                } else {
                    "DIFFER FROM"
                },
                if h.stats_equal_counters {
                    String::new()
                } else {
                    format!(" ({})", h.stats_detail)
                }
            )?;
        }
        for (what, secs) in &self.recovery {
            writeln!(f, "  {:<27} {secs:.1} s", format!("recovery: {what}"))?;
        }
        if !self.drained {
            writeln!(
                f,
                "  NOT DRAINED: the pipeline did not finish within the timeout"
            )?;
        }
        if self.violations.is_empty() {
            write!(
                f,
                "  invariants: OK (lost 0, duplicated 0, stock exact, never negative)"
            )
        } else {
            write!(f, "  INVARIANTS VIOLATED: {}", self.violations.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_samples() {
        let l = Latency::from_micros((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        let l = Latency::from_micros((1..=2000).collect());
        assert_eq!(l.p999_ms, 1.998);
        assert_eq!(Latency::from_micros(vec![]).max_ms, 0.0);
    }

    /// A run where every invariant holds, history included.
    fn clean() -> Ledger {
        Ledger {
            sent: 10,
            accepted: 10,
            reserved: 10,
            notified: 10,
            stock_expected: 5,
            stock_actual: 5,
            stock_min: 5,
            history: Some(HistoryLedger {
                expected: 10,
                complete: 10,
                stats_equal_counters: true,
                ..HistoryLedger::default()
            }),
            ..Ledger::default()
        }
    }

    #[test]
    fn a_clean_run_has_no_violation() {
        assert_eq!(clean().violations(), Vec::<String>::new());
        let without_history = Ledger {
            history: None,
            ..clean()
        };
        assert_eq!(without_history.violations(), Vec::<String>::new());
    }

    fn history(l: &mut Ledger) -> &mut HistoryLedger {
        l.history.as_mut().expect("clean has a history")
    }

    /// Each rule broken alone is named alone, with its figures.
    #[test]
    fn each_invariant_is_named_when_it_alone_breaks() {
        type Break = fn(&mut Ledger);
        let rules: [(&str, Break, &str); 10] = [
            ("lost", |l| l.lost = 3, "3 orders lost"),
            ("duplicated", |l| l.duplicated = 2, "2 effects duplicated"),
            (
                "mismatched",
                |l| l.mismatched = 1,
                "1 order records name another sku or qty",
            ),
            ("parked", |l| l.parked = 4, "4 orders parked"),
            (
                "stock exact",
                |l| l.stock_actual = 6,
                "stock is 6 but initial stock minus reserved units is 5",
            ),
            (
                "stock never negative",
                |l| l.stock_min = -1,
                "stock went below zero (-1)",
            ),
            (
                "history complete",
                |l| history(l).missing = 2,
                "2 orders missing from the history",
            ),
            (
                "history agrees",
                |l| history(l).mismatched = 1,
                "1 orders with another story or other events in the history",
            ),
            (
                "history stats",
                |l| {
                    let h = history(l);
                    h.stats_equal_counters = false;
                    h.stats_detail = "orders 9 != accepted 10".into();
                },
                "history /stats differ from the Redis counters: orders 9 != accepted 10",
            ),
            (
                "client retries",
                |l| l.retry_anomalies = 5,
                "5 client retries got an unexpected answer",
            ),
        ];
        for (rule, break_it, expected) in rules {
            let mut ledger = clean();
            break_it(&mut ledger);
            let v = ledger.violations();
            assert_eq!(v.len(), 1, "{rule}: {v:?}");
            assert!(v[0].starts_with(expected), "{rule}: {v:?}");
        }
    }

    #[test]
    fn violations_name_every_broken_invariant() {
        let ok = Ledger {
            stock_expected: 5,
            stock_actual: 5,
            ..Ledger::default()
        };
        assert!(ok.violations().is_empty());
        let bad = Ledger {
            lost: 1,
            duplicated: 2,
            stock_expected: 5,
            stock_actual: 4,
            stock_min: -1,
            ..Ledger::default()
        };
        assert_eq!(bad.violations().len(), 4);
    }
}
