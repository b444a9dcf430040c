//! PostgreSQL for the history: its schema's migrations and the advisory
//! lock that makes one replica active. Sessions, the pool and the migration
//! runner are [`pgdb`]'s.

use std::ops::Deref;
use std::time::Duration;

use tokio_postgres::Client;

pub use pgdb::{Manager, Pool};

/// The migrations, in order; each runs once, in its own transaction.
const MIGRATIONS: &[pgdb::Migration] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "client", include_str!("../migrations/0002_client.sql")),
];

/// The first half of the active replica's advisory lock key (the second is
/// the schema's hash): "hist".
const ACTIVE_LOCK: i32 = 0x6869_7374;

/// Where the history lives (`DATABASE_URL`, `HISTORY_SCHEMA`); everything
/// of [`pgdb::Database`], plus the history's own migrations and lock.
#[derive(Debug, Clone)]
pub struct Database(pgdb::Database);

impl Deref for Database {
    type Target = pgdb::Database;

    fn deref(&self) -> &pgdb::Database {
        &self.0
    }
}

impl Database {
    /// `url`: a `postgres://` URL; `schema`: `[a-z_][a-z0-9_]*`, at most 63.
    pub fn new(url: &str, schema: &str, connect_timeout: Duration) -> anyhow::Result<Self> {
        pgdb::Database::new(url, schema, connect_timeout, "order-history")
            .map(Self)
            .map_err(|e| anyhow::anyhow!("HISTORY_SCHEMA: {e:#}"))
    }

    /// Creates the schema and applies the history's migrations not applied
    /// yet; safe when several replicas start at once.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.0.migrate(MIGRATIONS).await
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1);
        }
    }
}
