# One image with all the services; docker-compose.yml picks the binary.
#
# The dependencies are built in a layer of their own, from the manifests,
# Cargo.lock and a stub for every target's root file; it is rebuilt only
# when one of those changes, not on every edit to the sources.

# The workspace's skeleton: every Cargo.toml (whatever the member list), the
# lock file, and a stub wherever a target's root file is, both the
# conventional places (src/lib.rs, src/main.rs, src/bin/, build.rs, examples/,
# tests/, benches/) and any path a manifest names. Its output changes only
# when one of those files comes or goes, so the next stage's copy of it, and
# the dependency build after that, come from the cache.
FROM rust:1.95-bookworm AS skeleton
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
WORKDIR /src
COPY . .
RUN mkdir /skeleton; \
    cp Cargo.lock /skeleton/; \
    for f in .cargo/config.toml .cargo/config rust-toolchain.toml rust-toolchain; do \
      if [ -f "$f" ]; then mkdir -p "/skeleton/$(dirname "$f")"; cp "$f" "/skeleton/$f"; fi; \
    done; \
    find . -name Cargo.toml -not -path './target/*' | while read -r manifest; do \
      dir=$(dirname "$manifest"); \
      mkdir -p "/skeleton/$dir"; \
      cp "$manifest" "/skeleton/$manifest"; \
      { \
        for f in "$dir"/src/lib.rs "$dir"/src/main.rs "$dir"/build.rs \
                 "$dir"/src/bin/*.rs "$dir"/src/bin/*/main.rs \
                 "$dir"/examples/*.rs "$dir"/examples/*/main.rs \
                 "$dir"/tests/*.rs "$dir"/tests/*/main.rs \
                 "$dir"/benches/*.rs "$dir"/benches/*/main.rs; do \
          if [ -f "$f" ]; then echo "$f"; fi; \
        done; \
        sed -n 's/^[[:space:]]*\(path\|build\)[[:space:]]*=[[:space:]]*"\([^"]*\.rs\)".*/\2/p' "$manifest" \
          | sed "s|^|$dir/|"; \
      } | sort -u | while read -r target; do \
        mkdir -p "/skeleton/$(dirname "$target")"; \
        case "$target" in \
          */lib.rs) : > "/skeleton/$target" ;; \
          *) echo 'fn main() {}' > "/skeleton/$target" ;; \
        esac; \
      done; \
    done

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The dependencies (and stub builds of the workspace's own crates).
COPY --from=skeleton /skeleton/ ./
RUN cargo build --release --locked --bins
# Then the real sources over the stubs. COPY keeps their modification times,
# which may be older than the stub build, and cargo would then take the stubs'
# output for up to date: touch them first.
COPY . .
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/api-gateway target/release/order-processor \
       target/release/notifier target/release/dashboard \
       target/release/order-history target/release/supplier /out/

FROM debian:bookworm-slim
# Not version-pinned: the point release's security fixes come in on rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pipeline \
 && useradd --system --uid 10001 --gid pipeline --no-create-home pipeline
COPY --from=build /out/ /usr/local/bin/
# Numeric, so that a runtime can tell it is not root (runAsNonRoot).
USER 10001:10001
# HEALTH_PORT: the port the health check asks (the service's own HTTP port;
# docker-compose.yml sets it for each service).
ENV LOG_FORMAT=json \
    HEALTH_PORT=8080
# api-gateway 8080, dashboard 8090, order-history 8095, supplier 8101,
# order-processor 9101, notifier 9102.
EXPOSE 8080 8090 8095 8101 9101 9102
# GET /health (200 while the service's dependencies answer, 503 otherwise)
# over bash's /dev/tcp: the image needs no HTTP client.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["bash", "-c", "exec 3<>\"/dev/tcp/127.0.0.1/${HEALTH_PORT:-8080}\" && printf 'GET /health HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r -t 4 status <&3 && [[ $status == *' 200 '* ]]"]
CMD ["api-gateway"]
