//! A client of the gateway's `GET /suppliers` (each supplier's circuit and
//! figures, as that gateway process sees them), for the Suppliers panel.

use std::time::Duration;

use pipeline::config::{ConfigError, millis_or};

/// The gateway `make up` starts.
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Clone)]
pub struct GatewayClient {
    url: String,
    timeout: Duration,
    http: reqwest::Client,
}

/// One supplier as the gateway's `/suppliers` describes it, and the whole
/// answer: the shared crate owns the shape the gateway writes.
pub use pipeline::api::SuppliersReport;
pub use pipeline::api::DestinationStatus as SupplierStatus;

impl GatewayClient {
    /// `url`: the gateway's base URL (`http://host:port`); `timeout` bounds
    /// one call (connecting and the whole answer).
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
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

    /// `GATEWAY_URL` (unset = the `make up` gateway; set but empty, or
    /// `none` = no Suppliers panel) and `GATEWAY_TIMEOUT_MS` (1000).
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        let raw = std::env::var("GATEWAY_URL").unwrap_or_else(|_| DEFAULT_GATEWAY_URL.into());
        let Some(url) = parse_gateway_url(&raw)? else {
            return Ok(None);
        };
        Ok(Some(Self::new(
            url,
            millis_or("GATEWAY_TIMEOUT_MS", 1_000)?,
        )))
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
pub fn parse_gateway_url(raw: &str) -> Result<Option<String>, ConfigError> {
    let url = raw.trim();
    if url.is_empty() || url == "none" {
        return Ok(None);
    }
    if !url.starts_with("http://") || url.len() <= "http://".len() {
        return Err(ConfigError::new(
            "GATEWAY_URL",
            raw,
            "expected an http:// base URL, or none",
        ));
    }
    Ok(Some(url.trim_end_matches('/').to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_url_is_trimmed_checked_or_off() {
        assert_eq!(
            parse_gateway_url(" http://a:1/ ").unwrap().as_deref(),
            Some("http://a:1")
        );
        assert_eq!(parse_gateway_url("").unwrap(), None);
        assert_eq!(parse_gateway_url(" none ").unwrap(), None);
        let err = parse_gateway_url("a:1").unwrap_err();
        assert!(err.to_string().contains("GATEWAY_URL"), "{err}");
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
