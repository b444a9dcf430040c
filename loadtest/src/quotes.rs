//! Quote load: `GET /quotes/{sku}` at a fixed number of requests in flight
//! against the running stack's suppliers, with throughput, latency and how
//! each request ended.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::ledger::Latency;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct QuoteRun {
    pub requests: u64,
    pub in_flight: usize,
    pub per_sec: f64,
    pub latency: Latency,
    /// HTTP status (or `error`) → requests.
    pub statuses: BTreeMap<String, u64>,
    /// `completed_by` of the 200s → requests.
    pub completed_by: BTreeMap<String, u64>,
}

impl QuoteRun {
    /// Every request answered 200.
    pub fn ok(&self) -> bool {
        self.statuses.get("200").copied() == Some(self.requests)
    }
}

/// Sends `requests` quote requests for `sku` to `gateway` (`http://host:port`)
/// with `query`, `in_flight` at a time.
pub async fn run(
    gateway: &str,
    api_key: Option<&str>,
    sku: &str,
    query: &str,
    requests: u64,
    in_flight: usize,
) -> anyhow::Result<QuoteRun> {
    let http = crate::client_builder(api_key)?
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(in_flight)
        .build()?;
    let url = format!("{gateway}/quotes/{sku}?{query}");
    let started = Instant::now();
    let results: Vec<(String, Option<String>, u64)> = futures_util::stream::iter(0..requests)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let sent = Instant::now();
                match http.get(&url).send().await {
                    Ok(res) => {
                        let status = res.status().as_u16().to_string();
                        let body: serde_json::Value = res.json().await.unwrap_or_default();
                        let by = body["completed_by"].as_str().map(str::to_owned);
                        (status, by, sent.elapsed().as_micros() as u64)
                    }
                    Err(_) => ("error".to_owned(), None, sent.elapsed().as_micros() as u64),
                }
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut statuses = BTreeMap::new();
    let mut completed_by = BTreeMap::new();
    let mut micros = Vec::with_capacity(results.len());
    for (status, by, us) in results {
        if status == "200"
            && let Some(by) = by
        {
            *completed_by.entry(by).or_insert(0) += 1;
        }
        *statuses.entry(status).or_insert(0) += 1;
        micros.push(us);
    }
    Ok(QuoteRun {
        requests,
        in_flight,
        per_sec: requests as f64 / elapsed,
        latency: Latency::from_micros(micros),
        statuses,
        completed_by,
    })
}
