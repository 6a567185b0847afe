# syntax=docker/dockerfile:1
# gpufleet-agent image. Build from the repository root:
#   docker build -f deploy/docker/agent.Dockerfile -t gpufleet-agent .
# Run on a GPU host with the NVIDIA container toolkit, which mounts the driver's
# libnvidia-ml.so.1 and the /dev/nvidia* nodes into the container (NVIDIA_* below):
#   docker run --runtime=nvidia --network=host -v /var/lib/gpufleet-agent:/var/lib/gpufleet-agent \
#     gpufleet-agent run --collector http://collector.example:50051
# docs/deploy.md covers Kubernetes (deploy/k8s/agent-daemonset.yaml).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gpufleet-agent \
    && install -D -m 0755 target/release/gpufleet-agent /out/gpufleet-agent

# debian (not distroless): the toolkit's hook runs the image's ldconfig after mounting the
# driver libraries, and distroless has none.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/gpufleet-agent --shell /usr/sbin/nologin gpufleet-agent \
    && install -d -o gpufleet-agent -g gpufleet-agent -m 0750 /var/lib/gpufleet-agent
COPY --from=build /out/gpufleet-agent /usr/bin/gpufleet-agent
# NVML needs only the "utility" driver capability (libnvidia-ml, nvidia-smi), on every GPU.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility \
    GPUFLEET_STATE_DIR=/var/lib/gpufleet-agent
USER 10001:10001
VOLUME ["/var/lib/gpufleet-agent"]
ENTRYPOINT ["/usr/bin/gpufleet-agent"]
CMD ["run"]
