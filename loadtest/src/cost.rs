//! What a phase of load costs: CPU time per process (from `/proc`) and Redis
//! commands (from `INFO commandstats`), read before and after, so the bench
//! can say how many CPU milliseconds and Redis calls one order takes.
//!
//! The processes are the local stack's (`make up`): every pid file under
//! `.stack/services/`, the RabbitMQ nodes' `.stack/rabbitmq/rabbitN/pid`,
//! Redis's `.stack/redis/redis.pid`, and this process (the load generator).

use std::collections::BTreeMap;
use std::path::Path;

/// Clock ticks per second of `/proc/<pid>/stat` times (`CLK_TCK`; 100 on
/// every Linux this runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU ticks (user + system) per named process at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSample(pub BTreeMap<String, u64>);

/// `utime + stime` from the contents of `/proc/<pid>/stat`. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after
/// its closing parenthesis.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_of(pid: &str) -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?)
}

/// The stack's processes under `root` (the repository) and their pids.
pub fn stack_processes(root: &Path) -> Vec<(String, String)> {
    let stack = root.join(".stack");
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(stack.join("services")) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("pid")
                && let (Some(name), Ok(pid)) = (
                    path.file_stem().and_then(|s| s.to_str()),
                    std::fs::read_to_string(&path),
                )
            {
                found.push((name.to_owned(), pid.trim().to_owned()));
            }
        }
    }
    for node in 1..=3 {
        if let Ok(pid) = std::fs::read_to_string(stack.join(format!("rabbitmq/rabbit{node}/pid"))) {
            found.push((format!("rabbitmq-{node}"), pid.trim().to_owned()));
        }
    }
    if let Ok(pid) = std::fs::read_to_string(stack.join("redis/redis.pid")) {
        found.push(("redis".to_owned(), pid.trim().to_owned()));
    }
    found.push(("load generator".to_owned(), std::process::id().to_string()));
    found.sort();
    found
}

impl CpuSample {
    /// Reads every process's CPU ticks now (a process that is gone is left
    /// out).
    pub fn take(processes: &[(String, String)]) -> Self {
        Self(
            processes
                .iter()
                .filter_map(|(name, pid)| Some((name.clone(), ticks_of(pid)?)))
                .collect(),
        )
    }

    /// CPU milliseconds per order of each process between `self` and
    /// `later`, over `orders` orders.
    pub fn per_order(&self, later: &CpuSample, orders: u64) -> BTreeMap<String, f64> {
        later
            .0
            .iter()
            .filter_map(|(name, after)| {
                let before = self.0.get(name)?;
                let ms = after.saturating_sub(*before) as f64 * 1000.0 / TICKS_PER_SEC;
                Some((name.clone(), ms / orders.max(1) as f64))
            })
            .collect()
    }
}

/// `cmdstat_<command>` → calls, from `INFO commandstats`.
pub fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Redis commands per command name now.
pub async fn redis_commands(url: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    Ok(parse_commandstats(&info))
}

/// Calls per order of each command between two readings (only those that
/// moved), most frequent first.
pub fn commands_per_order(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    orders: u64,
) -> Vec<(String, f64)> {
    let mut moved: Vec<(String, f64)> = after
        .iter()
        .filter_map(|(name, calls)| {
            let delta = calls.saturating_sub(*before.get(name).unwrap_or(&0));
            (delta > 0).then(|| (name.clone(), delta as f64 / orders.max(1) as f64))
        })
        .collect();
    moved.sort_by(|a, b| b.1.total_cmp(&a.1));
    moved
}

