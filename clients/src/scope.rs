//! What a key may do.

use std::fmt;
use std::str::FromStr;

/// A permission a key carries. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scope {
    /// Place (and later cancel) orders.
    #[value(name = "orders:write")]
    OrdersWrite,
    /// Read its own orders.
    #[value(name = "orders:read")]
    OrdersRead,
    /// Ask for supplier quotes.
    #[value(name = "quotes:read")]
    QuotesRead,
    /// Everything, including `/metrics`, `/suppliers` and the operator's views.
    #[value(name = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Self; 4] = [
        Self::OrdersWrite,
        Self::OrdersRead,
        Self::QuotesRead,
        Self::Admin,
    ];

    /// What a client key gets when none is named: orders and quotes.
    pub const CLIENT: [Self; 3] = [Self::OrdersWrite, Self::OrdersRead, Self::QuotesRead];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrdersWrite => "orders:write",
            Self::OrdersRead => "orders:read",
            Self::QuotesRead => "quotes:read",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                let all: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope {raw:?}; one of {}", all.join(", "))
            })
    }
}

/// Who is calling, once the key checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    /// The client whose orders, idempotency keys and quotes these are.
    pub client: pipeline::domain::ClientId,
    pub scopes: Vec<Scope>,
    pub orders_per_sec: Option<u32>,
    pub quotes_per_sec: Option<u32>,
}

impl Principal {
    /// Whether the key carries `scope` (or `admin`).
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_back_from_their_names() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
        }
        assert!(
            "orders"
                .parse::<Scope>()
                .unwrap_err()
                .contains("orders:write")
        );
    }

    #[test]
    fn admin_may_do_everything_others_only_theirs() {
        let who = |scopes: Vec<Scope>| Principal {
            key_id: "k".into(),
            client: pipeline::domain::ClientId::parse("c").unwrap(),
            scopes,
            orders_per_sec: None,
            quotes_per_sec: None,
        };
        let admin = who(vec![Scope::Admin]);
        assert!(Scope::ALL.into_iter().all(|s| admin.may(s)));
        let reader = who(vec![Scope::OrdersRead]);
        assert!(reader.may(Scope::OrdersRead));
        assert!(!reader.may(Scope::OrdersWrite) && !reader.may(Scope::Admin));
    }
}
