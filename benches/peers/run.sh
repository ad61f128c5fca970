#!/usr/bin/env bash
# TallyDB side by side with Redis and VictoriaMetrics, on one machine, in one run.
#
#   sudo benches/peers/run.sh          # or as root: benches/peers/run.sh
#
# Installs redis-server and victoria-metrics from Debian when missing, builds tallyd,
# tally-bench and tally-peers-vm in release, starts a private redis-server on
# 127.0.0.1 (free port, own temp dir, AOF), runs the Redis workloads with
# redis-benchmark and the TallyDB workloads with tally-bench --spawn, then starts a
# private victoria-metrics on 127.0.0.1 (free port, own temp dir) and runs
# tally-peers-vm (the same dataset loaded into VictoriaMetrics and into a private
# tallyd, the same queries timed on both, every answer checked), and prints the
# tables of ratios. Every process it starts is stopped by pid on exit and its temp
# dir is removed.
#
# Environment (all optional):
#   PHASE_SECS   target seconds per Redis phase (default 10; each is hard-capped at 15 s)
#   TALLY_SECS   tally-bench --duration (default 15, at most 15)
#   VM_CONNECTIONS  connections of each load of the VictoriaMetrics part (default 16, 4..50)
#   VM_QUERY_SECS   cap per query and system in the VictoriaMetrics part (default 8, at most 15)
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
VM_CONNECTIONS="${VM_CONNECTIONS:-16}"
VM_QUERY_SECS="${VM_QUERY_SECS:-8}"
if ! [[ "$VM_CONNECTIONS" =~ ^[0-9]+$ ]] || ((VM_CONNECTIONS < 4 || VM_CONNECTIONS > 50)); then
    die "VM_CONNECTIONS must be 4..50"
fi
if ! [[ "$VM_QUERY_SECS" =~ ^[0-9]+$ ]] || ((VM_QUERY_SECS < 1 || VM_QUERY_SECS > PHASE_CAP)); then
    die "VM_QUERY_SECS must be 1..$PHASE_CAP"
fi

# ---------------------------------------------------------------- cleanup
redis_pid=""
vm_pid=""
work=""
# stop_pid PID: TERM, then KILL after 5 s (no-op for an empty or finished pid).
stop_pid() {
    local pid=$1 i
    if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    stop_pid "$redis_pid"
    stop_pid "$vm_pid"
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
if ! command -v victoria-metrics >/dev/null; then
    [[ "$(id -u)" == 0 ]] || die "victoria-metrics is missing; run as root to install it"
    log "installing victoria-metrics (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y victoria-metrics >&2
fi
command -v curl >/dev/null || die "curl is required"

# ---------------------------------------------------------------- build
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building tallyd, tally-bench and tally-peers-vm (release, target dir $target_dir)"
    (cd "$repo" && cargo build --release -p tallydb-server -p tallydb-benches)
fi
tallyd="$target_dir/release/tallyd"
tally_bench="$target_dir/release/tally-bench"
peers_vm="$target_dir/release/tally-peers-vm"
[[ -x "$tallyd" && -x "$tally_bench" && -x "$peers_vm" ]] \
    || die "binaries not found under $target_dir/release"

# ---------------------------------------------------------------- private redis
mkdir -p "$PEERS_TMP"
work="$(mktemp -d "$PEERS_TMP/tally-peers.XXXXXX")"
mkdir -p "$work/redis" "$work/tally" "$work/vm"

# free_port: a free loopback port, never a service's default (6379, 8428).
free_port() {
    local p
    p="$(python3 - <<'EOF'
import socket
for _ in range(20):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    if p not in (6379, 8428):
        print(p)
        break
EOF
)"
    [[ -n "$p" ]] || die "no free port"
    if ss -ltn 2>/dev/null | awk '{print $4}' | grep -q ":$p\$"; then
        die "port $p is taken"
    fi
    echo "$p"
}
port="$(free_port)"
[[ -n "$port" ]] || die "no free port"

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
# tally_phase NAME FILE FSYNC ARGS... : tally-bench --spawn, json report into FILE.
tally_phase() {
    local name=$1 file=$2 fsync=$3
    shift 3
    local rc=0
    log "$name: tally-bench --fsync $fsync $*"
    timeout -k 20 "$((TALLY_SECS + 60))" "$tally_bench" --spawn "$tallyd" \
        --data-parent "$work/tally" --format json --fsync "$fsync" \
        --series "$SERIES" --duration "$TALLY_SECS" "$@" >"$file" || rc=$?
    ((rc == 0)) || log "$name: tally-bench exited with $rc (1 = not exact / connection failure)"
}
tally_phase "batched" "$work/tally_batched.json" always --connections 16 --batch 1000 --pipeline 4
tally_phase "unbatched" "$work/tally_unbatched.json" always --connections 50 --batch 1 --pipeline 1
# The durability Redis' everysec gives: at most the last second lost on power loss.
tally_phase "unbatched, interval:1000" "$work/tally_unbatched_interval.json" interval:1000 \
    --connections 50 --batch 1 --pipeline 1

