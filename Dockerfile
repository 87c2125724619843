# sweeper worker image: the binary plus the libtorch it links against (PyPI torch
# 2.11.0, CUDA-enabled), on a CUDA-capable base.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile Cargo.toml Cargo.lock build.rs rustfmt.toml ./
RUN make setup VENV=/opt/venv
COPY src src
COPY migrations migrations
RUN make build VENV=/opt/venv

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates && rm -rf /var/lib/apt/lists/*
# The binary's rpath names /opt/venv/.../torch/lib, so keep the same path.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/target/release/sweeper /usr/local/bin/sweeper
WORKDIR /var/lib/sweeper
ENTRYPOINT ["/usr/local/bin/sweeper"]
CMD ["worker", "--device", "auto"]
