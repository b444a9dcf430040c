//! `make bench`: measures the running stack (`make up`) and writes
//! `docs/performance.md` and `bench/e2e.svg`.
//!
//! (a) the broker's raw confirmed-publish rate to a quorum queue,
//! (b) gateway intake at 64 connections (distinct orders, closed loop), with
//!     `order.new` routed to the `orders.events` stream as deployed, and with
//!     that one binding removed for the run (the intake before the stream),
//! (c) end-to-end orders/s for ORDERS orders (default 100,000) with the
//!     ledger, including the order history's checks,
//! (d) peak RSS of each service (VmHWM of the pids in .stack/services/),
//! (e) Redis `used_memory` after each of RETENTION_ROUNDS rounds (default 5)
//!     of 8,000 orders: flat once ORDER_RETENTION_SECS (the stack's) has
//!     passed, growing without retention.

use loadtest::cost::CpuSample;
use std::fmt::Write;
use std::time::Duration;

use lapin::types::FieldTable;
use loadtest::{HistoryTarget, LoadConfig, plot, probe, run};
use pipeline::amqp::Topology;

/// The order history's settings as the stack's replicas read them from the
/// same environment (`DATABASE_URL`, `HISTORY_SCHEMA`, `ORDER_RETENTION_SECS`).
fn stack_history() -> order_history::config::HistoryConfig {
    pipeline::config::from_env().unwrap_or_else(|e| {
        eprintln!("the order history's settings: {e}");
        std::process::exit(2)
    })
}

fn with_history(mut config: LoadConfig) -> LoadConfig {
    use secrecy::ExposeSecret;
    let history = stack_history();
    config.history = Some(HistoryTarget {
        database_url: history.database_url.expose_secret().to_owned(),
        schema: history.schema,
        catch_up_timeout: Duration::from_secs(600),
        check: true,
    });
    config
}

