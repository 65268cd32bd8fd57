#!/usr/bin/env bash
# Installs what bench/run.sh needs on Debian: the reference registry, the static-file ceiling, skopeo for W7,
# and the profilers used to find where the time goes.
set -euo pipefail
apt-get update
apt-get install -y docker-registry nginx-light skopeo curl valgrind linux-perf wrk
# The Debian package starts nginx on :80; the benchmark runs its own instance.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then systemctl stop nginx; fi
