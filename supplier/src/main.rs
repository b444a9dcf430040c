//! supplier binary: `supplier --help` lists every setting.

use pipeline::service::ServiceCli;
use supplier::Supplier;
use supplier::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::read();
    let _log = pipeline::telemetry::init("supplier", &cli.log)?;
    match cli.command {
        None => {
            let shutdown = pipeline::shutdown::on_signal();
            Supplier::build(cli.config, shutdown)
                .await?
                .run_until_stopped()
                .await
        }
        Some(Command::SeedDemo) => {
            let redis = &cli.config.service.redis;
            let pool = pipeline::store::connect(redis)?;
            let keys = pipeline::keys::Keys::new(redis.key_prefix.clone());
            for id in quotes::DEMO_SUPPLIERS {
                let id = pipeline::domain::SupplierId::parse(id)?;
                let written = supplier::seed_demo_catalog(&pool, &keys, &id).await?;
                println!(
                    "{}: {}",
                    keys.catalog(&id),
                    if written {
                        "seeded"
                    } else {
                        "already there, left as it is"
                    }
                );
            }
            Ok(())
        }
    }
}
