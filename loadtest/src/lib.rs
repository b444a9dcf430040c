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

/// The key `make up` minted for the demo client (`.stack/api-key` under the
/// project root), if there is one.
pub fn stack_api_key() -> Option<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.stack/api-key");
    std::fs::read_to_string(path)
        .ok()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
}
