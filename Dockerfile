# berth as a drop-in for registry:2: one static binary in an empty image, answering as /bin/registry (and
# as /bin/htpasswd, for `docker run --entrypoint htpasswd IMAGE -Bbn USER PASS`), with the official
# image's configuration, volume and port.
#
#   docker build -t berth .
#
# builds it from source (musl, statically linked). Without access to the official Rust image, build the
# binary on the host and copy it in instead: deploy/build-image.sh --prebuilt (deploy/Dockerfile.prebuilt).
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev gcc
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY tests tests
COPY bench/gcbench.rs bench/gcbench.rs
RUN cargo build --release --locked --bin berth \
    && mkdir -p /image/bin \
    && cp target/release/berth /image/bin/registry \
    && ln -s registry /image/bin/htpasswd

FROM scratch
COPY --from=build /image/ /
COPY deploy/config.yml /etc/docker/registry/config.yml
VOLUME ["/var/lib/registry"]
EXPOSE 5000
ENTRYPOINT ["/bin/registry"]
CMD ["/etc/docker/registry/config.yml"]
