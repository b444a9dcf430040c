//! Checking a presented key on every request without a PostgreSQL round
//! trip: what was looked up is cached, and a background task confirms every
//! cached key every `KEYS_REFRESH_MS` in one query (so a revocation reaches
//! every gateway within that, plus the query). While PostgreSQL does not
//! answer, a key confirmed within `KEYS_GRACE_SECS` keeps working; a key never
//! seen is answered 503 (we cannot tell), never 401.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pipeline::http::Problem;
use tokio_util::sync::CancellationToken;

use crate::KeysConfig;
use crate::key::{PresentedKey, same_hash};
use crate::scope::{Principal, Scope};
use crate::store::{KeyStore, StoredKey};

/// The longest a first lookup of a key waits for PostgreSQL.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Unknown key ids remembered at most (an attacker's random ids must not
/// grow the cache without bound).
const MAX_UNKNOWN: usize = 10_000;

/// Why a request is not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No key, not a key, an unknown key or a revoked one: one answer for all.
    Unauthenticated,
    /// A good key without the scope.
    Forbidden(Scope),
    /// The key was never seen and PostgreSQL does not answer.
    Unavailable,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated => {
                let mut res =
                    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
                        .detail("send a client key: Authorization: Bearer op_<key id>_<secret>")
                        .into_response();
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"orders\""),
                );
                res
            }
            Self::Forbidden(scope) => Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                .detail(format!("this key lacks the {scope} scope"))
                .into_response(),
            Self::Unavailable => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "key-store-unavailable",
                "Key store unavailable",
            )
            .detail("the key could not be checked; try again shortly")
            .retry_after(Duration::from_secs(1))
            .into_response(),
        }
    }
}

struct Cached {
    key: StoredKey,
    /// When PostgreSQL last said this is the key.
    confirmed: Instant,
}

struct Inner {
    store: KeyStore,
    grace: Duration,
    refresh: Duration,
    known: RwLock<HashMap<String, Cached>>,
    unknown: RwLock<HashMap<String, Instant>>,
}

/// The key checker every gateway process holds. Cheap to clone.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("cached", &self.inner.known.read().map_or(0, |k| k.len()))
            .finish()
    }
}

impl Keys {
    /// Starts checking keys from `config`'s store: creates the table once
    /// PostgreSQL answers, and confirms the cached keys until `shutdown`.
    /// Never waits for PostgreSQL: requests are answered 503 until it is up.
    pub fn start(config: &KeysConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let store = config.store()?;
        let keys = Self {
            inner: Arc::new(Inner {
                store,
                grace: config.cache.grace,
                refresh: config.cache.refresh,
                known: RwLock::default(),
                unknown: RwLock::default(),
            }),
        };
        tokio::spawn(keys.clone().maintain(shutdown));
        Ok(keys)
    }

