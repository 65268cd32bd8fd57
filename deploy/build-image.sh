#!/usr/bin/env bash
# Builds berth's container image: a static release binary, then `docker build` on the repository root.
# Usage: deploy/build-image.sh [TAG]   (default tag: berth:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu
docker build -t "${1:-berth:latest}" .
