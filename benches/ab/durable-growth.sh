#!/bin/bash
# benches/ab/durable-growth.sh BIN PORT NAME ROUNDS [VAR=value...]: durable Compute of unique 2-line
# orders on ONE server and ONE SQLite file (or PRORATA_DATABASE_URL=...) for ROUNDS runs in a row,
# 32 in flight (C), 8 s each after 1 s of warm-up, live payment times: how throughput, p99 and the
# group commit's phases move as the database grows (benches/ab/durable.sh starts every run on an
# empty file, which flatters SQLite: RESULTS.md §25). Output in /tmp/growth/NAME.
# Per round it prints: orders/s and p99 (µs), the database and WAL sizes, the batches with the mean
# time per batch of each phase and of the WAL sync (from the server's metrics, this round only),
# and the CPU the server used and the machine left idle (clock ticks; 2 cores × 100 per second).
# WALCOPY=1: also copy the WAL 6 s into each round and, at the end, count each commit's frames by
# table or index (benches/sqlite/walframes.py). SEED=FILE: start from a copy of that SQLite file
# (a database grown earlier, or one padded with an unrelated table) instead of an empty one.
# NETWORK=n: a generated network of n promoters (`prorata bench --network`) instead of the
# classic 1,000, imported first and paid by the orders.
set -e
BIN=$1 PORT=$2 NAME=$3 ROUNDS=$4; shift 4
HERE=$(cd "$(dirname "$0")" && pwd)
D=/tmp/growth/$NAME; rm -rf $D; mkdir -p $D; cd $D
MPORT=$((PORT + 1000))
[ -z "$SEED" ] || cp "$SEED" $D/db.sqlite
env PRORATA_SQLITE_PATH=$D/db.sqlite "$@" PRORATA_METRICS_ADDR=127.0.0.1:$MPORT PRORATA_GRPC_ADDR=127.0.0.1:$PORT PRORATA_LOG_LEVEL=warn $BIN serve > $D/server.log 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null || true' EXIT
for i in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
B() { $BIN bench --addr http://127.0.0.1:$PORT "$@"; }
B --mode closed --duration 0.2 --warmup 0 --concurrency 1 --connections 1 --scenario empty --setup ${NETWORK:+--network $NETWORK} > $D/setup.txt 2>&1
ticks() { awk '{print $14 + $15}' /proc/$SP/stat; }
idle() { awk '/^cpu /{print $5 + $6}' /proc/stat; }
size() { [ -f "$1" ] && du -m "$1" | cut -f1 || echo 0; }
for r in $(seq 1 $ROUNDS); do
  t0=$(ticks) i0=$(idle)
  if [ -n "$WALCOPY" ]; then (sleep 6; cp $D/db.sqlite-wal $D/wal$r) & fi
  B --mode closed --concurrency ${C:-32} --connections 4 --duration 8 --warmup 1 --scenario compute \
    ${NETWORK:+--network $NETWORK} --lines 2 --refund-ratio 0 > $D/c$r.txt 2>&1
  t1=$(ticks) i1=$(idle)
  curl -s 127.0.0.1:$MPORT/metrics > $D/m$r.txt
  prev=$D/m$((r - 1)).txt; [ -f $prev ] || prev=-
  echo "$NAME round $r: $(grep '^ok calls' $D/c$r.txt | sed 's/^ok calls: [0-9]* in [0-9.]* s = //; s/;.*//')," \
    "p99 $(grep -A1 '^call' $D/c$r.txt | tail -1 | awk '{print $6}') µs; db $(size $D/db.sqlite) MB, wal $(size $D/db.sqlite-wal) MB;" \
    "server cpu $((t1 - t0)) ticks, idle $((i1 - i0)) ticks"
  python3 - $prev $D/m$r.txt <<'PY'
import re, sys
def load(p):
    m = {}
    if p == '-':
        return m
    for l in open(p):
        r = re.match(r'(prorata_(?:group_commit|sqlite_wal_sync)_\w+?)(?:\{phase="(\w+)"\})? ([\d.e+-]+)$', l.strip())
        if r:
            m[(r.group(1), r.group(2))] = float(r.group(3))
    return m
a, b = load(sys.argv[1]), load(sys.argv[2])
d = lambda k: b.get(k, 0.0) - a.get(k, 0.0)
n = d(('prorata_group_commit_batch_orders_count', None))
if n:
    o = d(('prorata_group_commit_batch_orders_sum', None))
    ph = ' '.join('%s %.2f' % (p, d(('prorata_group_commit_phase_seconds_sum', p)) / n * 1e3)
                  for p in ['read', 'engine', 'write', 'commit'])
    s = d(('prorata_sqlite_wal_sync_seconds_count', None))
    ws = ' | wal sync %.2f ms x %d' % (d(('prorata_sqlite_wal_sync_seconds_sum', None)) / s * 1e3, s) if s else ''
    print('  batches %d, %.1f orders each; ms per batch: %s%s' % (n, o / n, ph, ws))
PY
done
kill $SP; wait $SP 2>/dev/null || true
trap - EXIT
if [ -n "$WALCOPY" ]; then
  for r in $(seq 1 $ROUNDS); do
    echo "== WAL frames per commit, round $r"; python3 $HERE/../sqlite/walframes.py $D/wal$r $D/db.sqlite | sed -n 1,8p
  done
fi
