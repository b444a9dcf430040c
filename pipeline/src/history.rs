//! A client of the order history (`order-history`'s HTTP API), for the
//! services that need an old order once its Redis record has expired: the
//! gateway's `GET /orders/<id>`, the processor's and the notifier's
//! decide-once check for a message whose record is gone, the dashboard's
//! replica panel.
//!
//! `HISTORY_URLS` lists every replica; any of them answers reads (a standby
//! reads the same database), so a call walks the list until one answers.

use std::time::Duration;

use crate::api::{HistoryHealth, HistoryOrder};

use crate::config::millis;
use crate::domain::OrderId;
use crate::order::OrderStatus;

/// The replicas `make up` starts.
pub const DEFAULT_HISTORY_URLS: &str = "http://127.0.0.1:8095,http://127.0.0.1:8096";

/// Where the history is, for the services that ask it.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryClientConfig {
    /// The history replicas' base URLs, comma-separated, tried in order.
    /// Empty or `none`: no history (an order without a Redis record is then
    /// taken as new).
    #[arg(id = "HISTORY_URLS", long = "history-urls", env = "HISTORY_URLS", default_value = DEFAULT_HISTORY_URLS,
          value_parser = parse_history_urls)]
    pub urls: HistoryUrls,
    /// Bounds each call to one replica.
    #[arg(id = "HISTORY_TIMEOUT_MS", long = "history-timeout-ms", env = "HISTORY_TIMEOUT_MS", default_value = "1000", value_parser = millis)]
    pub timeout: Duration,
    /// The key sent to the history's API (an admin key; `make up` gives
    /// every service its internal key). Unset: no key is sent, and a
    /// history that asks for one answers 401.
    #[arg(id = "HISTORY_API_KEY", long = "history-api-key", env = "HISTORY_API_KEY",
          value_parser = crate::config::secret(|raw: &str| Ok::<_, String>(secrecy::SecretString::from(raw.trim().to_owned()))), hide_env_values = true)]
    pub api_key: Option<secrecy::SecretString>,
}

/// The replicas named by `HISTORY_URLS` (none: no history).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryUrls(pub Vec<String>);

impl HistoryClientConfig {
    /// No history.
    pub fn none() -> Self {
        Self::at(Vec::new())
    }

    /// These replicas, with the default timeout.
    pub fn at(urls: Vec<String>) -> Self {
        Self {
            urls: HistoryUrls(urls),
            ..crate::config::defaults()
        }
    }

    /// A client of the configured replicas, `None` if there are none.
    pub fn client(&self) -> Option<HistoryClient> {
        (!self.urls.0.is_empty())
            .then(|| HistoryClient::new(self.urls.0.clone(), self.timeout, self.api_key.as_ref()))
    }
}

#[derive(Debug, Clone)]
pub struct HistoryClient {
    urls: Vec<String>,
    http: reqwest::Client,
}

/// What one replica's `/health` said, or why it said nothing.
#[derive(Debug, Clone)]
pub struct ReplicaHealth {
    pub url: String,
    pub health: Result<HistoryHealth, String>,
}

