//! A real processor in-process on port 0, a publisher for `orders.direct`, and
//! Redis accessors, all under one test's own topology and key prefix.

use std::sync::Arc;

use order_processor::{AfterCommit, Processor, ProcessorConfig};
use pipeline::amqp::Broker;
use pipeline::shutdown::CancellationToken;

pub use testkit::{ProxyMode, TcpProxy, World, eventually};

pub fn test_config(prefix: &str) -> ProcessorConfig {
    testkit::configs::processor(prefix)
}

pub struct RunningProcessor {
    pub addr: std::net::SocketAddr,
    pub broker: Broker,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningProcessor {
    pub async fn start(config: ProcessorConfig) -> Self {
        Self::start_with(config, None).await
    }

    pub async fn start_with(config: ProcessorConfig, hook: Option<AfterCommit>) -> Self {
        let shutdown = CancellationToken::new();
        let processor = Processor::build_with(config, shutdown.clone(), hook)
            .await
            .expect("processor starts");
        let addr = processor.local_addr();
        let broker = processor.broker().clone();
        let task = tokio::spawn(processor.run_until_stopped());
        Self {
            addr,
            broker,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The processor's settings for a test's world.
pub trait ProcessorWorld {
    fn config(&self) -> ProcessorConfig;
}

impl ProcessorWorld for World {
    fn config(&self) -> ProcessorConfig {
        test_config(&self.prefix)
    }
}

/// A hook that runs `f` once, on the first committed order.
pub fn once_hook<F, Fut>(f: F) -> AfterCommit
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = Arc::new(f);
    Arc::new(move |_order| {
        let (fired, f) = (fired.clone(), f.clone());
        Box::pin(async move {
            if !fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
                f().await;
            }
        })
    })
}
