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
# Touch so cargo rebuilds our crate rather than reusing the stub.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p holdfast --bin holdfast

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin holdfast
COPY --from=build /src/target/release/holdfast /usr/local/bin/holdfast
USER 10001:10001
ENV LISTEN_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=2s --retries=3 CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["/usr/local/bin/holdfast"]
CMD ["serve"]
