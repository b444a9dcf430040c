# order-pipeline — see README.md.
.PHONY: lint-tools up down status deps nextest test lint fmt replay-dlq chaos load bench

STACK := scripts/stack.sh

## Start Redis, PostgreSQL, a 3-node RabbitMQ cluster and the services
## (release build; order-history as two replicas; three suppliers, acme,
## globex and initech, on :8101-8103).
up:
	@bash $(STACK) up

## Stop everything `make up` started (by pid; nothing else is touched).
down:
	@bash $(STACK) down

status:
	@bash $(STACK) status

## Redis, PostgreSQL and the RabbitMQ cluster only (what the tests need).
deps:
	@bash $(STACK) deps

## Bring the dependencies up if needed and run every test.
test: deps nextest
	cargo nextest run --workspace

## cargo-nextest, installed from crates.io when missing.
nextest:
	@command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

## The cargo tools `make lint` runs, pinned; installed once when missing.
lint-tools:
	@command -v cargo-machete >/dev/null || cargo install --locked cargo-machete@0.9.2
	@command -v cargo-deny >/dev/null || cargo install --locked cargo-deny@0.20.2

## Format check, clippy with warnings as errors, unused dependencies
## (cargo-machete), licenses, banned and duplicate crates and their sources
## (cargo-deny, deny.toml; no advisories: there is no advisory database
## offline), compose file validation, the GitHub workflows' supply-chain
## audit (zizmor, pinned in scripts/tools-requirements.txt).
lint: lint-tools
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo machete
	cargo fetch --locked --quiet
	cargo deny --offline check licenses bans sources
	docker-compose --env-file .env.example -f docker-compose.yml config --quiet
	bash scripts/tools.sh zizmor --offline .github/workflows/

fmt:
	cargo fmt --all

## Move parked messages back to their work queue (after fixing the cause):
## QUEUE=orders (orders.dlq -> orders.queue, the default) or QUEUE=notifier.
QUEUE ?= orders
replay-dlq:
	@case "$(QUEUE)" in \
	  orders|orders.dlq) cargo run --release --quiet -p order-processor -- replay-dlq ;; \
	  notifier|notifier.dlq) cargo run --release --quiet -p notifier -- replay-dlq ;; \
	  *) echo "QUEUE must be orders or notifier, got '$(QUEUE)'" >&2; exit 2 ;; \
	esac

## The long chaos scenarios (T1-T9 of reliability.md, 20,000 orders each).
chaos: deps
	cargo build --bins
	CHAOS_ORDERS=$${CHAOS_ORDERS:-20000} cargo nextest run -p loadtest --test chaos --no-capture

## Load the running stack (`make up`) and print the ledger; ARGS="--orders 100000".
load:
	cargo run --release -q -p loadtest --bin loadtest -- $(ARGS)

## Measure the running stack (`make up`) and rewrite docs/performance.md; ORDERS=100000.
bench:
	cargo run --release -q -p loadtest --bin bench
