#!/usr/bin/env bash
# berth on S3 against berth on the filesystem and Debian's docker-registry (distribution 2.8.2) on the same
# S3 server, in one run: a single Garage node on loopback, its data on the same disk. Prints one table.
# See bench/README.md ("The S3 run").
#
#   bench/s3.sh                       # the full run
#   SCALE=16 W4_SECS=0.5 bench/s3.sh  # a quick smoke run: blobs 16 times smaller, 0.5 s per W4 point
#   KEEP=1 bench/s3.sh                # keep the work directory (storage, Garage's data, logs, results.json)
#   CARGO_LOCK=/tmp/cargo.lock        # run cargo under flock on a shared machine
#   S3_OPTIONS='chunksize: 20971520; multipartcopythresholdsize: 5368709120'
#                                     # more storage.s3 keys for all four S3 registries, `;`-separated
#   GARAGE_BIN=/path/to/garage        # else ~/.cargo/bin/garage, else garage on PATH
#   TIMEOUT=3600                      # seconds the load generator may take in all
#   ONLY=w4,w5                        # some workloads only (w3 uploads one blob first)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

garage=${GARAGE_BIN:-}
if [ -z "$garage" ]; then
    garage="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
    [ -x "$garage" ] || garage=$(command -v garage || true)
fi
[ -n "$garage" ] && [ -x "$garage" ] || {
    echo "missing garage: cargo install garage --version 2.5.0 --locked --no-default-features --features bundled-libs,lmdb" >&2
    exit 1
}
bench_start berth-s3-bench docker-registry curl flock timeout ss od

hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# Waits (at most 20 s) until `curl URL` answers with one of the statuses given; fails if PID has exited.
wait_http() {
    local url=$1 pid=$2 log=$3 status
    shift 3
    for _ in $(seq 1 200); do
        status=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
        for ok in "$@"; do [ "$status" = "$ok" ] && return 0; done
        kill -0 "$pid" 2>/dev/null || { echo "$url: the server exited; its log:" >&2; tail -20 "$log" >&2; exit 1; }
        sleep 0.1
    done
    echo "$url did not answer within 20 s; its log:" >&2; tail -20 "$log" >&2; exit 1
}

# ---- Garage: one node, replication factor 1, data and metadata in the work directory.
gs3=$(free_port); grpc=$(free_port); gadmin=$(free_port)
mkdir -p "$work/garage"
cat > "$work/garage/garage.toml" <<TOML
metadata_dir = "$work/garage/meta"
data_dir = "$work/garage/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$grpc"
rpc_public_addr = "127.0.0.1:$grpc"
rpc_secret = "$(hex 32)"

[s3_api]
api_bind_addr = "127.0.0.1:$gs3"
s3_region = "garage"

[admin]
api_bind_addr = "127.0.0.1:$gadmin"
TOML
access_key="GK$(hex 12)"; secret_key=$(hex 32)
# The caller's GARAGE_* variables would override the configuration file.
unset_garage=()
for v in $(env | sed -n 's/^\(GARAGE_[A-Za-z0-9_]*\)=.*/\1/p'); do unset_garage+=(-u "$v"); done
env "${unset_garage[@]}" -u RUST_LOG \
    GARAGE_DEFAULT_ACCESS_KEY="$access_key" GARAGE_DEFAULT_SECRET_KEY="$secret_key" GARAGE_DEFAULT_BUCKET=registry \
    "$garage" -c "$work/garage/garage.toml" server --single-node --default-bucket >"$work/garage.log" 2>&1 &
pids+=($!); gpid=$!
wait_http "http://127.0.0.1:$gadmin/health" "$gpid" "$work/garage.log" 200

