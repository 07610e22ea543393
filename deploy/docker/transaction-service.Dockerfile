# The transaction service. Build from the repository root:
#   docker build -f deploy/docker/transaction-service.Dockerfile -t wallet/transaction-service .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p wallet-server --bin transaction-service

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 wallet
COPY --from=build /src/target/release/transaction-service /usr/local/bin/transaction-service
USER wallet
ENTRYPOINT ["/usr/local/bin/transaction-service"]
