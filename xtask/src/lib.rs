//! Development tasks. `config_docs` renders every binary's settings, as its
//! `clap` declaration states them, into the Markdown of
//! `docs/configuration.md`: one table per binary, each knob with its flag,
//! environment variable, default and help. The declarations are the one
//! source; this page and `--help` are views of them.

use std::fmt::Write as _;

use clap::Command;
use pipeline::service::ServiceCli;

/// The binaries whose settings are documented, in the pipeline's order.
pub fn commands() -> Vec<Command> {
    vec![
        api_gateway::config::Cli::service_command(),
        order_processor::config::Cli::service_command(),
        notifier::config::Cli::service_command(),
        order_history::config::Cli::service_command(),
        supplier::config::Cli::service_command(),
        dashboard::config::Cli::service_command(),
    ]
}

/// `docs/configuration.md`, as the declarations say it.
pub fn config_docs() -> String {
    let mut out = String::from(
        "# Configuration\n\n\
         Generated from the binaries' declarations by `cargo xtask config-docs`; \
         do not edit by hand (a test fails when this page and the code differ). \
         Every setting is an environment variable and a flag (`REDIS_URL` is \
         `--redis-url`; `--help` shows the same text); a flag wins over the variable. A value \
         that does not parse stops the start with a message naming it; an \
         empty variable is a value, not \"unset\".\n\n\
         Settings shared by every service (broker, Redis, listener limits, \
         logs) repeat in each table: each binary reads its own.\n",
    );
    for mut command in commands() {
        command.build();
        let name = command.get_name().to_owned();
        let about = command
            .get_about()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let _ = write!(out, "\n## {name}\n\n{about}\n\n");
        let subcommands: Vec<_> = command
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
            .collect();
        if !subcommands.is_empty() {
            out.push_str("Subcommands:\n\n");
            for sub in subcommands {
                let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
                let _ = writeln!(out, "- `{name} {}`: {about}", sub.get_name());
            }
            out.push('\n');
        }
        out.push_str("| variable | flag | default | what it does |\n|---|---|---|---|\n");
        for arg in command.get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let env = env.to_string_lossy();
            let flag = arg
                .get_long()
                .map(|l| format!("`--{l}`"))
                .unwrap_or_default();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = match defaults.as_slice() {
                [] => "(unset)".to_owned(),
                [v] if v.is_empty() => "(empty)".to_owned(),
                values => format!("`{}`", values.join(",")),
            };
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
                .unwrap_or_default();
            let secret = if arg.is_hide_env_values_set() {
                ". Secret: never shown in `--help`, logs or `Debug`"
            } else {
                ""
            };
            let _ = writeln!(out, "| `{env}` | {flag} | {default} | {help}{secret} |");
        }
    }
    out
}
