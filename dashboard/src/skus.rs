//! The SKUs the inventory panel shows, found without scanning the keyspace.
//!
//! A `SCAN` for `inventory:*` visits every key, and with every order's records
//! in Redis a full pass costs Redis real time that every other client waits
//! for. So the dashboard keeps a registry of inventory keys instead, filled
//! once by a SCAN when it starts and kept current by Redis itself: a keyspace
//! notification for every *new* key under `inventory:` (class `n`, so stock
//! changes on existing keys send nothing). Whoever writes a new stock key —
//! the load tool, a test, an operator with `redis-cli SET inventory:x 40` — is
//! therefore on the next sample.
//!
//! The dashboard turns those notifications on itself (`CONFIG SET
//! notify-keyspace-events`, adding `K` and `n` to what is set), again after
//! every reconnect (a restarted Redis forgets it). Notifications sent while
//! the subscription was down are lost, so every new subscription is followed
//! by one more SCAN. Where `CONFIG` is not allowed (some managed Redis), it
//! logs why and falls back to a SCAN every `INVENTORY_RESCAN_SECS`. A key whose
//! value is gone is dropped from the registry when a sample finds it missing.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pipeline::config::RedisConfig;
use pipeline::keys::Keys;
use pipeline::shutdown::CancellationToken;
use pipeline::store::Redis;
use redis::AsyncCommands;

/// The keyspace-notification classes the registry needs: `K` (keyspace
/// channel) and `n` (new keys).
const NOTIFY_CLASSES: [char; 2] = ['K', 'n'];

/// The inventory keys known to exist.
pub struct SkuRegistry {
    known: Mutex<BTreeSet<String>>,
    /// A full SCAN is due (at start, after the watch was interrupted).
    stale: AtomicBool,
    /// New keys are being reported by Redis.
    watching: AtomicBool,
    /// Without notifications: how often to SCAN, and when it last ran.
    rescan: Duration,
    last_scan: Mutex<Option<Instant>>,
}

impl SkuRegistry {
    pub fn new(rescan: Duration) -> Arc<Self> {
        Arc::new(Self {
            known: Mutex::new(BTreeSet::new()),
            stale: AtomicBool::new(true),
            watching: AtomicBool::new(false),
            rescan,
            last_scan: Mutex::new(None),
        })
    }

    /// Whether Redis reports new inventory keys (otherwise: periodic SCAN).
    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    /// The inventory keys, sorted; SCANs only when the registry may be
    /// incomplete.
    pub async fn list(&self, redis: &Redis, keys: &Keys) -> anyhow::Result<Vec<String>> {
        let due = self.stale.swap(false, Ordering::SeqCst)
            || (!self.watching()
                && self
                    .last_scan
                    .lock()
                    .expect("not poisoned")
                    .is_none_or(|at| at.elapsed() >= self.rescan));
        if due {
            match scan(redis, keys).await {
                Ok(found) => {
                    *self.last_scan.lock().expect("not poisoned") = Some(Instant::now());
                    // Keys reported while the SCAN ran stay (it may have
                    // passed their slot before they were created).
                    self.known.lock().expect("not poisoned").extend(found);
                }
                Err(e) => {
                    self.stale.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        Ok(self
            .known
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect())
    }

    /// A key a sample found without a value (deleted); a new one under the
    /// same name is reported again.
    pub fn forget(&self, key: &str) {
        self.known.lock().expect("not poisoned").remove(key);
    }

    fn add(&self, key: String) {
        self.known.lock().expect("not poisoned").insert(key);
    }

    /// Keeps the registry current until `shutdown`: subscribes to new-key
    /// notifications for `inventory:*`, re-subscribing (and re-scanning)
    /// after any interruption.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        config: &RedisConfig,
        redis: Redis,
        keys: Keys,
        shutdown: CancellationToken,
    ) {
        let registry = self.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let mut refused_logged = false;
            loop {
                let ended = registry.watch(&config, &redis, &keys, &shutdown).await;
                registry.watching.store(false, Ordering::SeqCst);
                registry.stale.store(true, Ordering::SeqCst);
                let retry = match ended {
                    Ok(()) => return, // shutdown
                    Err(Watch::Refused(e)) => {
                        if !refused_logged {
                            tracing::warn!(error = %e, every = ?registry.rescan, "Redis refused to turn on keyspace notifications; new SKUs are found by SCAN every INVENTORY_RESCAN_SECS instead");
                            refused_logged = true;
                        }
                        registry.rescan
                    }
                    Err(Watch::Lost(e)) => {
                        tracing::warn!(error = %e, "the SKU watch was interrupted; re-subscribing");
                        Duration::from_secs(1)
                    }
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(retry) => {}
                }
            }
        });
    }

