//! PostgreSQL for the services that keep data there (the order history, the
//! client keys): sessions into one schema, a pool of them, and embedded
//! migrations applied once. Owns nothing of any table: each caller brings its
//! migrations. Must not depend on any service crate.
//!
//! Every session sets `search_path` to the configured schema, so several
//! owners (services, tests, tenants) share one database without sharing a
//! row.

use std::time::Duration;

use anyhow::Context;
use deadpool::managed::{self, Metrics, RecycleResult};
use tokio_postgres::{Client, NoTls};

/// The local PostgreSQL of `make up` and `make test` (`DATABASE_URL`'s
/// default wherever a service declares it).
pub const DEFAULT_DATABASE_URL: &str =
    "postgres://order_pipeline:order_pipeline@127.0.0.1:5433/order_pipeline";

/// `DATABASE_URL`'s parser: a `postgres://` URL, kept secret (it holds a
/// password). Use with `pipeline::config::secret`, so a bad value is never
/// echoed.
pub fn database_url(raw: &str) -> Result<secrecy::SecretString, String> {
    let raw = raw.trim();
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        return Err("expected postgres://user:password@host:port/database".into());
    }
    Ok(secrecy::SecretString::from(raw.to_owned()))
}

/// One embedded migration: its version (1, 2, ... in order), its name and
/// its SQL. Each runs once, in its own transaction.
pub type Migration = (i32, &'static str, &'static str);

/// The first half of the advisory lock key that serializes migrations (the
/// second is the schema's hash): "migr".
const MIGRATE_LOCK: i32 = 0x6d69_6772;

/// Where a schema lives and how to reach it.
#[derive(Debug, Clone)]
pub struct Database {
    config: tokio_postgres::Config,
    schema: String,
}

impl Database {
    /// `url`: a `postgres://` URL; `schema`: `[a-z_][a-z0-9_]*`, at most 63;
    /// `application`: the name sessions show in `pg_stat_activity`.
    pub fn new(
        url: &str,
        schema: &str,
        connect_timeout: Duration,
        application: &str,
    ) -> anyhow::Result<Self> {
        check_schema(schema)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("not a PostgreSQL URL: {e}"))?;
        // Keepalives on both ends: a dead host's session (and any lock it
        // holds) ends within seconds, not the OS default of hours; no
        // statement waits forever on a dead socket.
        config
            .options(format!(
                "-c search_path={schema} -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 \
                 -c tcp_keepalives_count=3 -c statement_timeout=30000"
            ))
            .connect_timeout(connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .application_name(application);
        Ok(Self {
            config,
            schema: schema.to_owned(),
        })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A fresh session of its own.
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

    /// A pool of sessions: at most `size`, each wait bounded by `timeout`.
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
    /// when several processes start at once (they take turns).
    pub async fn migrate(&self, migrations: &[Migration]) -> anyhow::Result<()> {
        let client = self.connect().await?;
        let key = self.schema_key(&client).await?;
        client
            .execute("SELECT pg_advisory_lock($1, $2)", &[&MIGRATE_LOCK, &key])
            .await?;
        let result = self.migrate_locked(&client, migrations).await;
        let _ = client
            .execute("SELECT pg_advisory_unlock($1, $2)", &[&MIGRATE_LOCK, &key])
            .await;
        result
    }

    async fn migrate_locked(
        &self,
        client: &Client,
        migrations: &[Migration],
    ) -> anyhow::Result<()> {
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
            .with_context(|| format!("creating the schema {}", self.schema))?;
        for (version, name, sql) in migrations {
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

    /// Drops the schema with everything in it (throwaway schemas: tests).
    pub async fn drop_schema(&self) -> anyhow::Result<()> {
        let client = self.connect().await?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await?;
        Ok(())
    }

    /// The second half of this schema's advisory lock keys (its hash), so
    /// that owners of different schemas never contend for a lock.
    pub async fn schema_key(&self, client: &Client) -> anyhow::Result<i32> {
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
        anyhow::bail!("schema {schema:?}: use 1-63 of a-z, 0-9 and _, not starting with a digit");
    }
    Ok(())
}

/// Makes and checks pooled sessions.
#[derive(Debug)]
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

/// A session taken from a [`Pool`], given back when dropped.
pub type Session = managed::Object<Manager>;

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
}
