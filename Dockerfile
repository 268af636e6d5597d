# syntax=docker/dockerfile:1
# Every binary of the system in one image.
#   docker build -t darkstores-orchestrator .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e REDIS_URL=... -e AMQP_URL=... darkstores-orchestrator
# It runs `darkstores` (the API, the saga engine and every worker in one process) unless told
# otherwise: `orchestrator serve` (API and engine), a participant's worker (`warehouse-worker`,
# `inventory-worker`, `payment-worker`, `supplier-worker`), or `orchestrator openapi`.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY orchestrator orchestrator
COPY participants participants
COPY migrations migrations
COPY .sqlx .sqlx
COPY openapi openapi
# sqlx's query! macros check against the committed .sqlx/ metadata: no database at build time.
ENV SQLX_OFFLINE=true
# Line numbers in a panic's backtrace, which the lean local release profile leaves out.
ENV CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
# target/ lives in a cache mount, so the binaries are copied out within the same RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && find target/release -maxdepth 1 -type f -perm -u+x -exec cp {} /out/ \;

FROM debian:bookworm-slim
# ca-certificates follows the base image's release: pinning its version only breaks builds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=builder /out/ /usr/local/bin/
ENV HTTP_ADDR=0.0.0.0:8080 \
    RUST_LOG=info
USER 10001:10001
EXPOSE 8080
CMD ["darkstores"]
