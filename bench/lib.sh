# What bench/run.sh and bench/s3.sh share: sourced, not run. Sets `here`, `repo`, `work` and `pids`, and
# kills every process in `pids` (newest first) and removes `work` (unless KEEP is set) on exit.
#
#   bench_start NAME TOOL...   checks the tools, builds berth and the load generator in release, makes $work

here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
repo=$(dirname "$here")
# CARGO_LOCK: run cargo under flock on a shared machine.
cargo() { if [ -n "${CARGO_LOCK:-}" ]; then flock "$CARGO_LOCK" cargo "$@"; else command cargo "$@"; fi; }

bench_start() {
    local name=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "missing $tool: run bench/setup.sh" >&2; exit 1; }
    done
    cargo build --release --manifest-path "$repo/Cargo.toml"
    cargo build --release --manifest-path "$here/loadgen/Cargo.toml"
    work=$(mktemp -d "${BENCH_WORK_PARENT:-/var/tmp}/$name.XXXXXX")
    pids=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

bench_cleanup() {
    local i
    # The newest first: the load generator before the servers, a storage server last.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do wait "${pids[i]}" 2>/dev/null || true; done
    if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "work directory kept: $work" >&2; fi
}

# A port below the ephemeral range (32768 and up on Linux), so that no outgoing connection holds it by the
# time a server binds it, used by no socket now and not handed out before in this run.
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 12000))
        if [ -z "$(ss -Htan "( sport = :$p )")" ] && ! grep -qx "$p" "$work/ports" 2>/dev/null; then
            echo "$p" >>"$work/ports"; echo "$p"; return
        fi
    done
    echo "no free port" >&2; exit 1
}
