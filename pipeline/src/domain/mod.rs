//! Domain newtypes, parsed once at the boundary.
//!
//! Past an HTTP handler or a message decoder, an order id, SKU, quantity or
//! idempotency key is known to be valid: the fields are private and the only way
//! in is `parse`/`try_from`.

use std::fmt;

use serde::{Deserialize, Serialize};

mod quote;
pub use quote::{Currency, QuoteId, QuoteTerms, SupplierId, parse_suppliers};

/// Why a value was refused; `field` is what the client sent it as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidField {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

fn parse_token(field: &'static str, raw: &str, max: usize) -> Result<String, InvalidField> {
    if raw.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if raw.len() > max {
        return Err(InvalidField::new(
            field,
            format!("must be at most {max} characters, got {}", raw.len()),
        ));
    }
    if let Some(bad) = raw.chars().find(|c| !is_id_char(*c)) {
        return Err(InvalidField::new(
            field,
            format!("character {bad:?} is not allowed; use A-Z a-z 0-9 . _ : -"),
        ));
    }
    // A path segment of its own in every URL that carries it: `.` and `..`
    // would name another path (`/orders/..` is `/`).
    if raw == "." || raw == ".." {
        return Err(InvalidField::new(
            field,
            format!("{raw:?} is not allowed: it names a path, not an item"),
        ));
    }
    Ok(raw.to_owned())
}

/// The client an order belongs to: 1–64 characters of `[A-Za-z0-9._-]`, not
/// `.` or `..`. Orders placed before client keys existed belong to
/// [`ClientId::DEFAULT`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    pub const MAX_LEN: usize = 64;
    /// The client of every order placed without a key, before keys existed.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        let token = parse_token("client", raw, Self::MAX_LEN)?;
        if token.contains(':') {
            return Err(InvalidField::new(
                "client",
                "character ':' is not allowed; use A-Z a-z 0-9 . _ -",
            ));
        }
        Ok(Self(token))
    }

    /// [`ClientId::DEFAULT`].
    pub fn default_client() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An order id. What a client names (or the gateway mints for it) is 1–128
/// characters of `[A-Za-z0-9._:-]`; the order's identity everywhere past the
/// gateway is that id qualified by its client, `<client>/<id>` (a plain `<id>`
/// for the client `default`, so the orders from before client keys keep their
/// ids). Two clients naming the same id name two orders; `/` is in neither
/// alphabet, so a qualified id reads back one way only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId(String);

impl OrderId {
    /// The longest id a client may name.
    pub const MAX_LEN: usize = 128;

    /// A client's own id (no client qualifier): what `POST /orders` and
    /// `GET /orders/{id}` take.
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        parse_token("id", raw, Self::MAX_LEN).map(Self)
    }

    /// A qualified id (`<client>/<id>`, or a plain `<id>` of the client
    /// `default`), as messages, records and the history carry it.
    pub fn parse_qualified(raw: &str) -> Result<Self, InvalidField> {
        match raw.split_once('/') {
            None => Self::parse(raw),
            Some((client, local)) => {
                let client = ClientId::parse(client)?;
                if client.is_default() {
                    return Err(InvalidField::new(
                        "id",
                        "an order of the client default is named by its id alone",
                    ));
                }
                Ok(Self::parse(local)?.scoped(&client))
            }
        }
    }

    /// A fresh, time-ordered id for an order the client did not name.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// This (client's own) id as the order of `client`.
    pub fn scoped(self, client: &ClientId) -> Self {
        if client.is_default() {
            self
        } else {
            Self(format!("{}/{}", client.as_str(), self.local()))
        }
    }

    /// The whole, qualified id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The client's own id, without its client.
    pub fn local(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(_, id)| id)
    }

    /// The client the order belongs to.
    pub fn client(&self) -> &str {
        self.0
            .split_once('/')
            .map_or(ClientId::DEFAULT, |(client, _)| client)
    }
}

