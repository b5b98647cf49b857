#!/bin/bash
# benches/ab/durable.sh BIN PORT NAME [VAR=value...]: durable Compute of unique 2-line orders, 64 in
# flight (C) or open loop at RATE orders/s, 8 s (DUR), orders paid about in sequence (PAID=live) or at random in the month (PAID=month),
# on a fresh SQLite file (or PRORATA_DATABASE_URL=...); output in /tmp/dur/NAME.
# Prints the bench's summary, the cores the server and the load generator used (/proc and
# /usr/bin/time), and, from the server's metrics (port PORT+1000) after the run, the mean batch
# and the mean time per batch of each group-commit phase (warm-up included).
BIN=$1 PORT=$2 NAME=$3; shift 3
D=/tmp/dur/$NAME; rm -rf $D; mkdir -p $D; cd $D
MPORT=$((PORT + 1000))
env PRORATA_SQLITE_PATH=$D/db.sqlite "$@" PRORATA_METRICS_ADDR=127.0.0.1:$MPORT PRORATA_GRPC_ADDR=127.0.0.1:$PORT PRORATA_LOG_LEVEL=warn $BIN serve > $D/server.log 2>&1 &
SP=$!
for i in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
B() { $BIN bench --addr http://127.0.0.1:$PORT "$@"; }
B --mode closed --duration 0.2 --warmup 0 --concurrency 1 --connections 1 --scenario empty --setup > $D/setup.txt 2>&1
# RATE=n: open loop at n orders/s (latency from each order's scheduled send time); else closed at C.
LOOP="--mode closed"; [ -n "$RATE" ] && LOOP="--mode open --rate $RATE"
# The CPU the server and the load generator use over the run (warm-up included), in
# $D/cpu.txt: server seconds, load generator seconds, wall seconds.
cpu0=$(awk '{print $14 + $15}' /proc/$SP/stat); w0=$(date +%s.%N)
/usr/bin/time -f "%U %S" -o $D/loadgen.time \
  $BIN bench --addr http://127.0.0.1:$PORT $LOOP --concurrency ${C:-64} --connections 4 --duration ${DUR:-8} --warmup 2 --scenario compute --lines 2 --refund-ratio 0 --paid-at ${PAID:-live} > $D/compute.txt 2>&1
cpu1=$(awk '{print $14 + $15}' /proc/$SP/stat); w1=$(date +%s.%N)
awk -v a=$cpu0 -v b=$cpu1 -v t=$(getconf CLK_TCK) -v w0=$w0 -v w1=$w1 '{printf "%.3f %.3f %.3f\n", (b - a) / t, $1 + $2, w1 - w0}' $D/loadgen.time > $D/cpu.txt
curl -s 127.0.0.1:$MPORT/metrics > $D/metrics.txt
kill $SP; wait $SP 2>/dev/null
echo "$NAME: $(grep '^ok calls' $D/compute.txt) | $(grep -A1 '^call' $D/compute.txt | tail -1)"
awk '{printf "  cores used: server %.2f, load generator %.2f\n", $1 / $3, $2 / $3}' $D/cpu.txt
python3 - $D/metrics.txt <<'PY'
import re, sys
m = {}
for l in open(sys.argv[1]):
    r = re.match(r'(prorata_group_commit_\w+?)(?:\{phase="(\w+)"\})? ([\d.e+-]+)$', l.strip())
    if r:
        m[(r.group(1), r.group(2))] = float(r.group(3))
n = m.get(('prorata_group_commit_batch_orders_count', None))
if n:
    o = m[('prorata_group_commit_batch_orders_sum', None)]
    phases = ' '.join('%s %.2f ms' % (p, m.get(('prorata_group_commit_phase_seconds_sum', p), 0) / n * 1e3)
                      for p in ['begin', 'read', 'engine', 'bind', 'connection', 'call', 'write', 'counters', 'commit'] if ('prorata_group_commit_phase_seconds_sum', p) in m)
    print('  batches %d, %.1f orders each; per batch: %s' % (n, o / n, phases))
    q = m.get(('prorata_group_commit_queue_seconds_count', None))
    if q:
        print('  queue wait per order: %.2f ms' % (m[('prorata_group_commit_queue_seconds_sum', None)] / q * 1e3))
PY
