#!/usr/bin/env bash
# berth's benchmark against Debian's docker-registry (distribution 2.8.2) in the same run, with nginx as
# the ceiling for downloads and small GETs. Prints one table. See bench/README.md.
#
#   bench/run.sh                 # the full run (about 12 minutes: 6 of them W9's soak)
#   SCALE=8 W4_SECS=1 SOAK_SECS=20 bench/run.sh   # a quick smoke run with 1/8 of the blob sizes
#   KEEP=1 bench/run.sh          # keep the work directory (storage roots, results.json, logs)
#   ONLY=w4,w5 bench/run.sh      # some workloads only (w3 uploads one blob first; w6 runs w5 first)
#   ONLY=w9 SOAK_SECS=180 bench/run.sh   # the mixed soak only, 180 s per registry (the default)
#   SOAK_MIX=all=0,blob_push=1 ONLY=w9 bench/run.sh   # the soak with other weights (see bench/README.md)
#   SOAK_CLIENTS=4               # the soak's concurrent clients
#   CARGO_LOCK=/tmp/cargo.lock   # run cargo under flock on a shared machine
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_start berth-bench docker-registry nginx skopeo curl ss

# One configuration for both registries: filesystem storage, delete enabled, access log off. The storage
# root and the address differ and come from distribution's own environment overrides. registry:2's image
# ships `cache.blobdescriptor: inmemory`; it is kept for distribution (berth has its own caches and warns
# about the key).
cp "$here/config.yml" "$work/config.yml"

bport=$(free_port); rport=$(free_port); nport=$(free_port)
mkdir -p "$work/berth" "$work/registry" "$work/nginx/root" "$work/loadgen"

REGISTRY_HTTP_ADDR=127.0.0.1:$bport REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$work/berth \
    "$repo/target/release/berth" serve "$work/config.yml" >"$work/berth.log" 2>&1 &
pids+=($!); bpid=$!
REGISTRY_HTTP_ADDR=127.0.0.1:$rport REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$work/registry \
    docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
pids+=($!); rpid=$!

cat > "$work/nginx/nginx.conf" <<NGINX
user root;
worker_processes auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log error;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    client_body_temp_path $work/nginx/tmp;
    proxy_temp_path $work/nginx/tmp;
    fastcgi_temp_path $work/nginx/tmp;
    uwsgi_temp_path $work/nginx/tmp;
    scgi_temp_path $work/nginx/tmp;
    server {
        listen 127.0.0.1:$nport;
        root $work/nginx/root;
    }
}
NGINX
mkdir -p "$work/nginx/tmp"
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)

for port in $bport $rport $nport; do
    for i in $(seq 1 100); do
        if curl -s -o /dev/null "http://127.0.0.1:$port/"; then break; fi
        [ "$i" = 100 ] && { echo "server on :$port did not start" >&2; exit 1; }
        sleep 0.1
    done
done
sleep 1  # let both settle before the idle RSS sample

echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$here/loadgen/target/release/berth-loadgen" \
    --berth "127.0.0.1:$bport" --berth-pid "$bpid" \
    --registry "127.0.0.1:$rport" --registry-pid "$rpid" \
    --nginx "127.0.0.1:$nport" --nginx-root "$work/nginx/root" \
    --work "$work/loadgen" --scale "${SCALE:-1}" --w4-secs "${W4_SECS:-3}" ${ONLY:+--only "$ONLY"} \
    ${SOAK_SECS:+--soak-secs "$SOAK_SECS"} ${SOAK_CLIENTS:+--soak-clients "$SOAK_CLIENTS"} \
    ${SOAK_MIX:+--soak-mix "$SOAK_MIX"}
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
