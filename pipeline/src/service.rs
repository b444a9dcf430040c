//! The one service shell: what every service does at start-up and shutdown.
//!
//! [`Base::start`] takes the shared settings ([`ServiceConfig`]), installs
//! the metrics recorder, connects to the broker (declaring the topology,
//! retrying until a node answers or a signal arrives), sets up the Redis
//! connection and binds the HTTP listener, in that order: a service is only
//! reachable once it can work. A worker service (the processor, the
//! notifier) is a [`Worker`] handler run by [`WorkerService`]: it supplies its
//! handler and its own settings, the shell does the rest.

use std::future::Future;
use std::net::SocketAddr;

use crate::store::Redis;
use anyhow::Context;
use axum::Router;
use lapin::message::Delivery;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::amqp::{Broker, ConsumeOptions, Disposition, Topology, consume};
use crate::config::{BrokerConfig, ConfigError, RedisConfig, listen_addr};
use crate::http::{Limits, Ops, ops_router};
use crate::keys::Keys;

/// What every service is configured with: where it listens, the broker,
/// Redis and the listener's limits. Each service names its own listen
/// address variable ([`ServiceCli::LISTEN`]).
#[derive(Clone, Debug, clap::Args)]
pub struct ServiceConfig {
    /// Where the service listens (its API, `/health` and `/metrics`).
    #[arg(id = "ADDR", long = "addr", env = "ADDR", default_value = "127.0.0.1:0", value_parser = listen_addr)]
    pub addr: SocketAddr,
    #[command(flatten)]
    pub broker: BrokerConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub http: Limits,
}

/// A service binary's command line: its settings, the variable that names
/// its listen address, and the checks no single value can make. `read` is
/// how a `main` gets its settings, `service_command` what `--help` and
/// `docs/configuration.md` show.
pub trait ServiceCli: clap::CommandFactory + clap::FromArgMatches + Sized {
    /// The listen address's variable and default: `("PROCESSOR_ADDR",
    /// "127.0.0.1:9101")`.
    const LISTEN: (&'static str, &'static str);

    /// What no single value can say (one setting against another).
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// The command line, with this service's listen address variable.
    fn service_command() -> clap::Command {
        let (env, default) = Self::LISTEN;
        Self::command().mut_arg("ADDR", |a| a.env(env).default_value(default))
    }

    /// Reads the command line and the environment; exits with clap's
    /// message on a bad value or a bad combination of values.
    fn read() -> Self {
        let matches = Self::service_command().get_matches();
        let cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let Err(e) = cli.validate() {
            Self::service_command()
                .error(clap::error::ErrorKind::ValueValidation, e)
                .exit();
        }
        cli
    }
}

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
        config: &ServiceConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        Self::start_with(service, config, config.broker.clone(), shutdown).await
    }

    /// Like [`Base::start`], with broker settings of the service's own (the
    /// quote queues it declares).
    pub async fn start_with(
        service: &'static str,
        config: &ServiceConfig,
        mut broker: BrokerConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        crate::telemetry::prometheus();
        if broker.connection_name.is_empty() {
            broker.connection_name = service.to_owned();
        }
        let broker = Broker::connect(broker, shutdown.clone())
            .await
            .with_context(|| format!("starting {service}: connecting to the broker"))?;
        let pool = crate::store::connect(&config.redis)
            .with_context(|| format!("starting {service}: setting up Redis"))?;
        let addr = config.addr;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("starting {service}: binding {addr}"))?;
        tracing::info!(service, addr = %listener.local_addr()?, "listening");
        Ok(Self {
            service,
            broker,
            pool,
            keys: Keys::new(config.redis.key_prefix.clone()),
            listener,
            limits: config.http.clone(),
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

    /// `/` and `/metrics` alone, for a service that guards them.
    pub fn info_router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        crate::http::info_router(self.service)
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
                tracing::error!(error = %crate::telemetry::chain(&e), "the consumer task panicked");
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

/// A worker's handler: what it consumes and what it does with a batch of
/// deliveries. [`WorkerService`] does everything else.
pub trait Worker: Clone + Send + Sync + 'static {
    /// The service's name (logs, metrics, the broker's consumer list).
    const NAME: &'static str;
    /// The service's whole configuration.
    type Config: Send;
    /// A test seam the handler is built with (`()` if none).
    type Hook: Send;

    /// The shared part of the configuration.
    fn service(config: &Self::Config) -> &ServiceConfig;
    /// Deliveries in flight at once, and the most handed over in one batch.
    fn consume(config: &Self::Config) -> (u16, usize);
    /// The queue it consumes.
    fn queue(topology: &Topology) -> String;
    /// The handler, over the started service's connections.
    fn new(base: &Base, config: Self::Config, hook: Option<Self::Hook>) -> anyhow::Result<Self>;
    /// A batch of deliveries in, one disposition each out (see
    /// [`crate::amqp::consume`]).
    fn handle(&self, batch: Vec<Delivery>) -> impl Future<Output = Vec<Disposition>> + Send;
}

/// A worker service that is connected and bound, ready to run.
pub struct WorkerService<W> {
    base: Base,
    worker: W,
    prefetch: u16,
    batch: usize,
}

impl<W: Worker> WorkerService<W> {
    pub async fn build(config: W::Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Self::build_with(config, shutdown, None).await
    }

    /// Like [`WorkerService::build`], with the handler's test seam.
    pub async fn build_with(
        config: W::Config,
        shutdown: CancellationToken,
        hook: Option<W::Hook>,
    ) -> anyhow::Result<Self> {
        let base = Base::start(W::NAME, W::service(&config), shutdown).await?;
        let (prefetch, batch) = W::consume(&config);
        let worker = W::new(&base, config, hook)?;
        Ok(Self {
            base,
            worker,
            prefetch,
            batch,
        })
    }

    /// The service's broker handle (tests break its link on purpose).
    pub fn broker(&self) -> &Broker {
        &self.base.broker
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.base.local_addr()
    }

    /// Consumes and serves until shutdown; in-flight deliveries finish and
    /// are settled before the broker link closes.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let options = ConsumeOptions {
            queue: W::queue(self.base.broker.topology()),
            prefetch: self.prefetch,
            batch: self.batch,
            tag: format!("{}-{}", W::NAME, std::process::id()),
        };
        let worker = self.worker;
        self.base
            .run_worker(options, move |batch| {
                let worker = worker.clone();
                async move { worker.handle(batch).await }
            })
            .await
    }
}
