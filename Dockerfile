# One image with all the services; docker-compose.yml picks the binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/api-gateway target/release/order-processor \
       target/release/notifier target/release/dashboard \
       target/release/order-history target/release/supplier /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 pipeline
COPY --from=build /out/ /usr/local/bin/
USER pipeline
ENV LOG_FORMAT=json
