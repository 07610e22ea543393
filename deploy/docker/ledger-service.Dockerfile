# The ledger service. Build from the repository root:
#   docker build -f deploy/docker/ledger-service.Dockerfile -t wallet/ledger-service .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p wallet-server --bin ledger-service

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 wallet
COPY --from=build /src/target/release/ledger-service /usr/local/bin/ledger-service
USER wallet
ENTRYPOINT ["/usr/local/bin/ledger-service"]