/// A stock-keeping unit: 1–64 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        parse_token("sku", raw, Self::MAX_LEN).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many units an order asks for: at least 1, at most the configured maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    /// Checks `raw` against `1..=max`.
    pub fn parse(raw: i64, max: u32) -> Result<Self, InvalidField> {
        if raw < 1 || raw > i64::from(max) {
            return Err(InvalidField::new(
                "qty",
                format!("must be an integer from 1 to {max}, got {raw}"),
            ));
        }
        Ok(Self(raw as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Quantity {
    type Error = InvalidField;

    /// Checks only the lower bound; the upper bound is the gateway's policy.
    fn try_from(raw: u32) -> Result<Self, Self::Error> {
        Self::parse(i64::from(raw), u32::MAX)
    }
}

/// The key under which a request's outcome is remembered: the IETF
/// `Idempotency-Key` header. (A request without one but with a body id is
/// idempotent through its order record; the two never share a key space.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    /// Parses a header value. The draft standard makes it a structured-field
    /// string (`"abc"`); the bare form (`abc`) that most clients send is accepted
    /// too.
    pub fn parse_header(raw: &str) -> Result<Self, InvalidField> {
        let raw = raw.trim();
        let inner = raw
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(raw);
        if inner.is_empty() {
            return Err(InvalidField::new("Idempotency-Key", "must not be empty"));
        }
        if inner.len() > Self::MAX_LEN {
            return Err(InvalidField::new(
                "Idempotency-Key",
                format!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        if inner
            .chars()
            .any(|c| !c.is_ascii_graphic() || c == '"' || c == '\\')
        {
            return Err(InvalidField::new(
                "Idempotency-Key",
                "must be visible ASCII without quotes or backslashes",
            ));
        }
        Ok(Self(inner.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($($t:ident),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    )*};
}
string_newtype_impls!(OrderId, Sku, ClientId);

impl TryFrom<String> for OrderId {
    type Error = InvalidField;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse_qualified(&raw)
    }
}

impl TryFrom<String> for Sku {
    type Error = InvalidField;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl TryFrom<String> for ClientId {
    type Error = InvalidField;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> u32 {
        q.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_id_accepts_the_documented_alphabet() {
        assert!(OrderId::parse("order123").is_ok());
        assert!(OrderId::parse("A-z.0_9:x").is_ok());
        assert!(OrderId::parse(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn order_id_rejects_empty_long_and_foreign_characters() {
        assert_eq!(OrderId::parse("").unwrap_err().field, "id");
        assert!(OrderId::parse(&"a".repeat(129)).is_err());
        assert!(OrderId::parse("order 1").is_err());
        assert!(OrderId::parse("order/1").is_err());
        assert!(OrderId::parse("ordér").is_err());
    }

    #[test]
    fn ids_and_skus_that_name_a_path_are_rejected() {
        for raw in [".", ".."] {
            let err = OrderId::parse(raw).unwrap_err();
            assert!(err.reason.contains("names a path"), "{raw}: {err:?}");
            assert!(Sku::parse(raw).is_err(), "{raw}");
        }
        assert!(OrderId::parse("...").is_ok(), "three dots name nothing");
        assert!(OrderId::parse("v1.2").is_ok());
    }

    #[test]
    fn generated_order_ids_are_valid_and_distinct() {
        let a = OrderId::generate();
        let b = OrderId::generate();
        assert_ne!(a, b);
        assert!(OrderId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn an_id_scoped_by_its_client_reads_back_one_way() {
        let demo = ClientId::parse("demo").unwrap();
        let id = OrderId::parse("o-1").unwrap().scoped(&demo);
        assert_eq!(id.as_str(), "demo/o-1");
        assert_eq!((id.client(), id.local()), ("demo", "o-1"));
        assert_eq!(OrderId::parse_qualified("demo/o-1").unwrap(), id);
        let plain = OrderId::parse("o-1")
            .unwrap()
            .scoped(&ClientId::default_client());
        assert_eq!(plain.as_str(), "o-1");
        assert_eq!((plain.client(), plain.local()), ("default", "o-1"));
        // Scoping twice keeps one client; another client's id is another order.
        assert_eq!(id.clone().scoped(&demo), id);
        let other = OrderId::parse("o-1")
            .unwrap()
            .scoped(&ClientId::parse("acme").unwrap());
        assert_ne!(other, id);
        for bad in ["default/o-1", "a/b/c", "/o-1", "demo/", "de:mo/o-1", "../x"] {
            assert!(OrderId::parse_qualified(bad).is_err(), "{bad}");
        }
        let from_json: OrderId = serde_json::from_str("\"demo/o-1\"").unwrap();
        assert_eq!(from_json, id);
    }

    #[test]
    fn client_ids_are_plain_names() {
        for ok in ["demo", "acme-2", "a.b_c"] {
            assert!(ClientId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", &"c".repeat(65)] {
            assert!(ClientId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sku_is_limited_to_64_characters() {
        assert!(Sku::parse("mag-safe-phone-case").is_ok());
        assert!(Sku::parse(&"s".repeat(64)).is_ok());
        let err = Sku::parse(&"s".repeat(65)).unwrap_err();
        assert_eq!(err.field, "sku");
    }

    #[test]
    fn quantity_is_bounded_on_both_sides() {
        assert_eq!(Quantity::parse(1, 1000).unwrap().get(), 1);
        assert_eq!(Quantity::parse(1000, 1000).unwrap().get(), 1000);
        assert!(Quantity::parse(0, 1000).is_err());
        assert!(Quantity::parse(-3, 1000).is_err());
        assert!(Quantity::parse(1001, 1000).is_err());
        assert!(Quantity::try_from(0u32).is_err());
    }

    #[test]
    fn idempotency_key_accepts_bare_and_quoted_forms() {
        assert_eq!(IdempotencyKey::parse_header("abc").unwrap().as_str(), "abc");
        assert_eq!(
            IdempotencyKey::parse_header("\"8e03978e-40d5\"")
                .unwrap()
                .as_str(),
            "8e03978e-40d5"
        );
        assert!(IdempotencyKey::parse_header("\"\"").is_err());
        assert!(IdempotencyKey::parse_header("a b").is_err());
        assert!(IdempotencyKey::parse_header(&"k".repeat(256)).is_err());
    }

    #[test]
    fn newtypes_round_trip_through_serde_and_refuse_bad_values() {
        let id: OrderId = serde_json::from_str("\"o-1\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"o-1\"");
        assert!(serde_json::from_str::<Sku>("\"bad sku\"").is_err());
        assert!(serde_json::from_str::<Quantity>("0").is_err());
    }
}
