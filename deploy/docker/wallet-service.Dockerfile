# The wallet service. Build from the repository root:
#   docker build -f deploy/docker/wallet-service.Dockerfile -t wallet/wallet-service .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p wallet-server --bin wallet-service

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 wallet
COPY --from=build /src/target/release/wallet-service /usr/local/bin/wallet-service
USER wallet
ENTRYPOINT ["/usr/local/bin/wallet-service"]
