# order-pipeline — see README.md.
.PHONY: up down status deps test lint fmt replay-dlq

STACK := scripts/stack.sh

## Start Redis, a 3-node RabbitMQ cluster and the four services (release build).
up:
	@bash $(STACK) up

## Stop everything `make up` started (by pid; nothing else is touched).
down:
	@bash $(STACK) down

status:
	@bash $(STACK) status

## Redis and the RabbitMQ cluster only (what the tests need).
deps:
	@bash $(STACK) deps

## Bring the dependencies up if needed and run every test.
test: deps
	cargo nextest run --workspace

## Format check, clippy with warnings as errors, compose file validation.
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	docker-compose -f docker-compose.yml config --quiet

fmt:
	cargo fmt --all

## Move messages parked in orders.dlq back to orders.queue (after fixing the cause).
replay-dlq:
	cargo run --release --quiet -p order-processor -- replay-dlq
