//! PostgreSQL: connections into the history's schema, the read pool, the
//! embedded migrations and the advisory lock that makes one replica active.
//!
//! Every connection sets `search_path` to the configured schema
//! (`HISTORY_SCHEMA`), so several histories (tests, tenants) share one
//! database without sharing a row.

use std::time::Duration;

use anyhow::Context;
use deadpool::managed::{self, Metrics, RecycleResult};
use tokio_postgres::{Client, NoTls};

/// The migrations, in order; each runs once, in its own transaction.
const MIGRATIONS: &[(i32, &str, &str)] =
    &[(1, "initial", include_str!("../migrations/0001_initial.sql"))];

/// The first half of every advisory lock key of this service (the second is
/// the schema's hash): "active replica" and "migrating".
const ACTIVE_LOCK: i32 = 0x6869_7374; // "hist"
const MIGRATE_LOCK: i32 = 0x6d69_6772; // "migr"

/// Where the history lives and how to reach it.
#[derive(Debug, Clone)]
pub struct Database {
    config: tokio_postgres::Config,
    schema: String,
}

impl Database {
    /// `url`: a `postgres://` URL; `schema`: `[a-z_][a-z0-9_]*`, at most 63.
    pub fn new(url: &str, schema: &str, connect_timeout: Duration) -> anyhow::Result<Self> {
        check_schema(schema)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("not a PostgreSQL URL: {e}"))?;
        // Keepalives on both ends: a dead host's session (and the active
        // lock it holds) ends within seconds, not the OS default of hours;
        // no statement waits forever on a dead socket.
        config
            .options(format!(
                "-c search_path={schema} -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 \
                 -c tcp_keepalives_count=3 -c statement_timeout=30000"
            ))
            .connect_timeout(connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .application_name("order-history");
        Ok(Self {
            config,
            schema: schema.to_owned(),
        })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A fresh session of its own (the active replica's, which holds the lock).
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .context("connecting to PostgreSQL (DATABASE_URL)")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %pipeline::telemetry::chain(&e), "PostgreSQL session ended");
            }
        });
        Ok(client)
    }

    /// A pool for the HTTP reads (any replica serves them).
    pub fn pool(&self, size: usize, timeout: Duration) -> anyhow::Result<Pool> {
        Ok(managed::Pool::builder(Manager { db: self.clone() })
            .max_size(size)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()?)
    }

    /// Creates the schema and applies every migration not applied yet; safe
    /// when several replicas start at once (they take turns).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let client = self.connect().await?;
        let key = self.schema_key(&client).await?;
        client
            .execute("SELECT pg_advisory_lock($1, $2)", &[&MIGRATE_LOCK, &key])
            .await?;
        let result = self.migrate_locked(&client).await;
        let _ = client
            .execute("SELECT pg_advisory_unlock($1, $2)", &[&MIGRATE_LOCK, &key])
            .await;
        result
    }

    async fn migrate_locked(&self, client: &Client) -> anyhow::Result<()> {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {0};
                 CREATE TABLE IF NOT EXISTS {0}.schema_migrations (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())",
                self.schema
            ))
            .await
            .context("creating the history schema")?;
        for (version, name, sql) in MIGRATIONS {
            let done = client
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .await?
                .is_some();
            if done {
                continue;
            }
            client.batch_execute("BEGIN").await?;
            let applied = async {
                client.batch_execute(sql).await?;
                client
                    .execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        &[version, name],
                    )
                    .await?;
                client.batch_execute("COMMIT").await
            }
            .await;
            if let Err(e) = applied {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e).with_context(|| format!("migration {version} ({name})"));
            }
            tracing::info!(version, name, schema = %self.schema, "migration applied");
        }
        Ok(())
    }

    /// Drops the schema with everything in it (throwaway histories: tests).
    pub async fn drop_schema(&self) -> anyhow::Result<()> {
        let client = self.connect().await?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await?;
        Ok(())
    }

    /// Tries once to become the active replica: `true` when this session
    /// now holds the lock (until it ends).
    pub async fn try_lock_active(&self, client: &Client) -> anyhow::Result<bool> {
        let key = self.schema_key(client).await?;
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&ACTIVE_LOCK, &key])
            .await?;
        Ok(row.get(0))
    }

    async fn schema_key(&self, client: &Client) -> anyhow::Result<i32> {
        let row = client
            .query_one("SELECT hashtext($1)", &[&self.schema])
            .await?;
        Ok(row.get(0))
    }
}

fn check_schema(schema: &str) -> anyhow::Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || schema.len() > 63
        || !schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        anyhow::bail!(
            "HISTORY_SCHEMA {schema:?}: use 1-63 of a-z, 0-9 and _, not starting with a digit"
        );
    }
    Ok(())
}

/// Makes and checks pooled sessions.
pub struct Manager {
    db: Database,
}

impl managed::Manager for Manager {
    type Type = Client;
    type Error = anyhow::Error;

    async fn create(&self) -> anyhow::Result<Client> {
        self.db.connect().await
    }

    async fn recycle(&self, client: &mut Client, _: &Metrics) -> RecycleResult<anyhow::Error> {
        if client.is_closed() {
            Err(managed::RecycleError::message("session closed"))
        } else {
            Ok(())
        }
    }
}

pub type Pool = managed::Pool<Manager>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["order_history", "t_1a2b", "_x"] {
            assert!(check_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "Order", "a-b", "a;drop", &"x".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1);
        }
    }
}
