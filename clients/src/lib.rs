//! Who is calling: client keys (`op_<key id>_<secret>`, only the secret's
//! SHA-256 stored, in the `api_keys` table this crate owns), their scopes and
//! limits, the cache every gateway checks them against ([`Keys`]), the HTTP
//! guard ([`require`]) and the `keys` operator commands. Must not depend on
//! any service crate.

mod guard;
pub mod key;
pub mod limit;
mod scope;
mod store;

use std::io::Write;
use std::time::Duration;

use pipeline::config::{between, secret};
use secrecy::{ExposeSecret, SecretString};

pub use guard::{Denied, Keys, require, require_operator};
pub use limit::{DefaultRates, Limiter, Route, limit};
pub use scope::{Principal, Scope};
pub use store::{KeyListing, KeySpec, KeyStore, StoredKey};

/// Where the keys are and how fresh each gateway keeps them.
#[derive(Debug, Clone, clap::Args)]
pub struct KeysConfig {
    /// The PostgreSQL database holding the client keys
    /// (`postgres://user:password@host:port/db`).
    #[arg(id = "DATABASE_URL", long = "database-url", env = "DATABASE_URL", default_value = pgdb::DEFAULT_DATABASE_URL,
          value_parser = secret(pgdb::database_url), hide_env_values = true)]
    pub database_url: SecretString,
    /// Where in it, and how fresh each process keeps the keys it saw.
    #[command(flatten)]
    pub cache: KeyCache,
}

/// The key store's schema and how a process caches keys (a service that
/// has its own DATABASE_URL, such as the history, takes only these).
#[derive(Debug, Clone, clap::Args)]
pub struct KeyCache {
    /// The PostgreSQL schema of the `api_keys` table.
    #[arg(
        id = "KEYS_SCHEMA",
        long = "keys-schema",
        env = "KEYS_SCHEMA",
        default_value = "clients"
    )]
    pub schema: String,
    /// How often a gateway re-reads the keys it has seen: a revoked key
    /// stops working within this (plus one query).
    #[arg(id = "KEYS_REFRESH_MS", long = "keys-refresh-ms", env = "KEYS_REFRESH_MS", default_value = "2000", value_parser = refresh_millis)]
    pub refresh: Duration,
    /// How long a key seen before keeps working while PostgreSQL does not
    /// answer.
    #[arg(id = "KEYS_GRACE_SECS", long = "keys-grace-secs", env = "KEYS_GRACE_SECS", default_value = "600", value_parser = grace_secs)]
    pub grace: Duration,
}

impl KeyCache {
    /// The key store in the database at `database_url`.
    pub fn at(&self, database_url: SecretString) -> KeysConfig {
        KeysConfig {
            database_url,
            cache: self.clone(),
        }
    }
}

fn refresh_millis(raw: &str) -> Result<Duration, String> {
    between::<u64>(100, 4_000)(raw).map(Duration::from_millis)
}

fn grace_secs(raw: &str) -> Result<Duration, String> {
    between::<u64>(1, 86_400)(raw).map(Duration::from_secs)
}

impl KeysConfig {
    pub fn store(&self) -> anyhow::Result<KeyStore> {
        KeyStore::new(
            self.database_url.expose_secret(),
            &self.cache.schema,
            Duration::from_secs(3),
        )
    }
}

/// `keys create|list|revoke`: the operator's commands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a key for a client and print it, alone on stdout, once: it is
    /// never shown again (only its hash is kept).
    Create {
        /// The client the key belongs to: 1-64 of a-z A-Z 0-9 . _ -
        #[arg(long, value_parser = client_name)]
        client: String,
        /// What the key may do (repeat for several); by default
        /// orders:write, orders:read and quotes:read.
        #[arg(long = "scope", value_enum)]
        scopes: Vec<Scope>,
        /// This key's limit on POST /orders per second (default: the
        /// gateway's).
        #[arg(long, value_parser = pipeline::config::at_least::<u32>(1))]
        orders_per_sec: Option<u32>,
        /// This key's limit on GET /quotes per second (default: the
        /// gateway's).
        #[arg(long, value_parser = pipeline::config::at_least::<u32>(1))]
        quotes_per_sec: Option<u32>,
    },
    /// Every key: id, client, scopes, limits, created, revoked (never a
    /// secret).
    List,
    /// Revoke a key by its id (the part after `op_`): every gateway refuses
    /// it within KEYS_REFRESH_MS.
    Revoke { key_id: String },
}

/// A client's name ([`pipeline::domain::ClientId`]): 1-64 of
/// `a-z A-Z 0-9 . _ -`, not `.` or `..`.
pub fn client_name(raw: &str) -> Result<String, String> {
    pipeline::domain::ClientId::parse(raw)
        .map(String::from)
        .map_err(|e| e.reason)
}

impl KeysCommand {
    /// Runs the command against `config`'s store, writing to `out`.
    pub async fn run(self, config: &KeysConfig, out: &mut impl Write) -> anyhow::Result<()> {
        let store = config.store()?;
        store.migrate().await?;
        match self {
            Self::Create {
                client,
                mut scopes,
                orders_per_sec,
                quotes_per_sec,
            } => {
                if scopes.is_empty() {
                    scopes = Scope::CLIENT.to_vec();
                }
                scopes.sort();
                scopes.dedup();
                let key = store
                    .create(&KeySpec {
                        client,
                        scopes,
                        orders_per_sec,
                        quotes_per_sec,
                    })
                    .await?;
                writeln!(out, "{}", key.key.expose_secret())?;
            }
            Self::List => {
                writeln!(
                    out,
                    "{:<12}  {:<20}  {:<40}  {:>8}  {:>8}  {:<20}  revoked",
                    "key id", "client", "scopes", "orders/s", "quotes/s", "created"
                )?;
                let limit = |n: Option<u32>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
                for k in store.list().await? {
                    let p = &k.principal;
                    let scopes: Vec<&str> = p.scopes.iter().map(|s| s.as_str()).collect();
                    writeln!(
                        out,
                        "{:<12}  {:<20}  {:<40}  {:>8}  {:>8}  {:<20}  {}",
                        p.key_id,
                        p.client,
                        scopes.join(","),
                        limit(p.orders_per_sec),
                        limit(p.quotes_per_sec),
                        k.created_at,
                        k.revoked_at.as_deref().unwrap_or("-"),
                    )?;
                }
            }
            Self::Revoke { key_id } => {
                if !store.revoke(&key_id).await? {
                    anyhow::bail!("no key {key_id:?} (see `keys list`)");
                }
                writeln!(out, "revoked {key_id}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_are_plain() {
        for ok in ["demo", "shop-1", "a.b_c"] {
            assert_eq!(client_name(ok).as_deref(), Ok(ok));
        }
        for bad in ["", ".", "..", "a b", "a/b", "a:b", "é", &"x".repeat(65)] {
            assert!(client_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_refresh_bound_keeps_revocation_under_five_seconds() {
        assert!(refresh_millis("4000").is_ok());
        assert!(refresh_millis("5000").is_err());
        assert!(refresh_millis("0").is_err());
    }
}
