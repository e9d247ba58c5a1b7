# A small image running `bitnet serve`. Build: docker build -t bitnet-rs .
# Run:   docker run -p 8080:8080 -v /path/to/models:/models bitnet-rs -m /models/model.gguf
# (the model is mounted, not baked in; /health is the readiness probe).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The demo model in fixtures/ is what `serve` runs without -m.
RUN cargo build --release -p bitnet-cli \
    && strip target/release/bitnet

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home /home/bitnet --create-home bitnet
COPY --from=build /src/target/release/bitnet /usr/local/bin/bitnet
COPY --from=build /src/fixtures/models/bitnet-demo.gguf /usr/share/bitnet/bitnet-demo.gguf
USER bitnet
EXPOSE 8080
# Listen on every interface inside the container; publish the port to choose who can reach it.
ENTRYPOINT ["bitnet", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["-m", "/usr/share/bitnet/bitnet-demo.gguf"]
