//! `cargo xtask config-docs`: writes docs/configuration.md.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "config-docs" => {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
            std::fs::write(&path, xtask::config_docs())?;
            println!("wrote {}", path.display());
            Ok(())
        }
        _ => anyhow::bail!("usage: cargo xtask config-docs"),
    }
}
