#!/usr/bin/env bash
# Builds berth's container image.
# Usage: deploy/build-image.sh [--prebuilt] [TAG]   (default tag: berth:latest)
#   without --prebuilt: `docker build` of the repository's Dockerfile (builds from source in rust:1-alpine)
#   with --prebuilt:    a static release binary built here, then deploy/Dockerfile.prebuilt (no network)
set -euo pipefail
cd "$(dirname "$0")/.."
prebuilt=false
if [[ "${1:-}" == "--prebuilt" ]]; then
    prebuilt=true
    shift
fi
tag="${1:-berth:latest}"
if ! $prebuilt; then
    exec docker build -t "$tag" .
fi
target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --bin berth --target "$target"
rm -rf target/image-root
mkdir -p target/image-root/bin
cp "target/$target/release/berth" target/image-root/bin/registry
ln -s registry target/image-root/bin/htpasswd
docker build -f deploy/Dockerfile.prebuilt -t "$tag" .
