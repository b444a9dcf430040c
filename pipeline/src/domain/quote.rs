//! Quote identities a platform needs to name: who supplies (a supplier id,
//! which names a queue and a Redis key), in which currency, under which quote
//! id, and the terms a quote-backed order keeps.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::InvalidField;

/// A supplier's id: 1–32 characters of `[a-z0-9-]` (it names a queue and a
/// Redis key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SupplierId(String);

impl SupplierId {
    pub const MAX_LEN: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        let field = "supplier";
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(InvalidField {
                field,
                reason: format!("must be 1 to {} characters", Self::MAX_LEN),
            });
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(InvalidField {
                field,
                reason: format!("character {bad:?} is not allowed; use a-z 0-9 -"),
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SupplierId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SupplierId {
    type Error = InvalidField;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<SupplierId> for String {
    fn from(id: SupplierId) -> Self {
        id.0
    }
}

/// Parses `QUOTE_SUPPLIERS`-style lists: comma-separated ids, blanks
/// skipped, duplicates refused.
pub fn parse_suppliers(raw: &str) -> Result<Vec<SupplierId>, String> {
    let mut ids: Vec<SupplierId> = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id = SupplierId::parse(part).map_err(|e| format!("{part:?}: {}", e.reason))?;
        if ids.contains(&id) {
            return Err(format!("{part:?} is listed twice"));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// An ISO 4217 currency code: three upper-case letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() == 3 && raw.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "{raw:?} is not a currency code (three upper-case letters, such as EUR)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.0
    }
}

/// A quote's id: `q-` and 32 hex digits (only the gateway makes them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QuoteId(String);

impl QuoteId {
    pub fn generate() -> Self {
        Self(format!("q-{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        let ok = raw.len() == 34
            && raw.starts_with("q-")
            && raw[2..].chars().all(|c| c.is_ascii_hexdigit());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidField {
                field: "quote_id",
                reason:
                    "must be a quote id as returned by GET /quotes/{sku} (q- and 32 hex digits)"
                        .into(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QuoteId {
    type Error = InvalidField;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<QuoteId> for String {
    fn from(id: QuoteId) -> Self {
        id.0
    }
}

/// What a quote-backed order keeps of its quote: who supplies it and at
/// what price (in its record, its placed event and its views).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteTerms {
    pub quote_id: QuoteId,
    pub supplier: SupplierId,
    pub unit_price_minor: u64,
    pub total_minor: u64,
    pub currency: Currency,
    pub delivery_days: u32,
}

impl QuoteTerms {
    /// Reads the terms from their string fields (an order record, a script
    /// reply), in the order of the struct.
    pub fn from_fields(fields: [&str; 6]) -> Result<Self, String> {
        let [quote_id, supplier, unit, total, currency, days] = fields;
        let number = |name: &str, raw: &str| {
            raw.parse::<u64>()
                .map_err(|_| format!("{name} {raw:?} is not a whole number"))
        };
        Ok(Self {
            quote_id: QuoteId::parse(quote_id).map_err(|e| e.reason)?,
            supplier: SupplierId::parse(supplier).map_err(|e| e.reason)?,
            unit_price_minor: number("unit_price_minor", unit)?,
            total_minor: number("total_minor", total)?,
            currency: Currency::parse(currency)?,
            delivery_days: u32::try_from(number("delivery_days", days)?)
                .map_err(|_| "delivery_days out of range".to_owned())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_codes_are_checked() {
        assert!(SupplierId::parse("acme-2").is_ok());
        assert!(SupplierId::parse("Acme").is_err());
        assert!(SupplierId::parse("").is_err());
        assert!(SupplierId::parse("a.b").is_err());
        assert_eq!(parse_suppliers(" acme, globex ,,").unwrap().len(), 2);
        assert!(parse_suppliers("acme,acme").is_err());
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
        let q = QuoteId::generate();
        assert_eq!(QuoteId::parse(q.as_str()).unwrap(), q);
        assert!(QuoteId::parse("q-xyz").is_err());
    }
}
