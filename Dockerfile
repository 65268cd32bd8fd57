# berth as a drop-in for registry:2: one static binary in an empty image, answering as /bin/registry,
# with the official image's configuration, volume and port.
#
# The image holds nothing but the binary and its configuration, so there is no build step in it: build
# the static binary first, then the image (or run deploy/build-image.sh, which does both):
#   RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu
#   docker build -t berth .
FROM scratch
ARG BINARY=target/x86_64-unknown-linux-gnu/release/berth
COPY ${BINARY} /bin/registry
COPY deploy/config.yml /etc/docker/registry/config.yml
VOLUME ["/var/lib/registry"]
EXPOSE 5000
ENTRYPOINT ["/bin/registry"]
CMD ["/etc/docker/registry/config.yml"]
