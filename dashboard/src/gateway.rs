//! A client of the gateway's `GET /suppliers` (each supplier's circuit and
//! figures, as that gateway process sees them), for the Suppliers panel.

use std::time::Duration;

use pipeline::config::{millis, secret};
use secrecy::{ExposeSecret, SecretString};

/// The gateway `make up` starts.
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:8080";

/// Where the gateway is, for the Suppliers panel.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// The gateway whose `/suppliers` (each supplier's circuit, success
    /// rate, latency) the Suppliers panel shows; empty or `none`: no panel.
    #[arg(id = "GATEWAY_URL", long = "gateway-url", env = "GATEWAY_URL", default_value = DEFAULT_GATEWAY_URL, value_parser = parse_gateway_url)]
    pub url: GatewayUrl,
    /// Bounds one call to the gateway (connecting and the whole answer).
    #[arg(id = "GATEWAY_TIMEOUT_MS", long = "gateway-timeout-ms", env = "GATEWAY_TIMEOUT_MS", default_value = "1000", value_parser = millis)]
    pub timeout: Duration,
    /// An admin client key (`op_...`) for the gateway's `/suppliers`.
    #[arg(id = "GATEWAY_API_KEY", long = "gateway-api-key", env = "GATEWAY_API_KEY", hide_env_values = true, value_parser = secret(api_key))]
    pub api_key: Option<SecretString>,
}

fn api_key(raw: &str) -> Result<SecretString, String> {
    let raw = raw.trim();
    if raw.starts_with("op_") {
        Ok(SecretString::from(raw.to_owned()))
    } else {
        Err("expected a client key, op_<key id>_<secret>".into())
    }
}

/// `GATEWAY_URL`, `None` for no Suppliers panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayUrl(pub Option<String>);

impl GatewayConfig {
    /// The gateway at `url`, with the default timeout.
    pub fn at(url: Option<String>) -> Self {
        Self {
            url: GatewayUrl(url),
            ..pipeline::config::defaults()
        }
    }

    /// A client of the configured gateway, `None` for no panel.
    pub fn client(&self) -> Option<GatewayClient> {
        self.url
            .0
            .as_ref()
            .map(|u| GatewayClient::new(u.clone(), self.timeout, self.api_key.as_ref()))
    }
}

#[derive(Debug, Clone)]
pub struct GatewayClient {
    url: String,
    timeout: Duration,
    http: reqwest::Client,
}

pub use pipeline::api::DestinationStatus as SupplierStatus;
/// One supplier as the gateway's `/suppliers` describes it, and the whole
/// answer: the shared crate owns the shape the gateway writes.
pub use pipeline::api::SuppliersReport;

impl GatewayClient {
    /// `url`: the gateway's base URL (`http://host:port`); `timeout` bounds
    /// one call (connecting and the whole answer).
    pub fn new(url: impl Into<String>, timeout: Duration, key: Option<&SecretString>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key
            && let Ok(mut value) =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
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
        let url: String = url.into();
        Self {
            url: url.trim_end_matches('/').to_owned(),
            timeout,
            http,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The gateway's `/suppliers`, or why there is none (not reachable, no
    /// answer in time, an HTTP error, a body that is not a `/suppliers` one).
    pub async fn suppliers(&self) -> Result<SuppliersReport, String> {
        let url = format!("{}/suppliers", self.url);
        let res = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.describe(&e))?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status()));
        }
        res.json::<SuppliersReport>().await.map_err(|e| {
            if e.is_timeout() {
                self.describe(&e)
            } else {
                format!("not a /suppliers answer: {e}")
            }
        })
    }

    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            format!("no answer within {} ms", self.timeout.as_millis())
        } else if e.is_connect() {
            // reqwest's own text names the URL only; the innermost cause says
            // what happened ("Connection refused").
            let mut cause: &(dyn std::error::Error + 'static) = e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            format!("not reachable: {cause}")
        } else {
            e.to_string()
        }
    }
}

/// Reads a `GATEWAY_URL` value: `None` for empty or `none`, else an
/// `http://` base URL without its trailing slash.
pub fn parse_gateway_url(raw: &str) -> Result<GatewayUrl, String> {
    let url = raw.trim();
    if url.is_empty() || url == "none" {
        return Ok(GatewayUrl(None));
    }
    if !url.starts_with("http://") || url.len() <= "http://".len() {
        return Err("expected an http:// base URL, or none".into());
    }
    Ok(GatewayUrl(Some(url.trim_end_matches('/').to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_url_is_trimmed_checked_or_off() {
        assert_eq!(
            parse_gateway_url(" http://a:1/ ").unwrap().0.as_deref(),
            Some("http://a:1")
        );
        assert_eq!(parse_gateway_url("").unwrap().0, None);
        assert_eq!(parse_gateway_url(" none ").unwrap().0, None);
        let err = parse_gateway_url("a:1").unwrap_err();
        assert!(err.contains("expected an http:// base URL"), "{err}");
    }

    #[test]
    fn a_suppliers_answer_reads_with_its_nulls() {
        let body = r#"{"suppliers":[{"name":"acme","circuit":"closed","open_for_ms":null,
            "window_calls":3,"window_failures":0,"recent_calls":3,"recent_success_rate":1.0,
            "latency_p50_ms":2.1,"latency_p99_ms":4.0,"replies":3,"errors":0,"timeouts":0,
            "skipped":0,"last_error":null},
            {"name":"globex","circuit":"open","open_for_ms":1200,"window_calls":5,
            "window_failures":5,"recent_calls":0,"recent_success_rate":null,
            "latency_p50_ms":null,"latency_p99_ms":null,"replies":0,"errors":5,"timeouts":0,
            "skipped":2,"last_error":"boom"}],
            "pending_requests":0,"late_replies":1,"reply_consumer":"up"}"#;
        let r: SuppliersReport = serde_json::from_str(body).unwrap();
        assert_eq!(r.suppliers.len(), 2);
        assert_eq!(r.suppliers[0].recent_success_rate, Some(1.0));
        assert_eq!(r.suppliers[1].open_for_ms, Some(1200));
        assert_eq!(r.suppliers[1].latency_p50_ms, None);
        assert_eq!(r.suppliers[1].last_error.as_deref(), Some("boom"));
        assert_eq!(r.late_replies, 1);
        assert_eq!(r.reply_consumer, "up");
    }
}