/// Binds or unbinds `order.new` from `orders.direct` to `orders.events`.
async fn route_new_orders_to_stream(amqp: &str, routed: bool) -> anyhow::Result<()> {
    let topology = Topology::new("", 1);
    let conn = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let (queue, exchange) = (topology.events_stream(), topology.orders_exchange());
    let key = pipeline::messages::ROUTE_NEW_ORDER;
    if routed {
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            Default::default(),
            FieldTable::default(),
        )
        .await?;
    } else {
        ch.queue_unbind(
            queue.into(),
            exchange.into(),
            key.into(),
            FieldTable::default(),
        )
        .await?;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

async fn redis_memory(url: &str) -> anyhow::Result<(u64, u64)> {
    let mut c = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await?;
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut c).await?;
    Ok((used, keys))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let orders: u64 = std::env::var("ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let env_or = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // Sizes of the shorter phases (a quick check of the bench itself can
    // lower them; the figures in docs/performance.md use the defaults).
    let intake_orders = env_or("INTAKE_ORDERS", 20_000);
    let quote_requests = env_or("QUOTE_REQUESTS", 20_000);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let amqp = "amqp://guest:guest@127.0.0.1:5672/%2f";

    let processes = loadtest::cost::stack_processes(&root);
    let redis_url = "redis://127.0.0.1:6379";
    eprintln!(
        "(a) raw confirmed publishes to a quorum queue (1 of 3, interleaved with the phases) ..."
    );
    let mut probes = vec![probe::confirmed_publish_rate(amqp, 50_000, 512).await?];
    eprintln!("    {:.0} msg/s", probes[0]);

    // One client key for every phase, minted in the stack's key store.
    let key = {
        use secrecy::ExposeSecret;
        loadtest::RunKey::mint(stack_history().database_url.expose_secret()).await?
    };
    let keyed = |c: LoadConfig| {
        let mut c = with_history(c);
        key.apply(&mut c);
        c
    };
    let gateway = "http://127.0.0.1:8080";
    let mut quotes = Vec::new();
    for strategy in ["all", "fastest"] {
        eprintln!("(q) quotes from three suppliers, strategy {strategy}, 32 in flight ...");
        let q = loadtest::quotes::run(
            gateway,
            Some(key.key.as_str()),
            "mag-safe-phone-case",
            &format!("qty=1&strategy={strategy}"),
            quote_requests,
            32,
        )
        .await?;
        eprintln!(
            "    {:.0} quotes/s, p50 {:.1} ms, p99 {:.1} ms, statuses {:?}, completed_by {:?}",
            q.per_sec, q.latency.p50_ms, q.latency.p99_ms, q.statuses, q.completed_by
        );
        quotes.push((strategy, q));
    }

    eprintln!("(b) gateway intake, 64 connections, orders also routed to the stream ...");
    // Orders finished before the drain ends may already have left Redis
    // (a short ORDER_RETENTION_SECS): the ledger reads them from the history.
    let intake_config = |tag: &str| {
        let mut c = keyed(LoadConfig::local(intake_orders));
        c.concurrency = 64;
        c.retry_share = 0.0;
        c.run_id = format!("bench-intake-{tag}-{}", std::process::id());
        c
    };
    let cpu_before = CpuSample::take(&processes);
    let intake = run(intake_config("stream")).await?;
    let intake_cpu = cpu_before.per_order(&CpuSample::take(&processes), intake.ledger.sent);
    eprintln!("(b) gateway intake without the stream binding ...");
    route_new_orders_to_stream(amqp, false).await?;
    let mut nostream = intake_config("nostream");
    // Its orders have no `placed` event: the history is read, not verified.
    if let Some(h) = nostream.history.as_mut() {
        h.check = false;
    }
    let unrouted = run(nostream).await;
    route_new_orders_to_stream(amqp, true).await?;
    let unrouted = unrouted?;

    eprintln!("(a) raw probe, 2 of 3 ...");
    probes.push(probe::confirmed_publish_rate(amqp, 50_000, 512).await?);
    eprintln!("(c) end to end, {orders} orders ...");
    // The services' own /metrics: the gateway, the processor, the notifier.
    let service_metrics = [
        "http://127.0.0.1:8080/metrics",
        "http://127.0.0.1:9101/metrics",
        "http://127.0.0.1:9102/metrics",
    ];
    let broker_before = loadtest::cost::broker_operations(&service_metrics).await;
    let redis_before = loadtest::cost::redis_commands(redis_url).await?;
    let cpu_before = CpuSample::take(&processes);
    let mut e2e = keyed(LoadConfig::local(orders));
    e2e.concurrency = 64;
    e2e.drain_timeout = Duration::from_secs(1800);
    e2e.run_id = format!("bench-e2e-{}", std::process::id());
    let e2e = run(e2e).await?;
    let e2e_cpu = cpu_before.per_order(&CpuSample::take(&processes), e2e.ledger.sent);
    let e2e_redis = loadtest::cost::commands_per_order(
        &redis_before,
        &loadtest::cost::redis_commands(redis_url).await?,
        e2e.ledger.sent,
    );
    let broker_after = loadtest::cost::broker_operations(&service_metrics).await;
    let per = |n: f64| n / e2e.ledger.sent.max(1) as f64;
    let ops = broker_after - broker_before;
    let (publishes_per_order, settled_per_order, frames_per_order) =
        (per(ops.publishes), per(ops.settled), per(ops.settle_frames));
    println!("{e2e}");
    // Open loop at fixed shares of the measured capacity, latency from each
    // order's scheduled send time.
    let open_secs = env_or("OPEN_LOOP_SECS", 30);
    let mut open_loop = Vec::new();
    for share in [0.25, 0.50, 0.75] {
        let rate = (e2e.end_to_end_per_sec * share).max(1.0);
        eprintln!(
            "(o) open loop at {:.0} % of capacity: {rate:.0} orders/s for {open_secs} s ...",
            share * 100.0
        );
        let mut c = keyed(LoadConfig::local((rate * open_secs as f64) as u64));
        c.rate = Some(rate);
        c.concurrency = 2_048;
        c.retry_share = 0.0;
        c.progress = false;
        c.run_id = format!(
            "bench-open-{}-{}",
            (share * 100.0) as u32,
            std::process::id()
        );
        let r = run(c).await?;
        if !r.ok() {
            eprintln!("{r}");
            anyhow::bail!("the open-loop run at {share} broke an invariant");
        }
        open_loop.push((share, rate, r));
    }
    eprintln!("(a) raw probe, 3 of 3 ...");
    probes.push(probe::confirmed_publish_rate(amqp, 50_000, 512).await?);
    let (raw, raw_spread) = loadtest::cost::median_spread(&probes);

    let rounds: u64 = std::env::var("RETENTION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut memory = vec![("before".to_owned(), redis_memory(redis_url).await?)];
    for round in 1..=rounds {
        eprintln!("(e) Redis memory, round {round} of {rounds} (8,000 orders) ...");
        let mut c = keyed(LoadConfig::local(8_000));
        c.run_id = format!("bench-retention-{round}-{}", std::process::id());
        c.progress = false;
        let r = run(c).await?;
        if !r.ok() {
            eprintln!("{r}");
            anyhow::bail!("round {round} broke an invariant");
        }
        memory.push((
            format!("after round {round} ({} orders)", round * 8_000),
            redis_memory(redis_url).await?,
        ));
    }

    let rss: Vec<(String, Option<u64>)> = [
        "api-gateway",
        "order-processor",
        "notifier",
        "dashboard",
        "order-history-1",
        "order-history-2",
        "supplier-acme",
        "supplier-globex",
        "supplier-initech",
    ]
    .iter()
    .map(|s| (s.to_string(), peak_rss_kib(&root, s)))
    .collect();

    let svg_path = root.join("bench/e2e.svg");
    std::fs::write(
        &svg_path,
        plot::svg(
            &format!("end to end, {orders} orders, 64 clients"),
            &e2e.samples,
        ),
    )?;

    let mut table = String::new();
    let _ = writeln!(table, "| measurement | figure | vs (a) |\n|---|---|---|");
    let _ = writeln!(
        table,
        "| (a) broker: confirmed publishes to a 3-replica quorum queue, 512 in flight (median of 3 runs interleaved with the phases; spread {raw_spread:.0}: {}) | {raw:.0} msg/s | 1.00 |",
        probes
            .iter()
            .map(|p| format!("{p:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let _ = writeln!(
        table,
        "| (b) gateway intake, 64 connections (orders also routed to `orders.events`) | {:.0} orders/s (p50 {:.1} ms, p99 {:.1} ms) | {:.2} |",
        intake.accepted_per_sec,
        intake.latency.p50_ms,
        intake.latency.p99_ms,
        intake.accepted_per_sec / raw
    );
    let _ = writeln!(
        table,
        "| (b') the same without the stream binding (the intake before the stream) | {:.0} orders/s (p50 {:.1} ms, p99 {:.1} ms) | {:.2} |",
        unrouted.accepted_per_sec,
        unrouted.latency.p50_ms,
        unrouted.latency.p99_ms,
        unrouted.accepted_per_sec / raw
    );
    let _ = writeln!(
        table,
        "| (c) end to end, {orders} orders, 64 clients | {:.0} orders/s through the pipeline; {:.0} accepted/s (p50 {:.1} ms, p99 {:.1} ms) | {:.2} |",
        e2e.end_to_end_per_sec,
        e2e.accepted_per_sec,
        e2e.latency.p50_ms,
        e2e.latency.p99_ms,
        e2e.end_to_end_per_sec / raw
    );
    for (share, rate, r) in &open_loop {
        let _ = writeln!(
            table,
            "| (o) open loop at {:.0} % of (c): {rate:.0} orders/s offered for {}s; latency from each order's scheduled send time | p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms ({:.0} accepted/s) | |",
            share * 100.0,
            std::env::var("OPEN_LOOP_SECS").unwrap_or_else(|_| "30".into()),
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.latency.p999_ms,
            r.accepted_per_sec
        );
    }
    for (strategy, q) in &quotes {
        let outcomes: Vec<String> = q
            .statuses
            .iter()
            .map(|(s, n)| format!("{n} × {s}"))
            .chain(
                q.completed_by
                    .iter()
                    .map(|(b, n)| format!("{n} completed by {b}")),
            )
            .collect();
        let _ = writeln!(
            table,
            "| (q) quotes: `GET /quotes/{{sku}}?strategy={strategy}`, three suppliers, {} in flight, {} requests | {:.0} quotes/s (p50 {:.1} ms, p99 {:.1} ms); {} | |",
            q.in_flight,
            q.requests,
            q.per_sec,
            q.latency.p50_ms,
            q.latency.p99_ms,
            outcomes.join(", ")
        );
    }
    for (svc, kib) in &rss {
        let figure = kib.map_or("not running".to_owned(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        });
        let _ = writeln!(table, "| (d) peak RSS, {svc} | {figure} | |");
    }
    let mut retention = String::new();
    let _ = writeln!(
        retention,
        "| moment | Redis used_memory | keys |\n|---|---|---|"
    );
    for (when, (used, keys)) in &memory {
        let _ = writeln!(
            retention,
            "| {when} | {:.1} MiB | {keys} |",
            *used as f64 / 1024.0 / 1024.0
        );
    }
    let mut cost = String::new();
    let _ = writeln!(
        cost,
        "| process | (b) intake, CPU ms per order | (c) end to end, CPU ms per order |\n|---|---|---|"
    );
    let names: std::collections::BTreeSet<&String> =
        intake_cpu.keys().chain(e2e_cpu.keys()).collect();
    for name in names {
        let cell = |m: &std::collections::BTreeMap<String, f64>| {
            m.get(name).map_or("—".to_owned(), |v| format!("{v:.3}"))
        };
        let _ = writeln!(
            cost,
            "| {name} | {} | {} |",
            cell(&intake_cpu),
            cell(&e2e_cpu)
        );
    }
    let (intake_total, e2e_total) = (
        intake_cpu.values().sum::<f64>(),
        e2e_cpu.values().sum::<f64>(),
    );
    let _ = writeln!(
        cost,
        "| **total** | **{intake_total:.3}** | **{e2e_total:.3}** |"
    );
    let redis_calls: f64 = e2e_redis.iter().map(|(_, n)| n).sum();
    let _ = writeln!(
        cost,
        "\nRedis commands per order in (c): {redis_calls:.2} in all — {}.\n",
        e2e_redis
            .iter()
            .take(12)
            .map(|(c, n)| format!("`{c}` {n:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        cost,
        "Broker operations per order in (c), as the gateway, processor and notifier count them: {publishes_per_order:.2} publishes (each waits for its confirm) and {settled_per_order:.2} deliveries settled with {frames_per_order:.2} ack/nack/reject frames (one `multiple` ack covers a batch).\n"
    );
    let retention_secs = stack_history().retention.as_secs();
    println!("\n{table}\n{retention}");
    println!(
        "ledger of (c): {}",
        if e2e.ok() {
            "all invariants hold"
        } else {
            "INVARIANTS VIOLATED"
        }
    );

    let machine = machine();
    let doc = format!(
        "# Benchmarks\n\nProduced by `make bench` (`cargo run --release -p loadtest --bin bench`) on the running local stack (`make up`: 3 RabbitMQ nodes, Redis with AOF, the services and three suppliers, release builds), with the load generator on the same machine.\n\n{machine}\n## Results\n\n{table}\nRatios are against (a), the broker's own ceiling for confirmed, replicated writes on this machine: every order costs at least one such publish at the gateway and one at the processor, plus Redis scripts, HTTP and acks, all sharing the same 2 cores.\n\n## Cost per order\n\nCPU time of every process of the stack from `/proc/<pid>/stat` (user + system) before and after the phase, divided by its orders; Redis commands from `INFO commandstats` (which counts the commands run inside Lua scripts too; `evalsha` is the number of script calls). The load generator shares the machine.\n\n{cost}\n![throughput and p99 latency over the end-to-end run](../bench/e2e.svg)\n\n## Ledger of the end-to-end run\n\n```text\n{e2e}\n```\n\n## Redis memory while orders keep flowing\n\n(e) {rounds} rounds of 8,000 orders after (c), the stack's order-history replicas running with `ORDER_RETENTION_SECS={retention_secs}` (as `make bench` saw it in its environment; start the stack with the same value). A finished order's records expire that long after the history recorded it, so `used_memory` stops growing once the retention has passed.\n\n{retention}\n",
    );
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let provenance = loadtest::cost::provenance(&root.join(".stack"));
    // Every run is kept: appended, never rewritten.
    let runs_path = root.join("bench/runs.md");
    if !runs_path.exists() {
        std::fs::write(
            &runs_path,
            "# Bench runs\n\nOne line per `make bench`, appended, never rewritten (docs/performance.md shows the latest in full).\n\n| date (UTC) | commit | raw probe (median, spread) | orders (c) | end to end | e2e / probe | CPU ms per order (c) | Redis commands per order (c) | ran with |\n|---|---|---|---|---|---|---|---|---|\n",
        )?;
    }
    let line = format!(
        "| {date} | {commit} | {raw:.0} msg/s ({raw_spread:.0}) | {} | {:.0} orders/s | {:.3} | {e2e_total:.3} | {redis_calls:.2} | {provenance} |\n",
        e2e.ledger.sent,
        e2e.end_to_end_per_sec,
        e2e.end_to_end_per_sec / raw
    );
    let mut runs = std::fs::read_to_string(&runs_path)?;
    runs.push_str(&line);
    std::fs::write(&runs_path, runs)?;
    let json = serde_json::json!({
        "date": date,
        "commit": commit,
        "raw_probe_msg_per_sec": probes,
        "raw_probe_median": raw,
        "intake_orders_per_sec": intake.accepted_per_sec,
        "end_to_end_orders_per_sec": e2e.end_to_end_per_sec,
        "end_to_end_vs_probe": e2e.end_to_end_per_sec / raw,
        "cpu_ms_per_order_intake": intake_cpu,
        "cpu_ms_per_order_end_to_end": e2e_cpu,
        "broker_publishes_per_order_end_to_end": publishes_per_order,
        "deliveries_settled_per_order_end_to_end": settled_per_order,
        "settle_frames_per_order_end_to_end": frames_per_order,
        "provenance": provenance,
        "redis_commands_per_order_end_to_end": e2e_redis.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "open_loop": open_loop.iter().map(|(share, rate, r)| serde_json::json!({
            "share_of_capacity": share, "offered_per_sec": rate,
            "p50_ms": r.latency.p50_ms, "p99_ms": r.latency.p99_ms, "p999_ms": r.latency.p999_ms,
        })).collect::<Vec<_>>(),
        "quotes": quotes.iter().map(|(s, q)| serde_json::json!({
            "strategy": s, "per_sec": q.per_sec, "p50_ms": q.latency.p50_ms, "p99_ms": q.latency.p99_ms,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        root.join("bench/last-run.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let doc = doc + &std::fs::read_to_string(root.join("bench/NOTES.md")).unwrap_or_default();
    std::fs::write(root.join("docs/performance.md"), doc)?;
    eprintln!(
        "wrote docs/performance.md, {}, bench/runs.md (appended) and bench/last-run.json",
        svg_path.display()
    );
    key.finish().await;
    if !e2e.ok() || !intake.ok() || !unrouted.ok() || quotes.iter().any(|(_, q)| !q.ok()) {
        std::process::exit(1);
    }
    Ok(())
}

fn peak_rss_kib(root: &std::path::Path, service: &str) -> Option<u64> {
    let pid = std::fs::read_to_string(root.join(format!(".stack/services/{service}.pid"))).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    format!(
        "## Machine\n\n- CPU: {cpu}, {cores} cores\n- Memory: {:.1} GiB\n- Kernel: {}\n- OS: {}\n- RabbitMQ {}, Redis {}\n- {}\n- Date: {}\n",
        mem as f64 / 1024.0 / 1024.0,
        run("uname", &["-r"]),
        run("sh", &["-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        run(
            "sh",
            &["-c", "dpkg-query -W -f='${Version}' rabbitmq-server"]
        ),
        run(
            "sh",
            &["-c", "redis-server --version | cut -d' ' -f3 | cut -d= -f2"]
        ),
        run("rustc", &["--version"]),
        run("date", &["-u", "+%Y-%m-%d"]),
    )
}
