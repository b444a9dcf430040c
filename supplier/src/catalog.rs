//! The demo catalogs `make up` seeds: what each demo supplier stocks, at
//! which price and speed.

use pipeline::domain::Currency;
use serde::{Deserialize, Serialize};

/// One SKU of a supplier's catalog: the JSON value of a field of the Redis
/// hash `catalog:<supplier>`, e.g.
/// `{"unit_price_minor":1250,"currency":"EUR","stock":40,"delivery_days":3}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub unit_price_minor: u64,
    pub currency: Currency,
    pub stock: u64,
    pub delivery_days: u32,
}

/// The demo catalog of one supplier (seeded only where its hash is absent):
/// the seed's `mag-safe-phone-case` at three prices and speeds, and a few
/// more SKUs that not every supplier carries.
pub fn demo_catalog(supplier: &str) -> Vec<(&'static str, CatalogEntry)> {
    let entry = |unit_price_minor, stock, delivery_days| CatalogEntry {
        unit_price_minor,
        currency: Currency::parse("EUR").expect("a valid currency code"),
        stock,
        delivery_days,
    };
    match supplier {
        "acme" => vec![
            ("mag-safe-phone-case", entry(1250, 40, 3)),
            ("usb-c-cable-2m", entry(899, 200, 2)),
            ("wireless-charger-15w", entry(2490, 15, 4)),
        ],
        "globex" => vec![
            ("mag-safe-phone-case", entry(1190, 12, 5)),
            ("usb-c-cable-2m", entry(899, 80, 3)),
            ("screen-protector-tempered-glass", entry(650, 500, 1)),
        ],
        "initech" => vec![
            ("mag-safe-phone-case", entry(1390, 300, 1)),
            ("wireless-charger-15w", entry(2290, 0, 2)),
            ("usb-c-cable-2m", entry(949, 60, 1)),
        ],
        _ => vec![("mag-safe-phone-case", entry(1300, 50, 3))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_are_checked() {
        let entry: Result<CatalogEntry, _> = serde_json::from_str(
            r#"{"unit_price_minor":12.5,"currency":"EUR","stock":1,"delivery_days":1}"#,
        );
        assert!(entry.is_err(), "money is never a float");
        for s in quotes::DEMO_SUPPLIERS {
            assert!(
                demo_catalog(s)
                    .iter()
                    .any(|(sku, _)| *sku == "mag-safe-phone-case")
            );
        }
    }
}
