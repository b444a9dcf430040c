//! What every service does at start-up and shutdown, in one place.
//!
//! [`Base::start`] reads the shared configuration, installs the metrics
//! recorder, connects to the broker (declaring the topology, retrying until a
//! node answers or a signal arrives), creates the Redis pool and binds the HTTP
//! listener, in that order: a service is only reachable once it can work.

use std::future::Future;
use std::net::SocketAddr;

use crate::store::Redis;
use anyhow::Context;
use axum::Router;
use lapin::message::Delivery;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::amqp::{Broker, ConsumeOptions, Disposition, consume};
use crate::config::{BrokerConfig, RedisConfig};
use crate::http::{Limits, Ops, ops_router};
use crate::keys::Keys;

/// A started service: connected, bound, not yet serving.
pub struct Base {
    pub service: &'static str,
    pub broker: Broker,
    pub pool: Redis,
    pub keys: Keys,
    pub listener: TcpListener,
    pub limits: Limits,
    pub shutdown: CancellationToken,
}

impl Base {
    pub async fn start(
        service: &'static str,
        addr: SocketAddr,
        broker: BrokerConfig,
        redis: &RedisConfig,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        crate::telemetry::prometheus();
        let broker = Broker::connect(broker, shutdown.clone())
            .await
            .context("connecting to the broker")?;
        let pool = crate::store::connect(redis).context("creating the Redis pool")?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(service, addr = %listener.local_addr()?, "listening");
        Ok(Self {
            service,
            broker,
            pool,
            keys: Keys::new(redis.key_prefix.clone()),
            listener,
            limits,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// `/`, `/health` and `/metrics` for this service.
    pub fn ops_router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        ops_router(Ops {
            service: self.service,
            pool: self.pool.clone(),
            broker: self.broker.clone(),
        })
    }

    /// `/health` alone, for a service with its own `/` and `/metrics`.
    pub fn health_router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        crate::http::health_router(Ops {
            service: self.service,
            pool: self.pool.clone(),
            broker: self.broker.clone(),
        })
    }

    /// A worker's whole life: consumes `options.queue` with `handler` (a
    /// batch of deliveries in, one disposition each out; see
    /// [`crate::amqp::consume`]) and serves `/`, `/health` and `/metrics`
    /// until shutdown; deliveries in hand are settled before the broker link
    /// closes.
    pub async fn run_worker<H, Fut>(self, options: ConsumeOptions, handler: H) -> anyhow::Result<()>
    where
        H: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Disposition>> + Send + 'static,
    {
        let consumer = tokio::spawn(consume(
            self.broker.clone(),
            options,
            self.shutdown.clone(),
            handler,
        ));
        let router = self.ops_router();
        self.serve_then(router, async {
            if let Err(e) = consumer.await {
                tracing::error!(error = %e, "the consumer task panicked");
            }
        })
        .await
    }

    /// Serves `router` until shutdown, lets in-flight requests finish, then
    /// closes the broker link cleanly.
    pub async fn serve(self, router: Router) -> anyhow::Result<()> {
        self.serve_then(router, std::future::ready(())).await
    }

    /// Like [`Base::serve`], but awaits `drain` (a worker finishing its
    /// in-flight messages) after the server stops and before the broker link
    /// closes.
    pub async fn serve_then(
        self,
        router: Router,
        drain: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let router = router.route_layer(axum::middleware::from_fn(crate::http::track_requests));
        crate::http::serve(self.listener, router, self.shutdown, &self.limits).await?;
        drain.await;
        self.broker.close().await;
        tracing::info!(service = self.service, "stopped");
        Ok(())
    }
}