    async fn watch(
        &self,
        config: &RedisConfig,
        redis: &Redis,
        keys: &Keys,
        shutdown: &CancellationToken,
    ) -> Result<(), Watch> {
        let lost = |e: &dyn std::fmt::Display| Watch::Lost(e.to_string());
        enable_notifications(redis).await?;
        let client = redis::Client::open(config.url.expose()).map_err(|e| lost(&e))?;
        let db = client.get_connection_info().redis_settings().db();
        let mut pubsub = tokio::time::timeout(config.timeout, client.get_async_pubsub())
            .await
            .map_err(|_| lost(&"no connection within REDIS_TIMEOUT_MS"))?
            .map_err(|e| lost(&e))?;
        let channel_prefix = format!("__keyspace@{db}__:");
        pubsub
            .psubscribe(format!("{channel_prefix}{}", keys.inventory_pattern()))
            .await
            .map_err(|e| lost(&e))?;
        // What was created before the subscription: one SCAN, now.
        self.stale.store(true, Ordering::SeqCst);
        self.watching.store(true, Ordering::SeqCst);
        tracing::info!("watching for new inventory keys (keyspace notifications)");
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                message = messages.next() => {
                    let Some(message) = message else {
                        return Err(lost(&"the subscription connection closed"));
                    };
                    let event: String = message.get_payload().unwrap_or_default();
                    if let Some(key) = message.get_channel_name().strip_prefix(&channel_prefix)
                        && event == "new"
                    {
                        self.add(key.to_owned());
                    }
                }
            }
        }
    }
}

/// Why watching stopped.
enum Watch {
    /// `CONFIG` is not allowed: fall back to periodic SCAN.
    Refused(String),
    /// The connection or subscription broke: try again soon.
    Lost(String),
}

/// Adds `K` and `n` to `notify-keyspace-events`, keeping what is set.
async fn enable_notifications(redis: &Redis) -> Result<(), Watch> {
    let mut conn = redis.connection();
    let current: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut conn)
        .await
        .map_err(|e| classify(&e))?;
    let flags = current.get(1).cloned().unwrap_or_default();
    let missing: String = NOTIFY_CLASSES
        .iter()
        .filter(|c| !flags.contains(**c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(format!("{flags}{missing}"))
        .query_async(&mut conn)
        .await
        .map_err(|e| classify(&e))?;
    Ok(())
}

/// A refusal by the server (an error reply) vs a lost connection.
fn classify(e: &redis::RedisError) -> Watch {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
        Watch::Lost(e.to_string())
    } else {
        Watch::Refused(e.to_string())
    }
}

/// Every `inventory:*` key, by SCAN (the whole keyspace: used sparingly).
async fn scan(redis: &Redis, keys: &Keys) -> anyhow::Result<Vec<String>> {
    let mut conn = redis.connection();
    let iter = conn
        .scan_options::<String>(
            redis::ScanOptions::default()
                .with_pattern(keys.inventory_pattern())
                .with_count(1000),
        )
        .await?;
    let found: Vec<String> = iter.filter_map(|k| async move { k.ok() }).collect().await;
    metrics::counter!("dashboard_inventory_scans_total").increment(1);
    Ok(found)
}
