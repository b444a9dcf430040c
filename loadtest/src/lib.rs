//! order-pipeline's load and chaos harness.
//!
//! [`run`] seeds inventory, sends orders over HTTP (closed loop at a
//! concurrency, or open loop at a rate) with a share of client retries reusing
//! the same key, waits for the pipeline to drain, then reads Redis and the
//! queues and builds the [`Ledger`] of `reliability.md`: every order accounted
//! for, invariants checked.
//!
//! Depends on the services' libraries only for the shared facts they own
//! (keys, statuses, the history schema); it drives the stack over HTTP and
//! the broker like any client.

pub mod cost;
pub mod ledger;
pub mod load;
pub mod plot;
pub mod probe;
pub mod progress;
pub mod quotes;

pub use ledger::{Ledger, Report};
pub use load::{HistoryTarget, LoadConfig, run};

/// An HTTP client builder that sends `api_key` (a client key, `op_...`) as
/// `Authorization: Bearer` with every request.
pub fn client_builder(api_key: Option<&str>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| anyhow::anyhow!("the API key is not a header value"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().default_headers(headers))
}

/// The client key a run sends, and whose orders the ledger reads.
pub struct RunKey {
    pub key: String,
    pub client: pipeline::domain::ClientId,
    /// Set when this run minted the key: it is revoked at the end.
    minted: Option<(clients::KeysConfig, String)>,
}

impl std::fmt::Debug for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunKey")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl RunKey {
    /// The client that [`RunKey::mint`] makes keys for.
    pub const CLIENT: &str = "loadtest";
    /// Its limits: more than any run sends.
    pub const RATE: u32 = 1_000_000;

    /// `key` as given (`--api-key`); its client is read from the key store
    /// (DATABASE_URL, KEYS_SCHEMA, as the gateway reads them).
    pub async fn given(key: String, database_url: &str) -> anyhow::Result<Self> {
        let config = Self::store_config(database_url)?;
        let key_id = clients::key::PresentedKey::parse(&key)
            .ok_or_else(|| anyhow::anyhow!("--api-key is not a client key (op_<key id>_<secret>)"))?
            .key_id;
        let found = config.store()?.find(&[key_id]).await?;
        let stored = found
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("--api-key names no key in the key store"))?;
        Ok(Self {
            key,
            client: stored.principal.client,
            minted: None,
        })
    }

    /// A fresh key of the client `loadtest` (orders and quotes, limits no
    /// run reaches) in the stack's key store; revoked by [`RunKey::finish`].
    pub async fn mint(database_url: &str) -> anyhow::Result<Self> {
        let config = Self::store_config(database_url)?;
        let mut out = Vec::new();
        clients::KeysCommand::Create {
            client: Self::CLIENT.to_owned(),
            scopes: clients::Scope::CLIENT.to_vec(),
            orders_per_sec: Some(Self::RATE),
            quotes_per_sec: Some(Self::RATE),
        }
        .run(&config, &mut out)
        .await
        .map_err(|e| e.context("could not mint the run's client key (is `make up` running?)"))?;
        let key = String::from_utf8(out)?.trim().to_owned();
        let key_id = clients::key::PresentedKey::parse(&key)
            .expect("a minted key reads back")
            .key_id;
        Ok(Self {
            key,
            client: pipeline::domain::ClientId::parse(Self::CLIENT)?,
            minted: Some((config, key_id)),
        })
    }

    /// `--api-key` if given, else a minted key, in the key store of the
    /// database at `database_url`.
    pub async fn given_or_minted(key: Option<String>, database_url: &str) -> anyhow::Result<Self> {
        match key {
            Some(key) => Self::given(key, database_url).await,
            None => Self::mint(database_url).await,
        }
    }

    /// Revokes a minted key.
    pub async fn finish(self) {
        if let Some((config, key_id)) = self.minted {
            let mut out = Vec::new();
            if let Err(e) = (clients::KeysCommand::Revoke { key_id })
                .run(&config, &mut out)
                .await
            {
                eprintln!("could not revoke the run's key: {e:#}");
            }
        }
    }

    /// Puts this key and its client in `config`.
    pub fn apply(&self, config: &mut LoadConfig) {
        config.api_key = Some(self.key.clone());
        config.client = self.client.clone();
    }

    /// The key store as the gateway reads it (KEYS_SCHEMA), in the
    /// database at `database_url`.
    fn store_config(database_url: &str) -> anyhow::Result<clients::KeysConfig> {
        Ok(clients::KeysConfig {
            database_url: database_url.to_owned().into(),
            ..pipeline::config::from_env::<clients::KeysConfig>()?
        })
    }
}
