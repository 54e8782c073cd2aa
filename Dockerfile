# syntax=docker/dockerfile:1
#
# flagtally container image.
#
#   docker build -t flagtally:local .            (BuildKit: the default builder since Docker 23)
#   docker run --rm -p 9464:9464 flagtally:local
#
# The binary comes from one of two stages, chosen by BINARY_FROM: `builder` (the
# default), a Rust toolchain stage that compiles the release binary (with librdkafka
# built from source by rdkafka-sys), or `prebuilt`, a binary already built, taken from
# the build context. A small Debian runtime stage holds only the binary, its
# configuration and CA certificates. BuildKit and `podman build` build only the stages
# the image needs: the default never reads a prebuilt binary, `prebuilt` never pulls the
# Rust image. The base images are build arguments too (a mirror, a local image):
#
#   mkdir -p ctx/config && cp target/release/flagtally ctx/ && cp config/flagtally.toml ctx/config/
#   docker build --build-arg BINARY_FROM=prebuilt -f Dockerfile -t flagtally:local ctx
#
# (a context of its own: the repository's .dockerignore leaves target/ out).
# scripts/image.sh builds it that way with podman and runs it against a test broker;
# scripts/check-packaging.sh checks this file offline.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim
ARG BINARY_FROM=builder

############################################################################ builder
FROM ${RUST_IMAGE} AS builder

# rdkafka-sys builds the bundled librdkafka with CMake (the `cmake-build` feature), and
# with it OpenSSL (`ssl-vendored`: perl and make), libcurl (`curl-static`, for OIDC
# token fetch) and zstd from source: a C/C++ toolchain, cmake, make, perl, pkg-config
# and `patch` (rdkafka-sys patches the sources before building). `libz` feature:
# libz-sys links the system zlib when pkg-config finds zlib1g-dev (else it compiles its
# own copy). The rust image already has most of these; listing them keeps the build
# independent of what the base image happens to ship.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential cmake perl pkg-config zlib1g-dev patch python3 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Only what `cargo build --release --bin flagtally` reads, so edits to README, docs/, tests,
# scripts or fuzz targets do not invalidate this layer:
#   Cargo.toml/Cargo.lock  the manifest and the pinned dependency graph (--locked)
#   src/                   the library and the binary
#   benches/               Cargo.toml declares [[bench]] decode_window / noop_consumer;
#                          cargo refuses a manifest whose declared targets are missing,
#                          even when building only the binary
#   schemas/               include_str!'d by src/emit/avro.rs and src/decode/native.rs
#   config/                include_str!'d by a config test (cheap; keeps it safe if
#                          non-test code starts embedding the example too)
# tests/ and examples/ are auto-discovered targets: absent directories are fine.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY schemas ./schemas
COPY config ./config

# BuildKit cache mounts keep the crates.io index/downloads and the target directory
# between builds, so a source change recompiles only flagtally itself (and a first
# build compiles librdkafka once). The target dir is a cache mount, not part of the
# layer, so the binary is copied out to /out within the same RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin flagtally \
 && install -D -m 0755 target/release/flagtally /out/flagtally

########################################################################### prebuilt
# BINARY_FROM=prebuilt: `flagtally` from the root of the build context, as
# `cargo build --release --bin flagtally` made it on Debian bookworm (or on a system
# whose glibc is no newer than bookworm's 2.36: the runtime stage's ldd check below
# fails the build otherwise).
FROM scratch AS prebuilt
COPY flagtally /out/flagtally

# The stage the runtime copies the binary from.
FROM ${BINARY_FROM} AS binary

############################################################################ runtime
# debian:bookworm-slim rather than distroless/cc: the binary links the system libz
# (zlib1g is in bookworm-slim, not in distroless/cc-debian12), and bash gives the
# HEALTHCHECK below a way to speak HTTP without adding curl. Another RUNTIME_IMAGE must
# be Debian bookworm as well (the builder's glibc; apt-get, groupadd and useradd below).
FROM ${RUNTIME_IMAGE} AS runtime

ARG RUNTIME_IMAGE

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="flagtally" \
      org.opencontainers.image.description="Turns raw feature-flag evaluation events on Kafka into LaunchDarkly-shaped summaries, feature events and warehouse rows" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

# ca-certificates: TLS to brokers (kafka.security_protocol ssl or sasl_ssl) that have no
# kafka.tls_ca_file.
# A fixed non-root uid/gid 10001 (no login shell, no home) so volume ownership is
# predictable; /var/lib/flagtally is its writable working directory (file sinks).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 flagtally \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin flagtally \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/flagtally

COPY --from=binary /out/flagtally /usr/local/bin/flagtally
# 0640 root:flagtally: only the service's group reads the configuration (secrets and
# all); a config mounted over it should be the same.
COPY --chown=0:10001 --chmod=0640 config/flagtally.toml /etc/flagtally/flagtally.toml

# Fail the image build, not the first container start, if a shared library the
# binary needs is missing from this base image, or if the binary cannot run at all.
RUN if ldd /usr/local/bin/flagtally | grep 'not found'; then exit 1; fi \
 && /usr/local/bin/flagtally --version

# The admin HTTP server (/metrics, /healthz, /readyz) must listen on all interfaces
# inside a container to be reachable through a published port; RUST_LOG sets the
# log filter (logs go to stderr). Both can be overridden with `docker run -e`.
ENV RUST_LOG=info \
    FLAGTALLY__ADMIN__LISTEN=0.0.0.0:9464

USER 10001:10001
WORKDIR /var/lib/flagtally
EXPOSE 9464

# Liveness over the admin port with bash's /dev/tcp (no curl/wget in this image):
# healthy when GET /healthz answers 200. The port is fixed here: keep it in step with
# FLAGTALLY__ADMIN__LISTEN if you change that. start-period covers broker connect and
# checkpoint restore.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r -t 4 status <&3 && [[ $status == HTTP/1.[01]' 200'* ]]"]

# SIGTERM (docker stop) starts a drain bounded by processing.shutdown_deadline (30s by
# default): give the container more than that, e.g. `docker stop -t 40` or compose's
# stop_grace_period. Exec form, so flagtally is PID 1 and receives the signal itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["flagtally"]
CMD ["run", "--config", "/etc/flagtally/flagtally.toml"]
