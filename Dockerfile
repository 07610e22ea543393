# Any binary of the workspace, chosen by BIN: a service
# (transaction-service, wallet-service, ledger-service) or walletctl.
# Build from the repository root:
#   docker build --build-arg BIN=wallet-service -t wallet/wallet-service .
# docker-compose.yml builds every service from this file.
#
# The dependencies are compiled in a layer of their own from the manifests
# and the lock file alone, with empty sources in place of the workspace's
# crates: a change to the sources rebuilds only the workspace's crates.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src

# 1. The manifests of every workspace member (tests/tests/compose.rs checks
#    that none is missing) and the lock file.
COPY Cargo.toml Cargo.lock ./
COPY wallet-core/Cargo.toml wallet-core/
COPY wallet-core-postgres/Cargo.toml wallet-core-postgres/
COPY wallet-core-kafka/Cargo.toml wallet-core-kafka/
COPY wallet-sim/Cargo.toml wallet-sim/
COPY apps/wallet-http/Cargo.toml apps/wallet-http/
COPY apps/transaction-service/Cargo.toml apps/transaction-service/
COPY apps/wallet-service/Cargo.toml apps/wallet-service/
COPY apps/ledger-service/Cargo.toml apps/ledger-service/
COPY apps/walletctl/Cargo.toml apps/walletctl/
COPY apps/wallet-server/Cargo.toml apps/wallet-server/
COPY examples/embedded-transfer/Cargo.toml examples/embedded-transfer/
COPY examples/shop-orders/Cargo.toml examples/shop-orders/
COPY tests/Cargo.toml tests/

# 2. Empty sources for each member, the dependencies of every binary
#    compiled, then the empty sources removed again.
COPY deploy/docker/stub-sources.sh deploy/docker/
RUN sh deploy/docker/stub-sources.sh create \
    && cargo build --release --locked -p wallet-server -p walletctl \
    && sh deploy/docker/stub-sources.sh remove

# 3. The real sources (see .dockerignore), made newer than what step 2
#    compiled from the empty ones, and the one binary.
COPY . .
ARG BIN=transaction-service
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin "$BIN" \
    && cp "target/release/$BIN" /usr/local/bin/

FROM debian:bookworm-slim
ARG BIN=transaction-service
# curl: the compose file's health checks ask each service's /readyz.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home wallet
COPY --from=build /usr/local/bin/${BIN} /usr/local/bin/${BIN}
ENV WALLET_BIN=${BIN}
USER wallet
# The binary by its own name, with the container's arguments.
ENTRYPOINT ["/bin/sh", "-c", "exec \"/usr/local/bin/$WALLET_BIN\" \"$@\"", "--"]
