#!/usr/bin/env bash
# A B A B ... alternating builds under `loadgen --clients 256`, for throughput claims that
# must hold on a noisy machine. Each variant is "label:BINDIR" (BINDIR holds bftd, bftctl and
# loadgen of one build). Per rep and variant: a fresh 4-node testnet of real `bftd` processes
# on 127.0.0.1 (ports 35301.., as tools/bench/stage_ab.sh), one warm-up put, then
# `loadgen --clients 256 --duration DURATION`. Prints one RUN line per run (with the four
# nodes' CPU time per op, from /proc), then per variant the per-run ops/s and the medians of
# ops/s and CPU per op, and their ratios to the first variant's.
#
# Usage, from the project root:
#   tools/bench/tree_ab.sh 3 10s "pretree:/path/bin-pre" "tree:/path/bin-tree"
# PERF=1 records a cpu-clock profile of node 0 during each run into $W/perf.LABEL.REP.data
# (frame-pointer call graphs; PERF_CG="--call-graph=dwarf,16384" for usable ones in Rust code).
set -u
REPS=$1; DURATION=$2; shift 2
W=$(mktemp -d /tmp/treeab.XXXXXX)
echo "work dir $W"
PIDS=()
stop() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done; PIDS=(); }
trap stop EXIT
# User + system clock ticks of the four nodes so far (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { local t=0 p; for p in "${PIDS[@]}"; do t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat") )); done; echo "$t"; }
for rep in $(seq 1 "$REPS"); do
  for V in "$@"; do
    label=${V%%:*}; BIN=${V#*:}
    rm -rf "$W/tn"
    "$BIN/bftd" testnet --nodes 4 --dir "$W/tn" --base-port 35301 >/dev/null || exit 1
    for i in 0 1 2 3; do "$BIN/bftd" --config "$W/tn/node$i.toml" >"$W/tn/log$i" 2>&1 & PIDS+=($!); done
    for _ in $(seq 1 120); do "$BIN/bftctl" --config "$W/tn/client.toml" put warm up >/dev/null 2>&1 && break; sleep 0.5; done
    PERFPID=
    if [ "${PERF:-0}" = 1 ]; then
      perf record -e cpu-clock -F 499 ${PERF_CG:--g} -p "${PIDS[0]}" -o "$W/perf.$label.$rep.data" >/dev/null 2>&1 & PERFPID=$!
    fi
    cpu_before=$(cpu_ticks)
    "$BIN/loadgen" --config "$W/tn/client.toml" --clients 256 --duration "$DURATION" --json "$W/lg.json" >/dev/null 2>"$W/lg.err"
    cpu_ticks_used=$(( $(cpu_ticks) - cpu_before ))
    [ -n "$PERFPID" ] && { kill -INT "$PERFPID"; wait "$PERFPID" 2>/dev/null; }
    python3 -c "import json;j=json.load(open('$W/lg.json'));print('RUN $label rep=$rep ops=%.1f cpu_us_per_op=%.1f p50_ms=%.2f p99_ms=%.2f'%(j['ops_per_s'],$cpu_ticks_used*1e6/$(getconf CLK_TCK)/max(1,j.get('ops_ok',j.get('requests_ok',0))),j['latency_us_p50']/1e3,j['latency_us_p99']/1e3))" | tee -a "$W/runs.txt"
    stop
  done
done
python3 - "$W/runs.txt" <<'PY'
import sys, statistics, collections
runs = collections.OrderedDict()
cpu = collections.OrderedDict()
for line in open(sys.argv[1]):
    f = line.split()
    runs.setdefault(f[1], []).append(float(f[3].split('=')[1]))
    cpu.setdefault(f[1], []).append(float(f[4].split('=')[1]))
first = first_cpu = None
for label, ops in runs.items():
    med = statistics.median(ops)
    med_cpu = statistics.median(cpu[label])
    first = first or med
    first_cpu = first_cpu or med_cpu
    print("MEDIAN %s runs=[%s] median=%.1f ratio_to_%s=%.3f cpu_us_per_op=%.1f cpu_ratio=%.3f" % (
        label, ", ".join("%.1f" % o for o in ops), med, next(iter(runs)), med / first,
        med_cpu, med_cpu / first_cpu))
PY
