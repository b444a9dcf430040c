//! The dashboard's figures in the Prometheus text exposition format (0.0.4),
//! for `GET /metrics` with `Accept: text/plain` or OpenMetrics.

use std::fmt::Write;

use crate::snapshot::{Snapshot, SupplierStatus};

/// Renders `s`; `promtool check metrics` accepts the result.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "order_pipeline_orders_total",
        "counter",
        "Orders that reached each stage.",
    );
    for (stage, n) in [
        ("accepted", s.orders.accepted),
        ("reserved", s.orders.reserved),
        ("rejected", s.orders.rejected),
        ("notified", s.orders.notified),
    ] {
        let _ = writeln!(out, "order_pipeline_orders_total{{stage=\"{stage}\"}} {n}");
    }
    family(
        &mut out,
        "order_pipeline_orders_parked",
        "gauge",
        "Orders parked until an operator fixes their data.",
    );
    let _ = writeln!(out, "order_pipeline_orders_parked {}", s.orders.parked);
    family(
        &mut out,
        "order_pipeline_anomalies_total",
        "counter",
        "Messages that disagreed with their order's record (parked, never merged).",
    );
    let _ = writeln!(out, "order_pipeline_anomalies_total {}", s.orders.anomalies);
    family(
        &mut out,
        "order_pipeline_history_active",
        "gauge",
        "1 for the order-history replica that applies the event stream, 0 for a standby or one that is down.",
    );
    for r in &s.history {
        let _ = writeln!(
            out,
            "order_pipeline_history_active{{url=\"{}\"}} {}",
            escape(&r.url),
            u8::from(r.role == "active")
        );
    }
    family(
        &mut out,
        "order_pipeline_history_lag_events",
        "gauge",
        "Events on orders.events an order-history replica has not applied yet.",
    );
    for r in &s.history {
        if let Some(lag) = r.lag_events {
            let _ = writeln!(
                out,
                "order_pipeline_history_lag_events{{url=\"{}\"}} {lag}",
                escape(&r.url)
            );
        }
    }
    family(
        &mut out,
        "order_pipeline_supplier_circuit_state",
        "gauge",
        "Each supplier's circuit on the gateway: 0 closed, 1 half-open, 2 open.",
    );
    let suppliers: &[SupplierStatus] = match &s.suppliers {
        Some(x) => &x.suppliers,
        None => &[],
    };
    for supplier in suppliers {
        let _ = writeln!(
            out,
            "order_pipeline_supplier_circuit_state{{supplier=\"{}\"}} {}",
            escape(&supplier.name),
            supplier.circuit.gauge()
        );
    }
    family(
        &mut out,
        "order_pipeline_supplier_success_ratio",
        "gauge",
        "Share of a supplier's recent quote calls that succeeded, 0 to 1 (absent before its first call).",
    );
    for supplier in suppliers {
        if let Some(ratio) = supplier.recent_success_rate.filter(|r| r.is_finite()) {
            let _ = writeln!(
                out,
                "order_pipeline_supplier_success_ratio{{supplier=\"{}\"}} {ratio}",
                escape(&supplier.name)
            );
        }
    }
    family(
        &mut out,
        "order_pipeline_orders_rejected_total",
        "counter",
        "Rejected orders by reason.",
    );
    for (reason, n) in &s.orders.rejected_by_reason {
        let _ = writeln!(
            out,
            "order_pipeline_orders_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    family(
        &mut out,
        "order_pipeline_inventory_units",
        "gauge",
        "Units in stock per SKU.",
    );
    for stock in &s.inventory {
        if let Some(units) = stock.units {
            let _ = writeln!(
                out,
                "order_pipeline_inventory_units{{sku=\"{}\"}} {units}",
                escape(&stock.sku),
            );
        }
    }
    family(
        &mut out,
        "order_pipeline_inventory_invalid",
        "gauge",
        "1 for each SKU whose stock value is not an integer (its orders are parked).",
    );
    for stock in s.inventory.iter().filter(|s| s.units.is_none()) {
        let _ = writeln!(
            out,
            "order_pipeline_inventory_invalid{{sku=\"{}\"}} 1",
            escape(&stock.sku),
        );
    }
    family(
        &mut out,
        "order_pipeline_notifications",
        "gauge",
        "Notifications by status.",
    );
    for (status, n) in [
        ("sent", s.notifications.sent),
        ("sending", s.notifications.sending),
        ("failed", s.notifications.failed),
    ] {
        let _ = writeln!(
            out,
            "order_pipeline_notifications{{status=\"{status}\"}} {n}"
        );
    }
    family(
        &mut out,
        "order_pipeline_queue_messages",
        "gauge",
        "Messages ready in each queue.",
    );
    for (queue, depth) in &s.queues {
        if let Some(depth) = depth {
            let _ = writeln!(
                out,
                "order_pipeline_queue_messages{{queue=\"{queue}\"}} {depth}"
            );
        }
    }
    family(
        &mut out,
        "order_pipeline_component_up",
        "gauge",
        "Whether Redis, the broker and the gateway (when GATEWAY_URL names one) answer the dashboard.",
    );
    let gateway = s.suppliers.as_ref().map(|x| ("gateway", x.status == "up"));
    for (component, up) in [("redis", s.health.redis), ("broker", s.health.broker)]
        .into_iter()
        .chain(gateway)
    {
        let _ = writeln!(
            out,
            "order_pipeline_component_up{{component=\"{component}\"}} {}",
            u8::from(up)
        );
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn circuits_map_to_the_gateways_gauge_values() {
        // A circuit as `/suppliers` names it, read as the gateway's own type.
        let circuit_gauge = |name: &str| {
            serde_json::from_str::<pipeline::api::CircuitState>(&format!("\"{name}\""))
                .ok()
                .map(|c| c.gauge() as u8)
        };
        assert_eq!(circuit_gauge("closed"), Some(0));
        assert_eq!(circuit_gauge("half_open"), Some(1));
        assert_eq!(circuit_gauge("open"), Some(2));
        assert_eq!(circuit_gauge("ajar"), None);
    }
}
