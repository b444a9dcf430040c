//! The `api_keys` table: the one owner of client keys in PostgreSQL.

use std::time::Duration;

use anyhow::Context;

use crate::key::NewKey;
use crate::scope::{Principal, Scope};

/// The migrations of the key table, in order.
const MIGRATIONS: &[pgdb::Migration] = &[(
    1,
    "api_keys",
    include_str!("../migrations/0001_api_keys.sql"),
)];

/// A stored key as the cache needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub principal: Principal,
    pub secret_sha256: Vec<u8>,
    pub revoked: bool,
}

/// A key as `keys list` shows it (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyListing {
    pub principal: Principal,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub client: String,
    pub scopes: Vec<Scope>,
    pub orders_per_sec: Option<u32>,
    pub quotes_per_sec: Option<u32>,
}

/// The key table in its schema (`KEYS_SCHEMA`).
#[derive(Debug, Clone)]
pub struct KeyStore {
    db: pgdb::Database,
    pool: pgdb::Pool,
}

impl KeyStore {
    pub fn new(url: &str, schema: &str, timeout: Duration) -> anyhow::Result<Self> {
        let db = pgdb::Database::new(url, schema, timeout, "clients")
            .map_err(|e| anyhow::anyhow!("KEYS_SCHEMA: {e:#}"))?;
        let pool = db.pool(4, timeout)?;
        Ok(Self { db, pool })
    }

    /// Creates the table if needed; safe from many processes at once.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.db.migrate(MIGRATIONS).await
    }

    /// Drops the schema (throwaway stores: tests).
    pub async fn drop_schema(&self) -> anyhow::Result<()> {
        self.db.drop_schema().await
    }

    async fn session(&self) -> anyhow::Result<pgdb::Session> {
        self.pool
            .get()
            .await
            .map_err(|e| anyhow::anyhow!("PostgreSQL (DATABASE_URL): {e}"))
    }

    /// Stores a new key and returns it (the only time its secret exists).
    pub async fn create(&self, spec: &KeySpec) -> anyhow::Result<NewKey> {
        let key = NewKey::generate();
        let scopes: Vec<&str> = spec.scopes.iter().map(|s| s.as_str()).collect();
        let limit = |n: Option<u32>| n.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        self.session()
            .await?
            .execute(
                "INSERT INTO api_keys (key_id, secret_sha256, client, scopes, orders_per_sec, quotes_per_sec)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &key.key_id,
                    &key.secret_hash.as_slice(),
                    &spec.client,
                    &scopes,
                    &limit(spec.orders_per_sec),
                    &limit(spec.quotes_per_sec),
                ],
            )
            .await
            .context("storing the key")?;
        Ok(key)
    }

    /// The keys named, as stored now (absent ids are not in the answer).
    pub async fn find(&self, key_ids: &[String]) -> anyhow::Result<Vec<StoredKey>> {
        let rows = self
            .session()
            .await?
            .query(
                "SELECT key_id, client, scopes, orders_per_sec, quotes_per_sec, secret_sha256,
                        revoked_at IS NOT NULL
                   FROM api_keys WHERE key_id = ANY($1)",
                &[&key_ids],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredKey {
                    principal: principal(row)?,
                    secret_sha256: row.get(5),
                    revoked: row.get(6),
                })
            })
            .collect()
    }

    /// Every key, newest first, without secrets.
    pub async fn list(&self) -> anyhow::Result<Vec<KeyListing>> {
        let rows = self
            .session()
            .await?
            .query(
                "SELECT key_id, client, scopes, orders_per_sec, quotes_per_sec,
                        to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                        to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                   FROM api_keys ORDER BY created_at DESC, key_id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(KeyListing {
                    principal: principal(row)?,
                    created_at: row.get(5),
                    revoked_at: row.get(6),
                })
            })
            .collect()
    }

    /// Revokes a key; `false` when there is no such key. Revoking twice
    /// keeps the first time.
    pub async fn revoke(&self, key_id: &str) -> anyhow::Result<bool> {
        let n = self
            .session()
            .await?
            .execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1",
                &[&key_id],
            )
            .await?;
        Ok(n == 1)
    }
}

fn principal(row: &tokio_postgres::Row) -> anyhow::Result<Principal> {
    let scopes: Vec<String> = row.get(2);
    let limit = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok());
    Ok(Principal {
        key_id: row.get(0),
        client: pipeline::domain::ClientId::parse(row.get(1))?,
        scopes: scopes
            .iter()
            .map(|s| s.parse::<Scope>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?,
        orders_per_sec: limit(row.get(3)),
        quotes_per_sec: limit(row.get(4)),
    })
}
