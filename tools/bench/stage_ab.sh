#!/usr/bin/env bash
# A B C ... alternating builds (or loadgen options) in one run, with the leader's latency
# budget. Each variant is "label:BINDIR:extra loadgen args for the 256-client run". Per rep and
# variant: a fresh 4-node testnet of real `bftd` processes on 127.0.0.1 (ports 35301.., metrics
# 36301..), `loadgen --clients 1 --duration 10s`, then the mean per stage of
# bftd_request_stage_seconds summed over the 4 nodes (each times the blocks it proposed), then
# `loadgen --clients 256 --duration 6s EXTRA`. Server CPU is user+sys of the 4 processes.
# Prints RESULT and STAGES lines; take medians over reps and ratios from one run only.
#
# Usage, from the project root, with release binaries copied to two directories:
#   tools/bench/stage_ab.sh 2 "main:bin-main:" "new:bin-new:" "new+coalesce:bin-new:--coalesce"
set -u
REPS=$1; shift
W=$(mktemp -d /tmp/perfab.XXXXXX)
PIDS=()
stop() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill $p 2>/dev/null; done; sleep 1; PIDS=(); }
trap stop EXIT
cpu_s() { python3 -c '
import sys,os
hz=os.sysconf("SC_CLK_TCK"); s=0
for p in sys.argv[1:]:
  try: f=open("/proc/%s/stat"%p).read().rsplit(")",1)[1].split(); s+=int(f[11])+int(f[12])
  except Exception: pass
print(s/hz)' "$@"; }
lg() { # label rep name json extra...
  local label=$1 rep=$2 name=$3; shift 3
  c0=$(cpu_s "${PIDS[@]}")
  "$BIN/loadgen" --config $W/tn/client.toml --json $W/lg.json "$@" >/dev/null 2>&1
  c1=$(cpu_s "${PIDS[@]}")
  python3 -c "import json;j=json.load(open('$W/lg.json'));n=max(1,j['ops_ok']);print('RESULT $label rep=$rep $name rps=%.1f ops=%.1f p50_ms=%.3f p99_ms=%.3f server_cpu_us_per_op=%.0f'%(j['requests_per_s'],j['ops_per_s'],j['latency_us_p50']/1e3,j['latency_us_p99']/1e3,($c1-$c0)*1e6/n))"
}
for rep in $(seq 1 $REPS); do
 for V in "$@"; do
  label=${V%%:*}; rest=${V#*:}; BIN=${rest%%:*}; extra=${rest#*:}
  rm -rf $W/tn; "$BIN/bftd" testnet --nodes 4 --dir $W/tn --base-port 35301 >/dev/null || exit 1
  for i in 0 1 2 3; do "$BIN/bftd" --config $W/tn/node$i.toml >$W/tn/log$i 2>&1 & PIDS+=($!); done
  for t in $(seq 1 60); do "$BIN/bftctl" --config $W/tn/client.toml put warm up >/dev/null 2>&1 && break; sleep 0.5; done
  lg $label $rep put_c1 --clients 1 --duration 10s
  for i in 0 1 2 3; do curl -s http://127.0.0.1:$((36301+i))/metrics > $W/m$i.txt; done
  python3 - $W $label $rep <<'PY'
import sys,re,collections
W,name,rep=sys.argv[1:4]
b=collections.defaultdict(lambda: collections.defaultdict(float)); s=collections.defaultdict(float); c=collections.defaultdict(float)
for i in range(4):
  for l in open(W+'/m%d.txt'%i):
    m=re.match(r'bftd_request_stage_seconds_bucket\{stage="(\w+)",le="([^"]+)"\} (\S+)',l)
    if m: b[m.group(1)][m.group(2)]+=float(m.group(3)); continue
    m=re.match(r'bftd_request_stage_seconds_(sum|count)\{stage="(\w+)"\} (\S+)',l)
    if m: (s if m.group(1)=='sum' else c)[m.group(2)]+=float(m.group(3))
out=[]
for st in ["verify","wait_proposal","block_durable","qc","commit","apply","reply","total"]:
  if c[st]==0: out.append(st+"=n/a"); continue
  out.append("%s=%.3f"%(st,s[st]/c[st]*1e3))
print("STAGES %s rep=%s n=%d mean_ms: %s"%(name,rep,c['total']," ".join(out)))
PY
  lg $label $rep put_c256 --clients 256 --duration 6s $extra
  stop
 done
done
