# syntax=docker/dockerfile:1
#
# airgate controller image: a static musl binary on an empty base.
#
#   docker build -t airgate/airgate:$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1) .
#
# The builder is Alpine because its Rust toolchain targets musl natively, so the
# binary is fully static (no glibc, no loader) and runs on `scratch`. For another
# CPU architecture build on that architecture (e.g. `docker buildx build
# --platform linux/arm64`); ring compiles its C/asm parts with Alpine's gcc.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and compiled dependencies between builds;
# the binary is copied out because the target dir mount vanishes after RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin airgate \
    && cp target/release/airgate /airgate \
    && /airgate --version

FROM scratch
# Roots for https upstreams and auth hooks. In-cluster API access uses the
# service-account CA instead.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /airgate /airgate
# 65532 is the conventional "nonroot" uid/gid; numeric so runAsNonRoot can verify it.
USER 65532:65532
# Unprivileged ports: the Service maps 80/443 to these.
EXPOSE 8080 8443 9090
ENTRYPOINT ["/airgate"]
CMD ["controller"]
