//! order-history: the durable, queryable record of every order.
//!
//! Consumes the `orders.events` stream (placed, created, rejected, parked,
//! notified) into PostgreSQL: one row per event, one row per order with its
//! current status (forward only), and the stream offset applied so far, all
//! written in one transaction per batch. Runs as several replicas; one holds
//! a PostgreSQL advisory lock and applies, the others stand by and serve the
//! read API. Once an order is final and recorded, its Redis records expire
//! after `ORDER_RETENTION_SECS`. See `ARCHITECTURE.md`.
//!
//! Depends on `pipeline` only: no other service crate (it reads the event
//! stream and serves HTTP).

pub mod api;
pub mod apply;
pub mod audit;
pub mod config;
pub mod db;
pub mod replica;

use secrecy::ExposeSecret;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pipeline::service::Base;
use pipeline::shutdown::CancellationToken;

pub use config::HistoryConfig;
pub use replica::{Replica, State};

use crate::db::Database;

/// How often every replica reads the stream's tail for its lag.
const TAIL_EVERY: Duration = Duration::from_secs(2);

/// A replica that is connected, migrated and bound, ready to run.
pub struct History {
    base: Base,
    replica: Replica,
    api: api::Api,
}

impl History {
    pub async fn build(config: HistoryConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let db = Database::new(
            config.database_url.expose_secret(),
            &config.schema,
            config.db_timeout,
        )
        .context("DATABASE_URL / HISTORY_SCHEMA")?;
        let base = Base::start_with(
            "order-history",
            &config.service,
            config.broker(),
            shutdown.clone(),
        )
        .await?;
        replica::describe_metrics();
        migrate_when_up(&db, &shutdown).await?;
        let pool = db.pool(config.pool_size, config.db_timeout)?;
        let state = State::new();
        let replica = Replica {
            name: config.replica.clone(),
            db,
            broker: base.broker.clone(),
            redis: base.pool.clone(),
            keys: base.keys.clone(),
            batch: config.batch,
            lock_poll: config.lock_poll,
            retention: config.retention,
            state: state.clone(),
            shutdown,
        };
        let access = clients::Keys::start(
            &config.keys.at(config.database_url.clone()),
            base.shutdown.clone(),
        )?;
        let api = api::Api {
            access,
            pool,
            replica: config.replica,
            state,
            broker: base.broker.clone(),
        };
        Ok(Self { base, replica, api })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.base.local_addr()
    }

    /// This replica's role, checkpoint and counts (tests watch it).
    pub fn state(&self) -> Arc<State> {
        self.replica.state.clone()
    }

    /// Stands by or applies, and serves the API, until shutdown.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let replica = tokio::spawn(self.replica.clone().run());
        let tail = tokio::spawn(self.replica.clone().watch_tail(TAIL_EVERY));
        let router = api::router(self.api);
        self.base
            .serve_then(router, async {
                let _ = replica.await;
                tail.abort();
            })
            .await
    }
}

/// Applies the migrations, waiting (and saying so) while PostgreSQL is down.
async fn migrate_when_up(db: &Database, shutdown: &CancellationToken) -> anyhow::Result<()> {
    loop {
        match db.migrate().await {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "cannot migrate the history yet; retrying"
            ),
        }
        tokio::select! {
            () = shutdown.cancelled() => anyhow::bail!("shut down before PostgreSQL answered"),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// What [`rebuild`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub events: u64,
    pub checkpoint: Option<i64>,
}

/// Recreates the read model from the stream's first event: takes the active
/// lock (refusing while a replica holds it), empties the tables and applies
/// the stream up to the tail it found at the start.
pub async fn rebuild(
    config: HistoryConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<Rebuilt> {
    let db = Database::new(
        config.database_url.expose_secret(),
        &config.schema,
        config.db_timeout,
    )
    .context("DATABASE_URL / HISTORY_SCHEMA")?;
    db.migrate().await?;
    let broker = pipeline::amqp::Broker::connect(config.broker(), shutdown.clone()).await?;
    let redis = pipeline::store::connect(&config.service.redis)?;
    let state = State::new();
    let replica = Replica {
        name: format!("{}-rebuild", config.replica),
        db: db.clone(),
        broker: broker.clone(),
        redis,
        keys: pipeline::keys::Keys::new(config.service.redis.key_prefix.clone()),
        batch: config.batch,
        lock_poll: config.lock_poll,
        retention: config.retention,
        state: state.clone(),
        shutdown,
    };
    let client = db.connect().await?;
    if !db.try_lock_active(&client).await? {
        anyhow::bail!(
            "a history replica is active on schema {:?}; stop every order-history replica first \
             (they resume from the rebuilt checkpoint when started again)",
            db.schema()
        );
    }
    // An unreadable tail must not pass for an empty stream: nothing is
    // emptied unless the stream answered.
    let tail = replica
        .probe_tail()
        .await
        .context("reading the tail of orders.events (the history was left as it was)")?;
    client
        .batch_execute(
            "BEGIN;
             TRUNCATE orders, events, unreadable_events;
             DELETE FROM checkpoint;
             COMMIT",
        )
        .await
        .context("emptying the history")?;
    tracing::info!(
        ?tail,
        "history emptied; applying orders.events from its first event"
    );
    if let Some(tail) = tail {
        replica.active(client, Some(tail)).await?;
    }
    broker.close().await;
    Ok(Rebuilt {
        events: state.applied.load(std::sync::atomic::Ordering::Relaxed),
        checkpoint: state.checkpoint(),
    })
}
