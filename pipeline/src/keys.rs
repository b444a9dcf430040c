//! The Redis key schema, in one place (documented in the README).
//!
//! | key | type | written by |
//! |---|---|---|
//! | `inventory:<sku>` | integer stock; missing = unknown SKU | operator, processor |
//! | `idemp:<key>`, `idemp@<client>:<key>` | hash: fingerprint, order id, state, lease, stored response (header keys only; the first form is the client `default`'s) | gateway |
//! | `order:<id>` (`<id>` qualified: `<client>/<id>`, or the bare id of the client `default`) | hash: sku, qty, status, reason, timestamps, intake claim, a quote-backed order's terms | gateway, processor, notifier |
//! | `notification:<id>` | hash: notification status, channel, attempts, sent_at, last_error | notifier |
//! | `counters` | hash of pipeline counters (`accepted`, ...) | every service |
//! | `recent_orders` | list of the newest order ids, newest first, capped | gateway, processor |
//! | `anomalies` | list of the newest messages that disagreed with their order's record (JSON), capped | processor |
//! | `catalog:<supplier>` | hash: sku → JSON `{"unit_price_minor","currency","stock","delivery_days"}` | operator (`redis-cli HSET`), demo seed |
//! | `quote:<quote id>` | hash: a quote the gateway handed out (client, supplier, sku, qty, price, `valid_until_ms`, `order_id` once it backs an order), kept until `valid_until` + 15 min | gateway |
//! | `quotes_out@<client>` | sorted set: the client's quote ids by `valid_until_ms` (its budget, `QUOTE_MAX_OUTSTANDING`) | gateway |
//! | `rate:<key id>:<route>` | string: the GCRA's theoretical arrival time (µs) of one key on one limited route | gateway |
//! | `retired_ids` | bitmap: a fixed-size filter of order ids whose records expired (retention) | order-history |
//!
//! Idempotency keys and order ids never share a key space: `idemp:` holds only
//! `Idempotency-Key` header values, `order:` only order ids. Both are per
//! client: a client's key or id never meets another client's (client names
//! have neither `:` nor `/`, and a header key cannot start a `default` key
//! with `@`, since `idemp@` is not `idemp:`).
//!
//! An optional prefix (`REDIS_KEY_PREFIX`) is put in front of every key so tests
//! and tenants can share one Redis.

use crate::domain::{ClientId, OrderId, Sku};

#[derive(Debug, Clone, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The record of `client`'s `Idempotency-Key` `key`.
    pub fn idempotency(&self, client: &ClientId, key: &str) -> String {
        if client.is_default() {
            format!("{}idemp:{key}", self.prefix)
        } else {
            format!("{}idemp@{client}:{key}", self.prefix)
        }
    }

    /// The quotes `client` holds, by expiry.
    pub fn quotes_out(&self, client: &ClientId) -> String {
        format!("{}quotes_out@{client}", self.prefix)
    }

    /// The rate limiter's state of one key (by its id) on one route.
    pub fn rate(&self, key_id: &str, route: &str) -> String {
        format!("{}rate:{key_id}:{route}", self.prefix)
    }

    pub fn order(&self, id: &OrderId) -> String {
        format!("{}{id}", self.order_prefix())
    }

    /// What every order key starts with (for a script that finds an order's id
    /// in another record).
    pub fn order_prefix(&self) -> String {
        format!("{}order:", self.prefix)
    }

    /// The filter of retired order ids (see `retire.lua`, `intake.lua`).
    pub fn retired_ids(&self) -> String {
        format!("{}retired_ids", self.prefix)
    }

    pub fn anomalies(&self) -> String {
        format!("{}anomalies", self.prefix)
    }

    pub fn inventory(&self, sku: &Sku) -> String {
        format!("{}inventory:{sku}", self.prefix)
    }

    pub fn notification(&self, id: &OrderId) -> String {
        format!("{}notification:{id}", self.prefix)
    }

    pub fn recent_orders(&self) -> String {
        format!("{}recent_orders", self.prefix)
    }

    /// `SCAN` pattern of every inventory key.
    pub fn inventory_pattern(&self) -> String {
        // The prefix is matched literally, glob characters and all.
        let mut prefix = String::with_capacity(self.prefix.len());
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                prefix.push('\\');
            }
            prefix.push(c);
        }
        format!("{prefix}inventory:*")
    }

    /// The SKU of an inventory key found by [`Keys::inventory_pattern`].
    pub fn sku_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.prefix)?.strip_prefix("inventory:")
    }

    /// A supplier's catalog.
    pub fn catalog(&self, supplier: &crate::domain::SupplierId) -> String {
        format!("{}catalog:{supplier}", self.prefix)
    }

    /// A quote handed out by `GET /quotes/{sku}` (`intake.lua` gets the
    /// whole key).
    pub fn quote(&self, id: &crate::domain::QuoteId) -> String {
        format!("{}quote:{}", self.prefix, id.as_str())
    }

    pub fn counters(&self) -> String {
        format!("{}counters", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_seed_schema_and_carry_the_prefix() {
        let plain = Keys::default();
        let id = OrderId::parse("order123").unwrap();
        let sku = Sku::parse("mag-safe-phone-case").unwrap();
        let default = ClientId::default_client();
        assert_eq!(plain.idempotency(&default, "order123"), "idemp:order123");
        let demo = ClientId::parse("demo").unwrap();
        assert_eq!(plain.idempotency(&demo, "k:1"), "idemp@demo:k:1");
        assert_eq!(
            plain.order(&OrderId::parse("o").unwrap().scoped(&demo)),
            "order:demo/o"
        );
        assert_eq!(plain.inventory(&sku), "inventory:mag-safe-phone-case");
        assert_eq!(plain.order(&id), "order:order123");
        assert_eq!(Keys::new("t1:").counters(), "t1:counters");
    }

    #[test]
    fn the_inventory_pattern_takes_the_prefix_literally() {
        assert_eq!(Keys::default().inventory_pattern(), "inventory:*");
        assert_eq!(Keys::new("t1:").inventory_pattern(), "t1:inventory:*");
        assert_eq!(
            Keys::new("a*b?[c]\\:").inventory_pattern(),
            "a\\*b\\?\\[c\\]\\\\:inventory:*"
        );
    }
}
