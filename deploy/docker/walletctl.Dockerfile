# walletctl, for the compose file's one-shot `migrate`. Build from the
# repository root:
#   docker build -f deploy/docker/walletctl.Dockerfile -t wallet/walletctl .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p walletctl --bin walletctl

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 wallet
COPY --from=build /src/target/release/walletctl /usr/local/bin/walletctl
USER wallet
ENTRYPOINT ["/usr/local/bin/walletctl"]
