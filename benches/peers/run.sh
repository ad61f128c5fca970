#!/usr/bin/env bash
# TallyDB side by side with Redis, on one machine, in one run (issue 6, item 3, Redis part).
#
#   sudo benches/peers/run.sh          # or as root: benches/peers/run.sh
#
# Installs redis-server from Debian when missing, builds tallyd and tally-bench in
# release, starts a private redis-server on 127.0.0.1 (free port, own temp dir, AOF),
# runs the Redis workloads with redis-benchmark and the TallyDB workloads with
# tally-bench --spawn, prints a table of ratios. Every process it starts is stopped
# by pid on exit and its temp dir is removed. VictoriaMetrics is not covered yet.
#
# Environment (all optional):
#   PHASE_SECS   target seconds per Redis phase (default 10; each is hard-capped at 15 s)
#   TALLY_SECS   tally-bench --duration (default 15, at most 15)
#   PEERS_TMP    parent of the temp dirs (default ${TMPDIR:-/var/tmp}; use a real disk)
#   CARGO_TARGET_DIR   honored by the build and used to find the binaries
#   SKIP_BUILD=1 use the binaries already built
set -euo pipefail

PHASE_SECS="${PHASE_SECS:-10}"
TALLY_SECS="${TALLY_SECS:-15}"
PHASE_CAP=15
PEERS_TMP="${PEERS_TMP:-${TMPDIR:-/var/tmp}}"
SERIES=100000
CLIENTS=50

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