# ---------------------------------------------------------------- victoriametrics
# A private victoria-metrics; tally-peers-vm loads the same dataset into it and into
# its own tallyd (fsync always), then times the same queries on both.
vm_port="$(free_port)"
[[ -n "$vm_port" ]] || die "no free port"
vm_version="$(dpkg-query -W -f '${Version}' victoria-metrics 2>/dev/null || echo unknown)"
log "starting victoria-metrics $vm_version on 127.0.0.1:$vm_port (dir $work/vm)"
victoria-metrics -storageDataPath "$work/vm/data" -httpListenAddr "127.0.0.1:$vm_port" \
    -retentionPeriod 100y -search.latencyOffset 0s -search.disableCache \
    -loggerLevel ERROR >"$work/vm/vm.log" 2>&1 &
vm_pid=$!
ready=0
for ((i = 0; i < 100; i++)); do
    if [[ "$(curl -s "http://127.0.0.1:$vm_port/health" 2>/dev/null || true)" == OK ]]; then
        ready=1
        break
    fi
    kill -0 "$vm_pid" 2>/dev/null || break
    sleep 0.1
done
((ready)) || { cat "$work/vm/vm.log" >&2 || true; die "victoria-metrics did not start"; }
log "tally-peers-vm: the same dataset into victoria-metrics and a private tallyd"
vm_rc=0
timeout -k 20 420 "$peers_vm" --vm "127.0.0.1:$vm_port" --vm-pid "$vm_pid" \
    --vm-version "$vm_version" --tallyd "$tallyd" --data-parent "$work/tally" \
    --fsync always --connections "$VM_CONNECTIONS" --query-secs "$VM_QUERY_SECS" \
    >"$work/vm.json" || vm_rc=$?
((vm_rc == 0)) || log "tally-peers-vm exited with $vm_rc (1 = a load or an answer was not exact)"
stop_pid "$vm_pid"
vm_pid=""

# ---------------------------------------------------------------- table
python3 - "$work/tally_batched.json" "$work/tally_unbatched.json" "$work/tally_unbatched_interval.json" \
    "${R[incr_p1000_everysec]}" "${R[incr_p1000_always]}" \
    "${R[hincr_p1000_everysec]}" "${R[hincr_p1000_always]}" \
    "${R[rollup_p1000_everysec]}" "${R[rollup_p1000_always]}" \
    "${R[incr_p1_everysec]}" "$redis_version" "$PHASE_SECS" "$TALLY_SECS" "$work/vm.json" <<'EOF'
import json, os, sys
(tb, tu, tui, incr_e, incr_a, h_e, h_a, r_e, r_a, incr1, rver, secs, tsecs, vmj) = sys.argv[1:]

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
ui, uinote = tinfo(load(tui))
rows = [
    ("INCR -P 1000, 50 clients", "everysec", num(incr_e), "batched", b),
    ("INCR -P 1000, 50 clients", "always", num(incr_a), "batched", b),
    ("HINCRBY minute bucket -P 1000", "everysec", num(h_e), "batched", b),
    ("HINCRBY minute bucket -P 1000", "always", num(h_a), "batched", b),
    ("Lua minute+hour+day rollup -P 1000", "everysec", num(r_e), "batched", b),
    ("Lua minute+hour+day rollup -P 1000", "always", num(r_a), "batched", b),
    ("INCR -P 1, 50 clients", "everysec", num(incr1), "unbatched", u),
    ("INCR -P 1, 50 clients", "everysec", num(incr1), "unbatched with fsync interval:1000 (everysec's durability)", ui),
]
print()
print(f"Redis {rver} (AOF on, 100,000 random keys) vs TallyDB (fsync always unless said, 100,000 series); "
      f"{os.cpu_count()} CPUs, ~{secs} s per Redis phase, {tsecs} s per TallyDB phase, load average now "
      f"{open('/proc/loadavg').read().split()[0]}")
print()
print("| workload | Redis ops/s (AOF fsync) | TallyDB increments/s (fsync always unless said) | ratio |")
print("|---|---:|---:|---:|")
for name, mode, r, tname, t in rows:
    ratio = "n/a" if (r is None or t is None or r == 0) else f"{t / r:.2f}x"
    print(f"| {name} vs TallyDB {tname} | {fmt(r)} ({mode}) | {fmt(t)} | {ratio} |")
print()
print("TallyDB batched:   --connections 16 --batch 1000 --pipeline 4 --series 100000 --fsync always; " + bnote)
print("TallyDB unbatched: --connections 50 --batch 1 --pipeline 1 --series 100000 --fsync always; " + unote)
print("TallyDB unbatched: --connections 50 --batch 1 --pipeline 1 --series 100000 --fsync interval:1000; " + uinote)

v = load(vmj)
if v is None:
    print()
    print("VictoriaMetrics: no report (tally-peers-vm failed; see the log above)")
    sys.exit(0)
d = v["dataset"]
tl, vl = v["tally_load"], v["vm_load"]

def ms(us):
    return "n/a" if us is None else f"{us / 1000:.3f}"

def lat(side):
    l = side.get("latency")
    return (None, None) if not l else (l["p50_us"], l["p99_us"])

def cores(lf):
    s = lf.get("server") or {}
    return "n/a" if not s else f"{s.get('cpu_cores', 0):.2f}"

def ratio(t, r):
    return "n/a" if not t or not r else f"{t / r:.2f}x"

print()
print(f"VictoriaMetrics {v['vm_version']} vs TallyDB ({v['tally_version']}, fsync {v['tally_fsync']}); "
      f"{v['cpus']} CPUs, load average {v['loadavg_start'].split()[0]} at the start of this part, "
      f"{v['loadavg_end'].split()[0]} at its end; {v['wall_seconds']:.0f} s")
print(f"Dataset: {d['series']:,} series {d['metric']}{{g,s}} ({d['group']:,} per value of g); the last "
      f"hour of minutes for every series, the last day for g=000: {v['samples']:,} per-minute samples "
      f"(TallyDB: timestamped events), sum {v['total']:,}")
print()
print("| load of the dataset | VictoriaMetrics samples/s (no fsync per request) | TallyDB events/s (fsync always) | ratio |")
print("|---|---:|---:|---:|")
vps, tps = vl["per_second"], tl["per_second"]
print(f"| the same stream, {tl['connections']} connections, {d['batch']:,} per request | "
      f"{fmt(vps)} | {fmt(tps)} | {ratio(tps, vps)} |")
print(f"| TallyDB batched (tally-bench above, live timestamps) vs that VictoriaMetrics load | "
      f"{fmt(vps)} | {fmt(b)} | {ratio(b, vps)} |")
print()
vis = vl["visible_after_s"]
print(f"Loads: VictoriaMetrics {vl['items']:,} samples in {vl['seconds']:.2f} s, server {cores(vl)} cores, "
      f"all searchable {'never' if vis is None else f'{vis:.1f} s'} after, exact {vl['exact']}; "
      f"TallyDB {tl['items']:,} events in {tl['seconds']:.2f} s, server {cores(tl)} cores, exact {tl['exact']}")
print()
print("| query | VictoriaMetrics p50 / p99 ms | TallyDB p50 / p99 ms | p99 VM / TallyDB | TallyDB p99 target | timed runs (TallyDB; VM) | right answers (TallyDB; VM) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for q in v["queries"]:
    t50, t99 = lat(q["tally"])
    v50, v99 = lat(q["vm"])
    tgt = q.get("target_p99_us")
    met = "" if tgt is None or t99 is None else (" met" if t99 <= tgt else " **missed**")
    r = "n/a" if not t99 or not v99 else f"{v99 / t99:.2f}x"
    tq, vq = q["tally"], q["vm"]
    right = (f"{tq['correct']}/{tq['correct'] + tq['wrong']}; "
             f"{vq['correct']}/{vq['correct'] + vq['wrong']}")
    timed = "; ".join(str((s.get("latency") or {}).get("count", 0)) for s in (tq, vq))
    print(f"| {q['name']} | {ms(v50)} / {ms(v99)} | {ms(t50)} / {ms(t99)} | {r} | "
          f"{'-' if tgt is None else '≤ ' + ms(tgt)}{met} | {timed} | {right} |")
print()
for q in v["queries"]:
    for who in ("tally", "vm"):
        if q[who].get("first_problem"):
            print(f"{q['name']} ({who}): {q[who]['first_problem']}")
print("PromQL: " + "; ".join(q["promql"] for q in v["queries"]))
EOF
