#!/usr/bin/env bash
# Throughput and latency with members down, against the healthy cluster in the same run.
#
# Starts an N-node cluster of real `bftd` processes on 127.0.0.1 (ports outside the kernel's
# ephemeral range), runs loadgen healthy, SIGKILLs K members, runs loadgen again, and prints one
# RESULT line per phase and the ratios the replica issue asks for. With --rolling it also
# restarts every member once, one at a time, while one longer loadgen run is going, and reports
# that run's failures and p99.9.
#
# Usage, from the project root:
#   cargo build --release && tools/bench/faults.sh [--nodes 4] [--kill 1] [--clients 16]
#                                                  [--duration 10] [--rolling]
# Needs only the release binaries (target/release or $BIN). Ratios mean something only within
# one run: the machine is shared and noisy. Not a test: it measures, it asserts nothing.
set -u
NODES=4; KILL=1; CLIENTS=16; DUR=10; ROLLING=0; BASE=${BASE_PORT:-26100}
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --kill) KILL=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --rolling) ROLLING=1; shift ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "faults.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
BIN=${BIN:-target/release}
for b in bftd bftctl loadgen; do
  [ -x "$BIN/$b" ] || { echo "faults.sh: $BIN/$b missing: run cargo build --release first" >&2; exit 2; }
done
W=$(mktemp -d /tmp/bftd-faults.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done; rm -rf "$W"; }
trap cleanup EXIT

# node i serves /metrics on BASE + 99 + i; node 0's, for view changes per 100 commits
"$BIN/bftd" testnet --nodes "$NODES" --dir "$W" --base-port "$BASE" \
    --metrics-base-port $((BASE + 99)) >/dev/null || exit 1
METRICS=127.0.0.1:$((BASE + 99))
# counters NAME...: node 0's values of the named counters, space-separated
counters() {
  python3 - "$METRICS" "$@" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen("http://%s/metrics" % sys.argv[1], timeout=5).read().decode()
vals = dict(l.split()[:2] for l in text.splitlines() if l and not l.startswith("#") and " " in l)
print(" ".join(vals.get(n, "0") for n in sys.argv[2:]))
PY
}
start_node() { "$BIN/bftd" --config "$W/node$1.toml" >>"$W/log$1" 2>&1 & PIDS[$1]=$!; disown $!; }
for i in $(seq 0 $((NODES - 1))); do start_node "$i"; done
ready=0
for _ in $(seq 1 60); do
  if "$BIN/bftctl" --config "$W/client.toml" put faults/ready 1 >/dev/null 2>&1; then ready=1; break; fi
  sleep 1
done
[ $ready = 1 ] || { echo "faults.sh: the cluster did not commit a put within 60 s" >&2; exit 1; }

# run NAME: one loadgen phase; prints a RESULT line and keeps the JSON as $W/NAME.json
run() {
  name=$1; shift
  "$BIN/loadgen" --config "$W/client.toml" --clients "$CLIENTS" --duration "${DUR}s" \
    --json "$W/$name.json" "$@" >/dev/null 2>"$W/$name.progress"
  python3 - "$W/$name.json" "$name" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print("RESULT %s ops_per_s=%.1f p50_ms=%.2f p99_ms=%.2f p99_9_ms=%.2f failed=%d ok=%d" % (
    sys.argv[2], j["ops_per_s"], j["latency_us_p50"] / 1e3, j["latency_us_p99"] / 1e3,
    j["latency_us_p99_9"] / 1e3, j["requests_failed"], j["requests_ok"]))
PY
}
vc() { counters bftd_view_changes_total bftd_blocks_committed_total; }
per100() { python3 -c "import sys; a,b,c,d=map(float,sys.argv[1:]); print('%.1f' % (100*(c-a)/max(d-b,1)))" $1 $2 $3 $4; }
c0=$(vc)
run healthy
c1=$(vc)
echo "RESULT healthy view_changes_per_100_commits=$(per100 $c0 $c1) (node 0)"
for k in $(seq 1 "$KILL"); do
  victim=$((NODES - k))
  kill -9 "${PIDS[$victim]}" 2>/dev/null; PIDS[$victim]=""
done
echo "killed the $KILL highest-numbered member(s)"
c2=$(vc)
run down
c3=$(vc)
echo "RESULT down view_changes_per_100_commits=$(per100 $c2 $c3) (node 0, from the kill to the end of the run)"
python3 - "$W/healthy.json" "$W/down.json" "$NODES" "$KILL" <<'PY'
import json, sys
h = json.load(open(sys.argv[1])); d = json.load(open(sys.argv[2]))
print("RATIO nodes=%s killed=%s throughput=%.2f p99=%.2f (goal: throughput >= 0.70, p99 <= 3.00)" % (
    sys.argv[3], sys.argv[4], d["ops_per_s"] / max(h["ops_per_s"], 1e-9),
    d["latency_us_p99"] / max(h["latency_us_p99"], 1e-9)))
PY

if [ $ROLLING = 1 ]; then
  # bring the killed members back, then restart each member once under one longer run
  for k in $(seq 1 "$KILL"); do start_node $((NODES - k)); done
  sleep 5
  total=$((DUR * (NODES + 2)))
  "$BIN/loadgen" --config "$W/client.toml" --clients "$CLIENTS" --duration "${total}s" \
    --json "$W/rolling.json" >/dev/null 2>"$W/rolling.progress" &
  lg=$!
  sleep "$DUR"
  for i in $(seq 0 $((NODES - 1))); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null
    while kill -0 "${PIDS[$i]}" 2>/dev/null; do sleep 0.1; done
    start_node "$i"
    sleep "$DUR"
  done
  wait $lg
  python3 - "$W/rolling.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print("RESULT rolling_restart ops_per_s=%.1f p99_ms=%.2f p99_9_ms=%.2f max_ms=%.2f failed=%d ok=%d (goal: failed=0, p99.9 < 1000 ms)" % (
    j["ops_per_s"], j["latency_us_p99"] / 1e3, j["latency_us_p99_9"] / 1e3,
    j["latency_us_max"] / 1e3, j["requests_failed"], j["requests_ok"]))
PY
fi
