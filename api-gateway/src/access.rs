//! Who may call which route, and how often: every guarded route goes
//! through [`Access`].

use axum::middleware::from_fn_with_state;
use axum::routing::MethodRouter;
use clients::{Limiter, Route, Scope};

/// The key check and the rate limiter of one gateway process.
#[derive(Clone)]
pub struct Access {
    pub keys: clients::Keys,
    pub limiter: Limiter,
}

impl Access {
    /// `route` behind a key that carries `scope` (or `admin`).
    pub fn guard<S>(&self, route: MethodRouter<S>, scope: Scope) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        route.route_layer(from_fn_with_state(
            (self.keys.clone(), scope),
            clients::require,
        ))
    }

    /// [`Access::guard`], then counted against the key's rate on `limited`
    /// (429 past it, before the handler runs).
    pub fn guard_limited<S>(
        &self,
        route: MethodRouter<S>,
        scope: Scope,
        limited: Route,
    ) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let limited = route.route_layer(from_fn_with_state(
            (self.limiter.clone(), limited),
            clients::limit,
        ));
        self.guard(limited, scope)
    }
}