log() { printf '[peers %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

if ! [[ "$PHASE_SECS" =~ ^[0-9]+$ ]] || ((PHASE_SECS < 1 || PHASE_SECS > PHASE_CAP)); then
    die "PHASE_SECS must be 1..$PHASE_CAP"
fi
if ! [[ "$TALLY_SECS" =~ ^[0-9]+$ ]] || ((TALLY_SECS < 1 || TALLY_SECS > PHASE_CAP)); then
    die "TALLY_SECS must be 1..$PHASE_CAP"
fi

# ---------------------------------------------------------------- cleanup
redis_pid=""
work=""
cleanup() {
    local rc=$?
    if [[ -n "$redis_pid" ]] && kill -0 "$redis_pid" 2>/dev/null; then
        kill -TERM "$redis_pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 50; i++)); do
            kill -0 "$redis_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$redis_pid" 2>/dev/null; then
            kill -KILL "$redis_pid" 2>/dev/null || true
        fi
        wait "$redis_pid" 2>/dev/null || true
    fi
    if [[ -n "$work" && -d "$work" ]]; then
        rm -rf -- "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- prerequisites
command -v python3 >/dev/null || die "python3 is required"
command -v cargo >/dev/null || die "cargo is required (https://rustup.rs)"

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null \
    || ! command -v redis-cli >/dev/null; then
    [[ "$(id -u)" == 0 ]] || die "redis-server is missing; run as root to install it"
    log "installing redis-server (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y redis-server >&2
fi

# ---------------------------------------------------------------- build
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building tallyd and tally-bench (release, target dir $target_dir)"
    (cd "$repo" && cargo build --release -p tallydb-server -p tallydb-benches)
fi
tallyd="$target_dir/release/tallyd"
tally_bench="$target_dir/release/tally-bench"
[[ -x "$tallyd" && -x "$tally_bench" ]] || die "binaries not found under $target_dir/release"

# ---------------------------------------------------------------- private redis
mkdir -p "$PEERS_TMP"
work="$(mktemp -d "$PEERS_TMP/tally-peers.XXXXXX")"
mkdir -p "$work/redis" "$work/tally"

port="$(python3 - <<'EOF'
import socket
for _ in range(20):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    if p != 6379:
        print(p)
        break
EOF
)"
[[ -n "$port" ]] || die "no free port"
if ss -ltn 2>/dev/null | awk '{print $4}' | grep -q ":$port\$"; then
    die "port $port is taken"
fi

log "starting redis-server on 127.0.0.1:$port (dir $work/redis)"
redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes \
    --dir "$work/redis" --logfile "$work/redis/redis.log" --daemonize no \
    --save '' --appendonly yes --appendfsync everysec &
redis_pid=$!

rcli() { redis-cli -h 127.0.0.1 -p "$port" "$@"; }
ready=0
for ((i = 0; i < 100; i++)); do
    if [[ "$(rcli ping 2>/dev/null || true)" == PONG ]]; then
        ready=1
        break
    fi
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
done
((ready)) || { cat "$work/redis/redis.log" >&2 || true; die "redis-server did not start"; }
redis_version="$(rcli info server | tr -d '\r' | awk -F: '$1 == "redis_version" {print $2}')"

# The rollup people build with Redis: one event = HINCRBY into the minute, hour and
# day hash of the current time, field = series.
rollup_lua='local t = redis.call("TIME")
local s = tonumber(t[1])
local f = ARGV[1]
redis.call("HINCRBY", "m:" .. (s - s % 60), f, 1)
redis.call("HINCRBY", "h:" .. (s - s % 3600), f, 1)
redis.call("HINCRBY", "d:" .. (s - s % 86400), f, 1)
return 1'
rollup_sha="$(rcli script load "$rollup_lua" | tr -d '\r')"
[[ "$rollup_sha" =~ ^[0-9a-f]{40}$ ]] || die "SCRIPT LOAD failed: $rollup_sha"
minute_key="m:$(date -u +%Y%m%d%H%M)"

# ---------------------------------------------------------------- redis phases
# rb_rps N ARGS... : one redis-benchmark run, prints its requests/s ("" on failure).
rb_rps() {
    local n=$1
    shift
    local out
    out="$(timeout -k 2 "$PHASE_CAP" redis-benchmark -h 127.0.0.1 -p "$port" \
        -c "$CLIENTS" -r "$SERIES" -n "$n" --csv "$@" 2>/dev/null)" || true
    python3 -c '
import csv, sys
rows = [r for r in csv.reader(sys.stdin.read().splitlines()) if r]
vals = [r[1] for r in rows if len(r) > 1 and r[0] != "test"]
print(vals[-1] if vals else "")' <<<"$out"
}

# redis_phase NAME ARGS... : a short probe sizes -n for about PHASE_SECS seconds,
# then the measured run (hard-capped at PHASE_CAP seconds).
redis_phase() {
    local name=$1
    shift
    local probe n rps
    rcli flushall >/dev/null
    probe="$(rb_rps 100000 "$@")"
    [[ -n "$probe" ]] || { log "$name: probe failed"; echo ""; return 0; }
    n="$(python3 -c "import sys; print(max(50000, min(50_000_000, int(float(sys.argv[1]) * $PHASE_SECS * 0.8))))" "$probe")"
    rcli flushall >/dev/null
    log "$name: probe ${probe}/s, running -n $n"
    rps="$(rb_rps "$n" "$@")"
    [[ -n "$rps" ]] || log "$name: run failed or exceeded ${PHASE_CAP}s"
    log "$name: ${rps:-n/a} ops/s"
    echo "$rps"
}

declare -A R
for mode in everysec always; do
    rcli config set appendfsync "$mode" >/dev/null
    R[incr_p1000_$mode]="$(redis_phase "INCR -P 1000 ($mode)" -P 1000 -t incr)"
    R[hincr_p1000_$mode]="$(redis_phase "HINCRBY minute bucket -P 1000 ($mode)" \
        -P 1000 HINCRBY "$minute_key" __rand_int__ 1)"
    R[rollup_p1000_$mode]="$(redis_phase "rollup script -P 1000 ($mode)" \
        -P 1000 EVALSHA "$rollup_sha" 0 __rand_int__)"
done
rcli config set appendfsync everysec >/dev/null
R[incr_p1_everysec]="$(redis_phase "INCR -P 1 (everysec)" -P 1 -t incr)"

# ---------------------------------------------------------------- tallydb phases
# tally_phase NAME FILE ARGS... : tally-bench --spawn, json report into FILE.
tally_phase() {
    local name=$1 file=$2
    shift 2
    local rc=0
    log "$name: tally-bench $*"
    timeout -k 20 "$((TALLY_SECS + 60))" "$tally_bench" --spawn "$tallyd" \
        --data-parent "$work/tally" --format json --fsync always \
        --series "$SERIES" --duration "$TALLY_SECS" "$@" >"$file" || rc=$?
    ((rc == 0)) || log "$name: tally-bench exited with $rc (1 = not exact / connection failure)"
}
tally_phase "batched" "$work/tally_batched.json" --connections 16 --batch 1000 --pipeline 4
tally_phase "unbatched" "$work/tally_unbatched.json" --connections 50 --batch 1 --pipeline 1

# ---------------------------------------------------------------- table
python3 - "$work/tally_batched.json" "$work/tally_unbatched.json" \
    "${R[incr_p1000_everysec]}" "${R[incr_p1000_always]}" \
    "${R[hincr_p1000_everysec]}" "${R[hincr_p1000_always]}" \
    "${R[rollup_p1000_everysec]}" "${R[rollup_p1000_always]}" \
    "${R[incr_p1_everysec]}" "$redis_version" "$PHASE_SECS" "$TALLY_SECS" <<'EOF'
import json, os, sys
(tb, tu, incr_e, incr_a, h_e, h_a, r_e, r_a, incr1, rver, secs, tsecs) = sys.argv[1:]

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return None

def num(s):
    try:
        return float(s)
    except ValueError:
        return None

def fmt(x):
    return "n/a" if x is None else f"{x:,.0f}"

def tinfo(rep):
    if rep is None:
        return None, "no report"
    ips = rep.get("increments_per_s")
    lat = rep.get("write_latency") or {}
    su = rep.get("server_usage") or {}
    ver = rep.get("verification") or {}
    note = "p99 %s us, server %.2f cores, exact %s" % (
        lat.get("p99_us", "n/a"), su.get("cpu_cores") or 0.0, ver.get("exact", "n/a"))
    return ips, note

b, bnote = tinfo(load(tb))
u, unote = tinfo(load(tu))
rows = [
    ("INCR -P 1000, 50 clients", "everysec", num(incr_e), "batched", b),
    ("INCR -P 1000, 50 clients", "always", num(incr_a), "batched", b),
    ("HINCRBY minute bucket -P 1000", "everysec", num(h_e), "batched", b),
    ("HINCRBY minute bucket -P 1000", "always", num(h_a), "batched", b),
    ("Lua minute+hour+day rollup -P 1000", "everysec", num(r_e), "batched", b),
    ("Lua minute+hour+day rollup -P 1000", "always", num(r_a), "batched", b),
    ("INCR -P 1, 50 clients", "everysec", num(incr1), "unbatched", u),
]
print()
print(f"Redis {rver} (AOF on, 100,000 random keys) vs TallyDB (fsync always, 100,000 series); "
      f"{os.cpu_count()} CPUs, ~{secs} s per Redis phase, {tsecs} s per TallyDB phase, load average now "
      f"{open('/proc/loadavg').read().split()[0]}")
print()
print("| workload | Redis ops/s (AOF fsync) | TallyDB increments/s (fsync always) | ratio |")
print("|---|---:|---:|---:|")
for name, mode, r, tname, t in rows:
    ratio = "n/a" if (r is None or t is None or r == 0) else f"{t / r:.2f}x"
    print(f"| {name} vs TallyDB {tname} | {fmt(r)} ({mode}) | {fmt(t)} | {ratio} |")
print()
print("TallyDB batched:   --connections 16 --batch 1000 --pipeline 4 --series 100000 --fsync always; " + bnote)
print("TallyDB unbatched: --connections 50 --batch 1 --pipeline 1 --series 100000 --fsync always; " + unote)
EOF
