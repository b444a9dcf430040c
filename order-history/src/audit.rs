//! Reading the history back in bulk, for the load tool's ledger: every
//! order's status and the kinds of its events, by id.

use std::collections::HashMap;

use crate::db::Database;

/// What the history holds for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub status: String,
    pub reason: Option<String>,
    pub sku: String,
    pub qty: i32,
    /// Its events' kinds in stream order (`placed`, `created`, ...).
    pub kinds: Vec<String>,
}

/// A session for [`orders`], in the history's schema.
pub async fn connect(database_url: &str, schema: &str) -> anyhow::Result<tokio_postgres::Client> {
    Database::new(database_url, schema, std::time::Duration::from_secs(5))?
        .connect()
        .await
}

/// The history of each of `ids` that it holds.
pub async fn orders(
    client: &tokio_postgres::Client,
    ids: &[String],
) -> anyhow::Result<HashMap<String, Audit>> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(5_000) {
        let rows = client
            .query(
                "SELECT o.id, o.status, o.reason, o.sku, o.qty,
                        array_agg(e.kind ORDER BY e.stream_offset)
                   FROM orders o JOIN events e ON e.order_id = o.id
                  WHERE o.id = ANY($1)
                  GROUP BY o.id",
                &[&chunk],
            )
            .await?;
        for row in rows {
            out.insert(
                row.get(0),
                Audit {
                    status: row.get(1),
                    reason: row.get(2),
                    sku: row.get(3),
                    qty: row.get(4),
                    kinds: row.get(5),
                },
            );
        }
    }
    Ok(out)
}

/// `orders.total`, and the events per kind (what `/stats` reports).
pub async fn totals(client: &tokio_postgres::Client) -> anyhow::Result<HashMap<String, i64>> {
    let mut out = HashMap::new();
    let total: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await?
        .get(0);
    out.insert("orders".to_owned(), total);
    for row in client
        .query("SELECT kind, count(*) FROM events GROUP BY kind", &[])
        .await?
    {
        out.insert(row.get::<_, String>(0), row.get(1));
    }
    Ok(out)
}