    async fn maintain(self, shutdown: CancellationToken) {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.inner.store.migrate().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %pipeline::telemetry::chain(e.as_ref()), "key table not ready; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.inner.refresh) => {}
            }
            self.confirm_cached().await;
        }
    }

    /// Re-reads every cached key in one query; forgets the unknown ones.
    async fn confirm_cached(&self) {
        self.inner
            .unknown
            .write()
            .expect("not poisoned")
            .retain(|_, at| at.elapsed() < self.inner.refresh);
        let ids: Vec<String> = self.known_ids();
        if ids.is_empty() {
            return;
        }
        match self.inner.store.find(&ids).await {
            Ok(found) => {
                let now = Instant::now();
                let mut found: HashMap<String, StoredKey> = found
                    .into_iter()
                    .map(|k| (k.principal.key_id.clone(), k))
                    .collect();
                let mut known = self.inner.known.write().expect("not poisoned");
                for id in ids {
                    match found.remove(&id) {
                        Some(key) => {
                            known.insert(
                                id,
                                Cached {
                                    key,
                                    confirmed: now,
                                },
                            );
                        }
                        None => {
                            known.remove(&id);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %pipeline::telemetry::chain(e.as_ref()), "cannot confirm the cached keys; they work until their grace ends");
            }
        }
    }

    fn known_ids(&self) -> Vec<String> {
        self.inner
            .known
            .read()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// Who presents `authorization` (the header's value), if the key holds.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, Denied> {
        let token = authorization
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(Denied::Unauthenticated)?;
        let presented = PresentedKey::parse(token).ok_or(Denied::Unauthenticated)?;
        let cached = {
            let known = self.inner.known.read().expect("not poisoned");
            known
                .get(&presented.key_id)
                .filter(|c| c.confirmed.elapsed() < self.inner.grace)
                .map(|c| c.key.clone())
        };
        let key = match cached {
            Some(key) => key,
            None => self.look_up(&presented.key_id).await?,
        };
        if key.revoked || !same_hash(&key.secret_sha256, &presented.secret_hash()) {
            return Err(Denied::Unauthenticated);
        }
        Ok(key.principal)
    }

    async fn look_up(&self, key_id: &str) -> Result<StoredKey, Denied> {
        let recently_unknown = self
            .inner
            .unknown
            .read()
            .expect("not poisoned")
            .get(key_id)
            .is_some_and(|at| at.elapsed() < self.inner.refresh);
        if recently_unknown {
            return Err(Denied::Unauthenticated);
        }
        let ids = [key_id.to_owned()];
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, self.inner.store.find(&ids))
            .await
            .map_err(|_| Denied::Unavailable)?
            .map_err(|e| {
                tracing::warn!(error = %pipeline::telemetry::chain(e.as_ref()), key_id, "cannot look the key up");
                Denied::Unavailable
            })?;
        match found.into_iter().next() {
            Some(key) => {
                self.inner.known.write().expect("not poisoned").insert(
                    key_id.to_owned(),
                    Cached {
                        key: key.clone(),
                        confirmed: Instant::now(),
                    },
                );
                Ok(key)
            }
            None => {
                let mut unknown = self.inner.unknown.write().expect("not poisoned");
                if unknown.len() >= MAX_UNKNOWN {
                    unknown.clear();
                }
                unknown.insert(key_id.to_owned(), Instant::now());
                Err(Denied::Unauthenticated)
            }
        }
    }
}

/// Middleware: lets a request through only with a key that carries `scope`
/// (or `admin`), and hands the handler its [`Principal`] as an extension.
/// Use with `axum::middleware::from_fn_with_state((keys, scope), clients::require)`.
pub async fn require(
    State((keys, scope)): State<(Keys, Scope)>,
    mut req: Request,
    next: Next,
) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match keys.authenticate(authorization).await {
        Ok(principal) if principal.may(scope) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(_) => Denied::Forbidden(scope).into_response(),
        Err(denied) => denied.into_response(),
    }
}

/// Middleware for an operator's views (the dashboard): the admin key, as
/// HTTP Basic (any user name, the key as the password) or as Bearer. Without
/// a good one, 401 with the Basic challenge, so a browser asks for it.
pub async fn require_operator(State(keys): State<Keys>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|raw| basic_password(raw).map_or_else(|| raw.to_owned(), |k| format!("Bearer {k}")));
    match keys.authenticate(presented.as_deref()).await {
        Ok(principal) if principal.may(Scope::Admin) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(_) => Denied::Forbidden(Scope::Admin).into_response(),
        Err(Denied::Unauthenticated) => {
            let mut res = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
                .detail("sign in with the admin key as the password (any user name), or send it as Authorization: Bearer")
                .into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"orders\", charset=\"UTF-8\""),
            );
            res
        }
        Err(denied) => denied.into_response(),
    }
}

/// The password of `Authorization: Basic <base64(user:password)>`.
fn basic_password(raw: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, encoded) = raw.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

#[cfg(test)]
mod basic_tests {
    use super::basic_password;

    #[test]
    fn the_basic_password_is_the_key() {
        // "admin:op_x" and ":op_x" (no user name).
        assert_eq!(
            basic_password("Basic YWRtaW46b3BfeA==").as_deref(),
            Some("op_x")
        );
        assert_eq!(basic_password("basic Om9wX3g=").as_deref(), Some("op_x"));
        assert_eq!(basic_password("Bearer op_x"), None);
        assert_eq!(basic_password("Basic !!"), None);
        assert_eq!(
            basic_password("Basic b3BfeA=="),
            None,
            "no colon: no password"
        );
    }
}
