//! docs/configuration.md is what the declarations say, and says all of it.

#[test]
fn the_configuration_reference_matches_the_declarations() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let written = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        written == xtask::config_docs(),
        "docs/configuration.md is stale: run `cargo xtask config-docs` and commit it"
    );
}

#[test]
fn every_knob_has_a_variable_a_default_or_a_reason_and_help() {
    for mut command in xtask::commands() {
        command.build();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let env = arg.get_env();
            assert!(
                env.is_some(),
                "{}: {id} has no environment variable",
                command.get_name()
            );
            assert!(
                arg.get_help().is_some(),
                "{}: {id} has no help",
                command.get_name()
            );
        }
    }
}