impl HistoryClient {
    /// `urls`: base URLs (`http://host:port`), tried in order; `timeout`
    /// bounds each call to one replica.
    pub fn new(urls: Vec<String>, timeout: Duration, key: Option<&secrecy::SecretString>) -> Self {
        use secrecy::ExposeSecret;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key
            && let Ok(mut value) =
                reqwest::header::HeaderValue::try_from(format!("Bearer {}", key.expose_secret()))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .expect("a plain HTTP client builds");
        Self { urls, http }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The order with its timeline, `None` if the history has never seen it.
    /// An error means no replica answered.
    pub async fn order(&self, id: &OrderId) -> anyhow::Result<Option<HistoryOrder>> {
        let mut last_error = None;
        for base in &self.urls {
            let url = format!("{base}/orders/{}", path_segment(id.as_str()));
            match self.http.get(&url).send().await {
                // Only the history's own answer means "never seen" (not a
                // proxy's or a wrong URL's 404).
                Ok(res) if res.status() == reqwest::StatusCode::NOT_FOUND => {
                    let body: serde_json::Value = res.json().await.unwrap_or_default();
                    if body["type"] == "/problems/order-not-found" {
                        return Ok(None);
                    }
                    last_error = Some(anyhow::anyhow!("{url}: 404 that is not the history's"));
                }
                Ok(res) if res.status().is_success() => {
                    return res
                        .json()
                        .await
                        .map(Some)
                        .map_err(|e| anyhow::anyhow!("{url}: not a history order: {e}"));
                }
                Ok(res) => last_error = Some(anyhow::anyhow!("{url}: HTTP {}", res.status())),
                Err(e) => last_error = Some(anyhow::anyhow!("{url}: {e}")),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no history URL configured")))
    }

    /// The order's status in the history, `None` if it has never seen it.
    pub async fn status(&self, id: &OrderId) -> anyhow::Result<Option<OrderStatus>> {
        Ok(self.order(id).await?.map(|order| order.status))
    }

    /// Whether the history has order `id` at `status` or past it: what a
    /// worker asks about an order that has no Redis record (its record may
    /// have expired after it finished). A history that does not answer is
    /// retried as a transient failure for `retry`, then an error (the
    /// message waits rather than being decided blind).
    pub async fn reached(
        &self,
        id: &OrderId,
        status: OrderStatus,
        retry: Duration,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<bool> {
        let seen = crate::retry::transient(retry, shutdown, || self.status(id)).await?;
        Ok(seen.is_some_and(|s| s.rank() >= status.rank()))
    }

    /// Every replica's `/health` (role, lag), in `HISTORY_URLS` order.
    pub async fn replicas(&self) -> Vec<ReplicaHealth> {
        let calls = self.urls.iter().map(|base| async move {
            let url = format!("{base}/health");
            let health = match self.http.get(&url).send().await {
                // A degraded replica answers 503 with the same body.
                Ok(res) => res
                    .json::<HistoryHealth>()
                    .await
                    .map_err(|e| format!("not a history health answer: {e}")),
                Err(e) => Err(if e.is_connect() {
                    "not reachable".to_owned()
                } else {
                    e.to_string()
                }),
            };
            ReplicaHealth {
                url: base.clone(),
                health,
            }
        });
        futures_util::future::join_all(calls).await
    }
}

/// `raw` as one path segment: every byte outside the unreserved characters
/// percent-encoded, and a `.` or `..` segment spelled out (`%2E`), so that
/// no value can address another path of the service.
pub fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else if b == b'.' && raw.bytes().any(|c| c != b'.') {
            out.push('.');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits `HISTORY_URLS`; each entry must be an `http://` base URL; empty
/// or `none` is no history.
pub fn parse_history_urls(raw: &str) -> Result<HistoryUrls, String> {
    if raw.trim() == "none" {
        return Ok(HistoryUrls::default());
    }
    let mut urls = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !part.starts_with("http://") || part.len() <= "http://".len() {
            return Err(format!("{part:?} is not an http:// base URL"));
        }
        urls.push(part.trim_end_matches('/').to_owned());
    }
    Ok(HistoryUrls(urls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_segment_never_climbs_out_of_its_place() {
        assert_eq!(path_segment("order-1.a_b~c"), "order-1.a_b~c");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("."), "%2E");
        assert_eq!(path_segment("a/b?c#d:e"), "a%2Fb%3Fc%23d%3Ae");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn history_urls_are_split_trimmed_and_checked() {
        assert_eq!(
            parse_history_urls(" http://a:1/ ,http://b:2,").unwrap().0,
            vec!["http://a:1", "http://b:2"]
        );
        assert!(parse_history_urls("").unwrap().0.is_empty());
        assert!(parse_history_urls("none").unwrap().0.is_empty());
        let err = parse_history_urls("a:1").unwrap_err();
        assert!(err.contains("not an http:// base URL"), "{err}");
    }
}