/// The sum of every sample of the Prometheus series `name` (any labels) in
/// a `/metrics` text, e.g. `broker_publish_duration_seconds_count`.
pub fn prometheus_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let bare = series.split('{').next()?;
            (bare == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Broker operations the services counted, summed over their `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct BrokerOps {
    /// Publishes, each awaiting its confirm (`broker_publish_duration_seconds_count`).
    pub publishes: f64,
    /// Deliveries settled by the workers (`deliveries_settled_total`).
    pub settled: f64,
    /// `basic.ack`/`nack`/`reject` frames those settlements took
    /// (`settle_frames_total`; one `multiple` ack covers many deliveries).
    pub settle_frames: f64,
}

impl std::ops::Sub for BrokerOps {
    type Output = Self;
    fn sub(self, before: Self) -> Self {
        Self {
            publishes: self.publishes - before.publishes,
            settled: self.settled - before.settled,
            settle_frames: self.settle_frames - before.settle_frames,
        }
    }
}

pub async fn broker_operations(urls: &[&str]) -> BrokerOps {
    let mut ops = BrokerOps::default();
    for url in urls {
        let Ok(res) = reqwest::get(*url).await else {
            continue;
        };
        let Ok(text) = res.text().await else {
            continue;
        };
        ops.publishes += prometheus_sum(&text, "broker_publish_duration_seconds_count");
        ops.settled += prometheus_sum(&text, "deliveries_settled_total");
        ops.settle_frames += prometheus_sum(&text, "settle_frames_total");
    }
    ops
}

/// What a run ran with, read from the running processes: the RabbitMQ
/// nodes' scheduler flags (from their command line) and the workers'
/// `PREFETCH`/`WORKER_BATCH` (from their environment; unset = default).
pub fn provenance(stack_dir: &std::path::Path) -> String {
    let mut parts = Vec::new();
    let rabbit = std::fs::read_to_string(stack_dir.join("rabbitmq/rabbit1/pid"))
        .ok()
        .and_then(|pid| {
            let pid = pid.trim().to_owned();
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            // The emulator's own flags (`erl +S 1:1` reaches beam.smp as
            // `-S 1:1`), before the first `--`; repeated ones once.
            let emulator: Vec<&String> = args.iter().take_while(|a| a.as_str() != "--").collect();
            let mut flags: Vec<String> = Vec::new();
            for (i, a) in emulator.iter().enumerate() {
                if matches!(a.as_str(), "-stbt" | "-sbt" | "-S" | "-SP" | "-sbwt" | "-A")
                    && let Some(v) = emulator.get(i + 1)
                {
                    let flag = format!("+{} {v}", &a[1..]);
                    if !flags.contains(&flag) {
                        flags.push(flag);
                    }
                }
            }
            Some(flags.join(" "))
        });
    parts.push(format!("broker {}", rabbit.unwrap_or_else(|| "?".into())));
    for (service, defaults) in [
        ("order-processor", ("128", "32")),
        ("notifier", ("64", "32")),
    ] {
        let env = std::fs::read_to_string(stack_dir.join(format!("services/{service}.pid")))
            .ok()
            .and_then(|pid| std::fs::read(format!("/proc/{}/environ", pid.trim())).ok())
            .unwrap_or_default();
        let var = |name: &str, default: &str| {
            env.split(|b| *b == 0)
                .filter_map(|kv| {
                    std::str::from_utf8(kv)
                        .ok()?
                        .strip_prefix(name)?
                        .strip_prefix('=')
                        .map(str::to_owned)
                })
                .next()
                .unwrap_or_else(|| default.to_owned())
        };
        parts.push(format!(
            "{service} prefetch {} batch {}",
            var("PREFETCH", defaults.0),
            var("WORKER_BATCH", defaults.1)
        ));
    }
    parts.push("Redis: one multiplexed connection per service".into());
    parts.join("; ")
}

/// Median and spread (max − min) of a few measurements.
pub fn median_spread(values: &[f64]) -> (f64, f64) {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    (median, v[v.len() - 1] - v[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_survive_odd_process_names() {
        let stat = "4242 (beam.smp (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 30 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_stat_ticks("garbage"), None);
        // This process has a readable stat.
        assert!(ticks_of(&std::process::id().to_string()).is_some());
    }

    #[test]
    fn commandstats_are_read_per_command() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=300,usec=900,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\ncmdstat_ping:calls=150,usec=75,usec_per_call=0.50\r\n";
        let before = parse_commandstats(info);
        assert_eq!(before["evalsha"], 300);
        assert_eq!(before["ping"], 150);
        let mut after = before.clone();
        after.insert("evalsha".into(), 500);
        after.insert("hget".into(), 10);
        let per = commands_per_order(&before, &after, 100);
        assert_eq!(per, vec![("evalsha".into(), 2.0), ("hget".into(), 0.1)]);
    }

    #[test]
    fn prometheus_series_are_summed_over_labels() {
        let text = "# HELP x\n# TYPE x counter\nbroker_publish_duration_seconds_count{outcome=\"confirmed\"} 40\nbroker_publish_duration_seconds_count{outcome=\"timeout\"} 2\nbroker_publish_duration_seconds_sum 1.5\ndeliveries_settled_total{disposition=\"ack\"} 7\n";
        assert_eq!(
            prometheus_sum(text, "broker_publish_duration_seconds_count"),
            42.0
        );
        assert_eq!(prometheus_sum(text, "deliveries_settled_total"), 7.0);
        assert_eq!(prometheus_sum(text, "nothing"), 0.0);
    }

    #[test]
    fn cpu_per_order_and_median() {
        let before = CpuSample([("redis".to_owned(), 100)].into_iter().collect());
        let after = CpuSample([("redis".to_owned(), 300)].into_iter().collect());
        // 200 ticks = 2,000 ms over 1,000 orders.
        assert_eq!(before.per_order(&after, 1_000)["redis"], 2.0);
        assert_eq!(median_spread(&[3.0, 1.0, 2.0]), (2.0, 2.0));
        assert_eq!(median_spread(&[4.0, 1.0]), (2.5, 3.0));
    }
}
