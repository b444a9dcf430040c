//! W3C trace context (`traceparent`), carried in HTTP and AMQP headers so one
//! order can be followed through every service's logs.

use rand::RngCore;

/// A `traceparent` value: `00-<trace id>-<parent id>-<flags>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: String,
    span_id: String,
}

impl TraceParent {
    /// Starts a new trace.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        Self {
            trace_id: format!(
                "{:032x}",
                rng.next_u64() as u128 | ((rng.next_u64() as u128) << 64)
            ),
            span_id: format!("{:016x}", rng.next_u64() | 1),
        }
    }

    /// Parses an incoming header; `None` when it is not a valid version-00 value.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if version != "00" || !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
            return None;
        }
        if trace_id.bytes().all(|b| b == b'0') || span_id.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(Self {
            trace_id: trace_id.to_ascii_lowercase(),
            span_id: span_id.to_ascii_lowercase(),
        })
    }

    /// The same trace, one hop further: a new span id under the same trace id.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            span_id: format!("{:016x}", rand::rng().next_u64() | 1),
        }
    }

    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    pub fn header_value(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_parse_back() {
        let tp = TraceParent::generate();
        assert_eq!(TraceParent::parse(&tp.header_value()), Some(tp.clone()));
        assert_eq!(tp.child().trace_id(), tp.trace_id());
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(TraceParent::parse("00-abc-def-01").is_none());
        assert!(
            TraceParent::parse(&format!("00-{}-{}-01", "0".repeat(32), "1".repeat(16))).is_none()
        );
        assert!(
            TraceParent::parse(&format!("01-{}-{}-01", "a".repeat(32), "1".repeat(16))).is_none()
        );
        assert!(
            TraceParent::parse(&format!("00-{}-{}-01", "a".repeat(32), "1".repeat(16))).is_some()
        );
    }
}
