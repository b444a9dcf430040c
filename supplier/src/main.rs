//! supplier binary.
//!
//! ```text
//! supplier              answer quote requests on quotes.<SUPPLIER_ID> until SIGINT/SIGTERM
//! supplier seed-demo    write the demo catalogs of acme, globex and initech where absent
//! ```

use pipeline::config::RedisConfig;
use supplier::{Supplier, SupplierConfig};

const USAGE: &str = "usage: supplier [seed-demo]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _log = pipeline::telemetry::init("supplier")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {
            let config = SupplierConfig::from_env()?;
            let shutdown = pipeline::shutdown::on_signal();
            Supplier::build(config, shutdown)
                .await?
                .run_until_stopped()
                .await
        }
        ["seed-demo"] => {
            let redis = RedisConfig::from_env()?;
            let pool = pipeline::store::connect(&redis)?;
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
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => anyhow::bail!(USAGE),
    }
}
