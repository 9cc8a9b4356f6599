# syntax=docker/dockerfile:1
# Multi-stage build: compile with the Rust toolchain, ship a small non-root runtime image.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Cache dependencies: build stub crates against the real manifests first. The workspace also
# lists the load generator, so its manifest must be there (it is not built into the image).
COPY Cargo.toml Cargo.lock ./
COPY tools/loadgen/Cargo.toml tools/loadgen/Cargo.toml
RUN mkdir -p src tools/loadgen/src \
    && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > tools/loadgen/src/main.rs \
    && cargo build --release --locked -p holdfast \
    && rm -rf src
COPY src ./src
COPY migrations ./migrations
# The checked queries compile against the query data in .sqlx/, never against a database.
COPY .sqlx ./.sqlx
ENV SQLX_OFFLINE=true
# Touch so cargo rebuilds our crate rather than reusing the stub.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p holdfast --bin holdfast

# No packages are installed in the runtime image: holdfast speaks plain TCP to Postgres and Redis
# (put TLS in a sidecar or the network), and `holdfast healthcheck` replaces curl.
FROM debian:bookworm-slim AS runtime
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin holdfast
COPY --from=build /src/target/release/holdfast /usr/local/bin/holdfast
USER 10001:10001
ENV LISTEN_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
# SIGTERM starts the drain (/ready 503 for SHUTDOWN_DRAIN_SECONDS), then in-flight work finishes.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --retries=3 CMD ["/usr/local/bin/holdfast", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/holdfast"]
CMD ["serve"]
