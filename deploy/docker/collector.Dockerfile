# syntax=docker/dockerfile:1
# gpufleet collector image (`gpufleet serve`; the image also carries the ops CLI). Build from
# the repository root:
#   docker build -f deploy/docker/collector.Dockerfile -t gpufleet-collector .
#   docker run -p 50051:50051 -p 9400:9400 -v gpufleet-data:/var/lib/gpufleet gpufleet-collector
# docs/deploy.md covers Kubernetes (deploy/k8s/collector-statefulset.yaml).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gpufleet-cli \
    && install -D -m 0755 target/release/gpufleet /out/gpufleet \
    && install -d -m 0750 /out/data

# distroless/cc: glibc and libgcc, no shell, no package manager; SQLite is compiled in.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gpufleet /usr/bin/gpufleet
COPY --from=build --chown=65532:65532 /out/data /var/lib/gpufleet
USER 65532:65532
EXPOSE 50051 9400
VOLUME ["/var/lib/gpufleet"]
ENTRYPOINT ["/usr/bin/gpufleet"]
CMD ["serve"]
