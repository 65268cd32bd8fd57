#!/bin/sh
# Garbage collection and listing benchmark, berth against docker-registry (distribution 2.8.2) on the same
# store of 10,000 manifests in 1,000 repositories. Needs the Debian package docker-registry. Prints a table.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --bin berth --example gcbench
exec target/release/examples/gcbench target/release/berth
