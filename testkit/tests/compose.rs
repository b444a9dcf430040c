//! docker-compose.yml keeps Redis and AMQP inside the compose network and takes
//! every credential from the environment.

const COMPOSE: &str = include_str!("../../docker-compose.yml");

/// The lines of one service's definition.
fn service_block(name: &str) -> String {
    let header = format!("  {name}:");
    let mut lines = COMPOSE.lines().skip_while(|l| *l != header);
    assert!(
        lines.next().is_some(),
        "service {name} in docker-compose.yml"
    );
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn redis_and_amqp_are_not_published() {
    for name in ["redis", "rabbitmq1", "rabbitmq2", "rabbitmq3"] {
        let block = service_block(name);
        assert!(!block.is_empty(), "{name} has a definition");
        assert!(
            !block.contains("ports:"),
            "{name} publishes a port:\n{block}"
        );
    }
}

#[test]
fn published_ports_are_bound_to_loopback() {
    let ports: Vec<&str> = COMPOSE
        .lines()
        .filter(|l| l.trim_start().starts_with("ports:"))
        .collect();
    assert!(!ports.is_empty());
    for line in ports {
        assert!(line.contains("\"127.0.0.1:"), "not on loopback: {line}");
    }
}

#[test]
fn credentials_come_from_the_environment() {
    for needle in [
        "guest:guest",
        "pipeline:pipeline",
        "order-pipeline-cluster-cookie",
    ] {
        assert!(!COMPOSE.contains(needle), "a fixed credential: {needle}");
    }
    for var in [
        "RABBITMQ_USER",
        "RABBITMQ_PASSWORD",
        "RABBITMQ_COOKIE",
        "REDIS_PASSWORD",
    ] {
        assert!(
            COMPOSE.contains(&format!("${{{var}:?")),
            "{var} is required"
        );
    }
    assert!(
        COMPOSE.contains("--requirepass"),
        "Redis asks for a password"
    );
}
