#!/usr/bin/env bash
# Linearizable gets by read barrier (A) against ordered gets (B), same binary, alternating
# A B A B on one 4-node testnet: loadgen --clients 64 --read-ratio 1, PAIRS pairs of DUR s.
# Prints one RESULT line per run and the median ops/s ratio A/B.
# Usage: tools/bench/read_ab.sh [BIN_DIR] (default target-rel/release); env PAIRS, DUR, CLIENTS.
set -u
BIN=${1:-target-rel/release}
PAIRS=${PAIRS:-3}; DUR=${DUR:-10}; CLIENTS=${CLIENTS:-64}
W=$(mktemp -d /tmp/read_ab.XXXXXX)
"$BIN/bftd" testnet --nodes 4 --dir $W/net --base-port ${BASE_PORT:-36101} >/dev/null || exit 1
PIDS=()
for i in 0 1 2 3; do "$BIN/bftd" --config $W/net/node$i.toml >$W/log$i 2>&1 & PIDS+=($!); done
trap 'kill ${PIDS[@]} 2>/dev/null; wait 2>/dev/null' EXIT
for t in $(seq 1 60); do "$BIN/bftctl" --config $W/net/client.toml put warm up >/dev/null 2>&1 && break; sleep 0.5; done
# Some keys to read (the default key space is mostly absent keys, which read just as well).
"$BIN/loadgen" --config $W/net/client.toml --duration 3s --clients 16 --keys 1000 >/dev/null 2>&1
run() { # name args...
  name=$1; shift
  "$BIN/loadgen" --config $W/net/client.toml --duration ${DUR}s --clients $CLIENTS --keys 1000 \
    --read-ratio 1 --json $W/lg.json "$@" >/dev/null 2>$W/lg.err
  python3 -c "import json;j=json.load(open('$W/lg.json'));print('RESULT $name ops=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d'%(j['ops_per_s'],j['latency_us_p50']/1e3,j['latency_us_p99']/1e3,j.get('requests_failed',0)))"
  grep -h "fell back" $W/lg.err || true
}
for p in $(seq 1 $PAIRS); do
  run barrier | tee -a $W/results
  run ordered --ordered-reads | tee -a $W/results
done
python3 - $W/results <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if f and f[0] == "RESULT":
        rows.setdefault(f[1], []).append(float(f[2].split("=")[1]))
a, b = rows.get("barrier", []), rows.get("ordered", [])
ratios = [x / y for x, y in zip(a, b) if y]
print("barrier ops/s", a, "median", st.median(a) if a else None)
print("ordered ops/s", b, "median", st.median(b) if b else None)
print("pair ratios", ["%.2f" % r for r in ratios], "median ratio %.2f" % st.median(ratios) if ratios else "")
PY