# ---- The registries. One configuration file each; both registries read distribution's keys.
# registry:2's image ships `cache.blobdescriptor: inmemory`; it is kept for registry:2 (berth ignores it).
common() {
    cat <<YAML
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
http:
  addr: 127.0.0.1:$1
YAML
}
storage_common='  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory'
s3_options() {
    local opt
    local IFS=';'
    for opt in ${S3_OPTIONS:-}; do
        opt=${opt#"${opt%%[![:space:]]*}"}
        [ -n "$opt" ] && printf '    %s\n' "$opt"
    done
    return 0
}
s3_config() { # port rootdirectory redirect-disable
    common "$1"
    cat <<YAML
storage:
  s3:
    accesskey: $access_key
    secretkey: $secret_key
    region: garage
    regionendpoint: http://127.0.0.1:$gs3
    bucket: registry
    rootdirectory: $2
    forcepathstyle: true
    secure: false
$(s3_options)
  redirect:
    disable: $3
$storage_common
YAML
}

fsport=$(free_port); bport=$(free_port); brport=$(free_port); rport=$(free_port); rrport=$(free_port)
mkdir -p "$work/berth-fs" "$work/loadgen"
{ common "$fsport"; printf 'storage:\n  filesystem:\n    rootdirectory: %s\n%s\n' "$work/berth-fs" "$storage_common"; } \
    >"$work/berth-fs.yml"
# berth on S3 proxies blobs; a second berth on the same root redirects them (W3 only).
s3_config "$bport" /berth true >"$work/berth-s3.yml"
s3_config "$brport" /berth false >"$work/berth-s3-redirect.yml"
s3_config "$rport" /registry true >"$work/registry-s3.yml"
s3_config "$rrport" /registry false >"$work/registry-s3-redirect.yml"

# Variables of the caller that would change a registry's configuration.
unset_registry=(-u AWS_CA_BUNDLE)
for v in $(env | sed -n 's/^\(REGISTRY_[A-Za-z0-9_]*\)=.*/\1/p'); do unset_registry+=(-u "$v"); done

start_berth() { # name
    env "${unset_registry[@]}" "$repo/target/release/berth" serve "$work/$1.yml" >"$work/$1.log" 2>&1 &
    pids+=($!)
}
# docker-registry's AWS SDK fails at start-up on AWS_CA_BUNDLE: it runs without it.
start_registry() { # name
    env "${unset_registry[@]}" docker-registry serve "$work/$1.yml" >"$work/$1.log" 2>&1 &
    pids+=($!)
}
start_berth berth-fs; fspid=$!
start_berth berth-s3; bpid=$!
start_berth berth-s3-redirect; brpid=$!
start_registry registry-s3; rpid=$!
start_registry registry-s3-redirect; rrpid=$!
wait_http "http://127.0.0.1:$fsport/v2/" "$fspid" "$work/berth-fs.log" 200
wait_http "http://127.0.0.1:$bport/v2/" "$bpid" "$work/berth-s3.log" 200
wait_http "http://127.0.0.1:$brport/v2/" "$brpid" "$work/berth-s3-redirect.log" 200
wait_http "http://127.0.0.1:$rport/v2/" "$rpid" "$work/registry-s3.log" 200
wait_http "http://127.0.0.1:$rrport/v2/" "$rrpid" "$work/registry-s3-redirect.log" 200
sleep 1  # let them settle before the idle RSS sample

echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# In the background, so that an INT or TERM runs the trap at once: bash defers traps while a foreground
# command runs, and `timeout` puts the load generator in a process group of its own, which ^C misses.
timeout "${TIMEOUT:-3600}" "$here/loadgen/target/release/berth-loadgen" \
    --target "berth-fs=127.0.0.1:$fsport,pid=$fspid" \
    --target "berth-s3=127.0.0.1:$bport,pid=$bpid,backend=$gpid" \
    --target "registry-s3=127.0.0.1:$rport,pid=$rpid,backend=$gpid" \
    --target "berth-s3.redirect=127.0.0.1:$brport,pid=$brpid,backend=$gpid,redirect" \
    --target "registry-s3.redirect=127.0.0.1:$rrport,pid=$rrpid,backend=$gpid,redirect" \
    --work "$work/loadgen" --scale "${SCALE:-1}" --w4-secs "${W4_SECS:-3}" \
    --backend-log "$work/garage.log" \
    --only "${ONLY:-w1,w2,w3,w4,w5}" --w4-conns 16 --w5 one --table s3 &
pids+=($!)
status=0
wait "$!" || status=$?
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "Garage: $(du -sh "$work/garage/data" | cut -f1) of data, peak RSS $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$gpid/status")" >&2

# Warnings and errors in the servers' logs. berth and Garage write `TIME LEVEL target: message`; Garage logs
# every request at INFO, with a second INFO line for an error response (404s are expected: existence checks).
# registry:2 writes `level=...`, and warns that it has no http.secret (harmless: each upload goes to one
# instance).
for name in berth-fs berth-s3 berth-s3-redirect registry-s3 registry-s3-redirect garage; do
    sed 's/\x1b\[[0-9;]*m//g' "$work/$name.log" \
        | awk '$2 == "WARN" || $2 == "ERROR" || /panicked/ || /level=(warning|error|fatal|panic)/' \
        | grep -v 'No HTTP secret provided' >"$work/$name.problems" || true
    if [ -s "$work/$name.problems" ]; then
        echo "--- $name.log: $(wc -l <"$work/$name.problems") warnings or errors (first 10)" >&2
        head -10 "$work/$name.problems" | cut -c1-400 >&2
    fi
done
exit "$status"
