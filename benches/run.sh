#!/usr/bin/env bash
# Every benchmark of issue 4, with its ceiling, in one run (benches/RESULTS.md, section 7).
#
#   bash benches/run.sh                 # the full suite: ~18 min on the 2-vCPU VM of RESULTS.md
#                                       # (warm build cache; +11 min to compile from scratch)
#   QUICK=1 bash benches/run.sh         # a smoke run: a few seconds per point, small set-ups
#
# It builds release, then runs, each server on its own loopback port and its own fresh
# database, everything of the issue's target table:
#   - the split engine (criterion: `cargo bench --bench engine`, and `benches/zen-peer`: `cargo bench --bench zen`)
#   - server A, SQLite: the gRPC ceiling (an empty unary RPC, grpc.health.v1.Health/Check)
#     measured with h2load and with `prorata bench`; replay of stored orders; durable Compute
#     of unique 2-line orders; ListSplits first page of an account with ACCOUNT_ORDERS shares
#   - server B, PostgreSQL (database PG_DB, made fresh and dropped at the end): the same
#     Compute (at 64 in flight, and at 56), replay and ListSplits; then the database ceiling: pgbench running the
#     statements of one Compute (benches/pgbench/compute.sql) at the same concurrency, on a
#     fresh database migrated by `prorata migrate` (PGBENCH_DB, dropped at the end)
#   - server C, SQLite: growth curves with Preview (compute without storing): levels 1-10,
#     lines 1-100, rules 1-1,000, network 10k-1M promoters; GetUpline at depth 10 on the
#     largest network
#   - server D, SQLite: 5,000 calls in flight (h2load -c 500 -m 10, then `prorata bench
#     --concurrency 5000 --connections 500`, which counts gRPC status codes), replaying
#     stored orders; the server's RSS is sampled and its peak (VmHWM) reported
# Raw outputs go to OUT (default /tmp/prorata-bench-run/<UTC time>), with summary.json;
# benches/plot.py draws the growth charts (benches/charts/*.png; OUT/charts only when QUICK).
#
# Settings (environment): QUICK, OUT, CARGO_TARGET_DIR (default ./target), PG (server URL
# without database, default postgres://postgres@127.0.0.1:5432), PG_DB, PGBENCH_DB,
# PORT (first of four ports, default 50190), PLOT_VENV, STAGES (default "criterion a b
# pgbench c d": a subset re-runs only those; pgbench needs b, whose stored results it copies).
# Re-runnable: databases and files are made fresh; servers are stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
T0=$(date +%s)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
QUICK=${QUICK:-0}
OUT=${OUT:-/tmp/prorata-bench-run/$STAMP}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
PG_DB=${PG_DB:-prorata_bench}
PGBENCH_DB=${PGBENCH_DB:-prorata_pgbench}
PORT=${PORT:-50190}
PLOT_VENV=${PLOT_VENV:-/tmp/prorata-plot-venv}
STAGES=" ${STAGES:-criterion a b pgbench c d} "
want() { [[ $STAGES == *" $1 "* ]]; }

# Closed loop, 64 calls in flight over 4 HTTP/2 connections, as in sections 2-5.
CONC=64
CONNS=4
if [ "$QUICK" = 1 ]; then
  DUR=2; WARM=1; PGB_T=3
  ACCOUNT_ORDERS=2000
  NETWORK_STEPS="10000 30000 100000"
  LEVELS_STEPS="1 2 3 5 7 10"; LINES_STEPS="1 2 10 100"; RULES_STEPS="1 10 100 1000"
  CHARTS=$OUT/charts
else
  DUR=10; WARM=2; PGB_T=10
  ACCOUNT_ORDERS=100000
  NETWORK_STEPS="10000 30000 100000 300000 1000000"
  LEVELS_STEPS="1 2 3 4 5 6 7 8 9 10"; LINES_STEPS="1 2 5 10 20 50 100"
  RULES_STEPS="1 3 10 30 100 300 1000"
  CHARTS=${CHARTS:-$ROOT/benches/charts}
fi
# The base point every growth series varies one dimension of: 5 levels, 2 lines,
# 10k promoters in chains of 10, 20 rules (the shape of benches/engine.rs).
BASE_LEVELS=5; BASE_LINES=2; BASE_NETWORK=10000; BASE_RULES=20; CHAIN=10

PA=$PORT; PB=$((PORT + 1)); PC=$((PORT + 2)); PD=$((PORT + 3))
mkdir -p "$OUT"/{bench,h2load,pgbench,bodies,rss,criterion,cpu}
: >"$OUT/stages.tsv"

# Servers inherit nothing from the caller's PRORATA_* settings.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(PRORATA_[A-Z_]*\)=.*/\1/p')

log() { echo "[$(date -u +%T)] $*" | tee -a "$OUT/run.log"; }
STAGE=""; STAGE_T=0
stage() {
  local now; now=$(date +%s)
  [ -n "$STAGE" ] && printf '%s\t%s\n' "$STAGE" $((now - STAGE_T)) >>"$OUT/stages.tsv"
  STAGE=$1; STAGE_T=$now
  if [ -n "$STAGE" ]; then
    log "== $STAGE"
    # What else runs on the machine (the cores are shared): noted for every stage.
    { echo "== $STAGE $(date -u +%T) loadavg $(cat /proc/loadavg)"
      top -b -n 2 -d 0.5 -w 200 | awk '/^top -/ {n++} n == 2' | sed -n '7,14p'; } >>"$OUT/noise.log"
  fi
}

declare -A PIDS=()
BIN=$OUT/prorata
SRV=0   # pid of the server under test, for the CPU accounting below

# CPU accounting of one measured command (the cores are shared with the client and with
# whatever else runs): machine-wide busy cores from /proc/stat, the server's from
# /proc/PID/stat, the client's from bash's `time`; "other" is the rest of the machine.
TICK=$(getconf CLK_TCK)
TIMEFORMAT='%U %S'
cpu_mark() {
  CPU0=$(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat)
  SRV0=$(awk '{print $14+$15}' "/proc/$SRV/stat" 2>/dev/null || echo 0)
  WALL0=$(date +%s.%N)
}
# cpu_report NAME TIMEFILE: writes cpu/NAME.json (cores, averaged over the whole command).
cpu_report() {
  local name=$1 timefile=$2 cpu1 srv1 wall1
  cpu1=$(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat)
  srv1=$(awk '{print $14+$15}' "/proc/$SRV/stat" 2>/dev/null || echo 0)
  wall1=$(date +%s.%N)
  python3 - "$CPU0" "$cpu1" "$SRV0" "$srv1" "$WALL0" "$wall1" "$TICK" "$(tail -1 "$timefile")" \
    >"$OUT/cpu/$name.json" <<'PY'
import json, sys
c0, c1, s0, s1, w0, w1, tick, client = sys.argv[1:9]
(t0, i0), (t1, i1) = map(float, c0.split()), map(float, c1.split())
wall, tick = float(w1) - float(w0), float(tick)
busy = ((t1 - t0) - (i1 - i0)) / tick / wall
server = (float(s1) - float(s0)) / tick / wall
try:
    client = sum(map(float, client.split())) / wall
except ValueError:
    client = None
other = busy - server - (client or 0)
print(json.dumps({"wall_s": round(wall, 2), "busy_cores": round(busy, 2), "server_cores": round(server, 2),
                  "client_cores": None if client is None else round(client, 2), "other_cores": round(other, 2)}))
PY
}
psql_pg() { psql "$PG/${1}" -v ON_ERROR_STOP=1 -qAt "${@:2}"; }

cleanup() {
  local rc=$?
  for name in "${!PIDS[@]}"; do kill -TERM "${PIDS[$name]}" 2>/dev/null || true; done
  for name in "${!PIDS[@]}"; do wait "${PIDS[$name]}" 2>/dev/null || true; done
  [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null || true
  psql_pg postgres -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" 2>/dev/null || true
  psql_pg postgres -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)" 2>/dev/null || true
  [ $rc -ne 0 ] && echo "benches/run.sh: failed (exit $rc); outputs in $OUT" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME PORT [VAR=value ...]: `prorata serve` on 127.0.0.1:PORT, cwd OUT.
start_server() {
  local name=$1 port=$2; shift 2
  (cd "$OUT" && exec env "$@" PRORATA_GRPC_ADDR="127.0.0.1:$port" PRORATA_LOG_LEVEL=warn \
     "$BIN" serve) >"$OUT/server-$name.log" 2>&1 &
  PIDS[$name]=$!
  SRV=$!
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "server $name: pid ${PIDS[$name]} on 127.0.0.1:$port ($*)"
      return 0
    fi
    kill -0 "${PIDS[$name]}" 2>/dev/null || { cat "$OUT/server-$name.log" >&2; return 1; }
    sleep 0.1
  done
  echo "server $name did not listen on $port" >&2
  return 1
}
# stop_server NAME: SIGTERM, wait; its peak RSS goes to rss/NAME-final.txt first.
stop_server() {
  local name=$1 pid=${PIDS[$1]}
  grep -E 'VmHWM|VmRSS' "/proc/$pid/status" >"$OUT/rss/$name-final.txt" 2>/dev/null || true
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$name]"
}

# bench NAME PORT ARGS...: `prorata bench`, output in bench/NAME.{txt,json}. The closed
# loop's shape comes from C (concurrency), N (connections), DURATION and WARMUP.
bench() {
  local name=$1 port=$2 rc=0; shift 2
  cpu_mark
  { time "$BIN" bench --addr "http://127.0.0.1:$port" --mode closed \
    --concurrency "${C:-$CONC}" --connections "${N:-$CONNS}" \
    --duration "${DURATION:-$DUR}" --warmup "${WARMUP:-$WARM}" \
    --json "$OUT/bench/$name.json" "$@" >"$OUT/bench/$name.txt" 2>&1; } 2>"$OUT/cpu/$name.time" || rc=$?
  cpu_report "$name" "$OUT/cpu/$name.time"
  grep -E '^(ok calls|setup|probe|error|replay setup)' "$OUT/bench/$name.txt" | sed "s/^/$name: /" |
    tee -a "$OUT/run.log" || true
  [ $rc -eq 0 ] || { cat "$OUT/bench/$name.txt" >&2; echo "prorata bench $name failed" >&2; return 1; }
}
# Set-up only: the set-up options, then a fraction of a second of the cheapest call.
setup_only() { DURATION=0.2 WARMUP=0 C=1 N=1 bench "$@" --scenario empty; }

# grpc_check PORT PATH BODY NAME: one call with curl; the gRPC status is in the trailers,
# which h2load never reads, so a 200 could hide an error.
grpc_check() {
  local port=$1 path=$2 body=$3 name=$4
  curl -sS --http2-prior-knowledge -X POST -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary "@$body" -D "$OUT/h2load/check-$name.headers" -o "$OUT/h2load/check-$name.body" \
    "http://127.0.0.1:$port$path"
  if ! grep -qi '^grpc-status: *0' "$OUT/h2load/check-$name.headers"; then
    echo "the h2load body of $name does not get grpc-status 0:" >&2
    cat "$OUT/h2load/check-$name.headers" >&2
    return 1
  fi
  log "checked $path with curl: grpc-status 0 ($(wc -c <"$OUT/h2load/check-$name.body") response bytes)"
}
# h2 NAME PORT PATH BODY H2LOAD-ARGS...: h2load for DUR seconds after WARM, gRPC headers,
# POST of BODY; per-request log for percentiles.
h2() {
  local name=$1 port=$2 path=$3 body=$4; shift 4
  cpu_mark
  { time h2load -D "$DUR" --warm-up-time "$WARM" "$@" \
    -H 'content-type: application/grpc' -H 'te: trailers' -d "$body" \
    --log-file "$OUT/h2load/$name.log" "http://127.0.0.1:$port$path" >"$OUT/h2load/$name.txt" 2>&1; } \
    2>"$OUT/cpu/h2load-$name.time"
  cpu_report "h2load-$name" "$OUT/cpu/h2load-$name.time"
  grep -E '^(finished|requests|status codes)' "$OUT/h2load/$name.txt" | tee -a "$OUT/run.log"
}

# Tools from Debian's packages, installed when missing (h2load is in nghttp2-client).
if ! command -v h2load >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client; } >/dev/null 2>&1 ||
      { echo "benches/run.sh: could not install nghttp2-client (h2load)" >&2; exit 1; }
  else
    echo "benches/run.sh needs h2load: apt-get install nghttp2-client" >&2; exit 1
  fi
fi

# The machine, the tree, the tools.
{
  echo "date: $(date -u +%FT%TZ)"; echo "nproc: $(nproc)"
  lscpu | grep -E 'Model name|Socket|Core|Thread|L3|Hypervisor' || true
  free -g | head -2; uname -r
  rustc --version; cargo --version
  h2load --version | head -1; pgbench --version; psql --version
  if git rev-parse --git-dir >/dev/null 2>&1; then
    echo "git: $(git rev-parse --short HEAD) + $(git status --short | wc -l) changed files"
  else
    echo "git: $ROOT is not a git checkout"
  fi
  echo "quick: $QUICK; duration ${DUR}s after ${WARM}s warm-up; closed loop $CONC in flight, $CONNS connections"
} >"$OUT/machine.txt" 2>&1
git status --short >"$OUT/git-status.txt" 2>&1 || true
cat >"$OUT/settings.json" <<JSON
{"quick": $QUICK, "duration_s": $DUR, "warmup_s": $WARM, "concurrency": $CONC, "connections": $CONNS,
 "pgbench_s": $PGB_T, "account_orders": $ACCOUNT_ORDERS, "network_steps": [${NETWORK_STEPS// /, }],
 "base": {"levels": $BASE_LEVELS, "lines": $BASE_LINES, "network": $BASE_NETWORK, "rules": $BASE_RULES,
          "chain_depth": $CHAIN}, "started": "$STAMP"}
JSON
for tool in h2load pgbench psql curl python3; do
  command -v "$tool" >/dev/null || { echo "benches/run.sh needs $tool" >&2; exit 1; }
done
psql_pg postgres -c 'SELECT 1' >/dev/null

stage build
cargo build --release --bin prorata 2>&1 | tail -3 | tee -a "$OUT/run.log"
# A copy, so a build by someone else cannot replace the binary mid-run.
cp "$CARGO_TARGET_DIR/release/prorata" "$BIN"

if want criterion; then
  stage criterion
  touch "$OUT/criterion/.start"
  quick=(); [ "$QUICK" = 1 ] && quick=(--quick)
  cargo bench --bench engine -- "${quick[@]}" >"$OUT/criterion/engine.txt" 2>&1
  if [ -f benches/zen-peer/benches/zen.rs ]; then
    (cd benches/zen-peer && cargo bench --bench zen -- "${quick[@]}") >"$OUT/criterion/zen.txt" 2>&1 || log "zen bench failed (see criterion/zen.txt)"
  fi
  # Medians of every benchmark this run measured.
  find "$CARGO_TARGET_DIR/criterion" -path '*/new/estimates.json' -newer "$OUT/criterion/.start" |
    while read -r f; do
      rel=${f#"$CARGO_TARGET_DIR/criterion/"}; rel=${rel%/new/estimates.json}
      python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); print(sys.argv[2], e["median"]["point_estimate"])' "$f" "$rel"
    done | sort >"$OUT/criterion/medians.txt"
  cat "$OUT/criterion/medians.txt" | tee -a "$OUT/run.log"
fi

# ---------------------------------------------------------------- A: SQLite
if want a; then
stage "A: SQLite (ceiling, replay, Compute, ListSplits)"
rm -f "$OUT"/a.db*
start_server a "$PA" PRORATA_SQLITE_PATH="$OUT/a.db"
setup_only a-setup "$PA" --setup
printf '\0\0\0\0\0' >"$OUT/bodies/health.grpc"   # HealthCheckRequest{} framed: empty message
grpc_check "$PA" /grpc.health.v1.Health/Check "$OUT/bodies/health.grpc" a-empty
h2 a-empty-c64 "$PA" /grpc.health.v1.Health/Check "$OUT/bodies/health.grpc" -c "$CONNS" -m $((CONC / CONNS))
bench a-empty-c64 "$PA" --scenario empty
C=1 N=1 bench a-empty-c1 "$PA" --scenario empty
bench a-replay-c64 "$PA" --scenario replay --body-out "$OUT/bodies/replay-a.grpc"
# The same replay with h2load (one stored order's request, over and over), beside the
# h2load ceiling above: both measured by the same cheap client.
grpc_check "$PA" /prorata.v1.CommissionService/Compute "$OUT/bodies/replay-a.grpc" a-replay
grep -qi '^prorata-replayed: *true' "$OUT/h2load/check-a-replay.headers" ||
  { echo "the replay body of A is not a replay" >&2; exit 1; }
h2 a-replay-c64 "$PA" /prorata.v1.CommissionService/Compute "$OUT/bodies/replay-a.grpc" -c "$CONNS" -m $((CONC / CONNS))
bench a-compute-c64 "$PA" --scenario compute --lines 2 --refund-ratio 0
# The same at 32 and 24 in flight (p99 at a lower load; 24 came closest to the SQLite
# target in RESULTS.md §18), and with orders paid at random seconds of the month in
# random order (a backfill) instead of about in sequence (live traffic).
C=32 N=4 bench a-compute-c32 "$PA" --scenario compute --lines 2 --refund-ratio 0
C=24 N=4 bench a-compute-c24 "$PA" --scenario compute --lines 2 --refund-ratio 0
bench a-compute-month-c64 "$PA" --scenario compute --lines 2 --refund-ratio 0 --paid-at month
setup_only a-account "$PA" --account-orders "$ACCOUNT_ORDERS" --lines 2
bench a-list-c64 "$PA" --scenario list-splits
C=1 N=1 bench a-list-c1 "$PA" --scenario list-splits
stop_server a
fi

# ---------------------------------------------------------------- B: PostgreSQL
if want b; then
stage "B: PostgreSQL (Compute, replay, ListSplits)"
psql_pg postgres -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)"
psql_pg postgres -c "CREATE DATABASE $PG_DB"
start_server b "$PB" PRORATA_DATABASE_URL="$PG/$PG_DB" PRORATA_METRICS_ADDR="127.0.0.1:$((PORT + 10))"
setup_only b-setup "$PB" --setup
bench b-empty-c64 "$PB" --scenario empty
C=1 N=1 bench b-empty-c1 "$PB" --scenario empty
# A checkpoint first, here and before each pgbench run, so that neither starts while
# PostgreSQL is still writing out an earlier stage's WAL.
psql_pg "$PG_DB" -c CHECKPOINT
bench b-compute-c64 "$PB" --scenario compute --lines 2 --refund-ratio 0
# The batches group commit formed during the Compute run (mean orders per transaction):
# pgbench below runs batches of that size.
curl -s "http://127.0.0.1:$((PORT + 10))/metrics" >"$OUT/pgbench/server-metrics.txt"
awk '/^prorata_group_commit_batch_orders_sum/ {s=$2} /^prorata_group_commit_batch_orders_count/ {c=$2}
     END {if (c > 0) printf "%d %d %.0f\n", s, c, s / c; else print "0 0 1"}' \
  "$OUT/pgbench/server-metrics.txt" >"$OUT/pgbench/batches.txt"
log "group commit during b-compute-c64 (orders, batches, mean): $(cat "$OUT/pgbench/batches.txt")"
# At 56 in flight as well: where the 64-in-flight run's p99 is just over 20 ms, a caller
# holding 56 in flight may keep it under (RESULTS.md §30). pgbench runs the 64-in-flight
# run's batch, larger than this run's, so this run's ceiling is not set low.
psql_pg "$PG_DB" -c CHECKPOINT
C=56 N=4 bench b-compute-c56 "$PB" --scenario compute --lines 2 --refund-ratio 0
psql_pg "$PG_DB" -c CHECKPOINT
bench b-compute-month-c64 "$PB" --scenario compute --lines 2 --refund-ratio 0 --paid-at month
bench b-replay-c64 "$PB" --scenario replay
setup_only b-account "$PB" --account-orders "$ACCOUNT_ORDERS" --lines 2
bench b-list-c64 "$PB" --scenario list-splits
C=1 N=1 bench b-list-c1 "$PB" --scenario list-splits
stop_server b
# The stored results of the Compute run: their size, and a sample for pgbench.
PREFIX=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["order_id_prefix"])' "$OUT/bench/b-compute-c64.json")
psql_pg "$PG_DB" -F ' ' -c "SELECT count(*), round(avg(length(result))), round(avg(pg_column_size(result)))
  FROM splits WHERE order_id LIKE '$PREFIX-%'" >"$OUT/pgbench/stored-results.txt"
psql_pg "$PG_DB" -c "\\copy (SELECT result FROM splits WHERE order_id LIKE '$PREFIX-%' LIMIT 1000) TO '$OUT/pgbench/payloads.txt'"
psql_pg postgres -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)"
fi

if want pgbench; then
stage "pgbench: the statements of a Compute"
psql_pg postgres -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)"
psql_pg postgres -c "CREATE DATABASE $PGBENCH_DB"
PRORATA_DATABASE_URL="$PG/$PGBENCH_DB" "$BIN" migrate | tee -a "$OUT/run.log"
psql_pg "$PGBENCH_DB" -c "CREATE TABLE bench_payloads (id SERIAL PRIMARY KEY, body TEXT NOT NULL)"
psql_pg "$PGBENCH_DB" -c "\\copy bench_payloads (body) FROM '$OUT/pgbench/payloads.txt'"
PAYLOADS=$(psql_pg "$PGBENCH_DB" -c "SELECT count(*) FROM bench_payloads")
[ "$PAYLOADS" -gt 0 ] || { echo "no stored result to copy for pgbench" >&2; exit 1; }
# Which schema `prorata migrate` made (see the top of compute.sql).
PARTITIONED=$(psql_pg "$PGBENCH_DB" -c "SELECT (to_regclass('split_keys') IS NOT NULL)::int")
log "pgbench schema: split_keys and month partitions: $PARTITIONED"
# The batched statements at the server's concurrency in the database: group_commit_workers (2)
# batch transactions at once, each of the mean batch the server formed.
psql_pg "$PGBENCH_DB" -f benches/pgbench/batch_setup.sql
BATCH=$(awk '{print $3}' "$OUT/pgbench/batches.txt" 2>/dev/null || echo 16)
[ "${BATCH:-0}" -ge 1 ] || BATCH=16
# deferred=1: the rule set `--setup` publishes reads no order history, so the server's
# batches move counters and claim buyers at their end (compute_batch.sql, ARCHITECTURE.md).
# -c 2 is the server's concurrency (group_commit_workers = 2 batch transactions at once);
# -c 4 gives the database twice that. The ceiling is the best of every pgbench run.
# live=1 pays the orders about in sequence (b-compute-c64, `--paid-at live`), live=0 at
# random seconds of the month (b-compute-month-c64): each server run has its own ceiling.
for live in 1 0; do
for c in 2 4; do
  name=batch-c$c; [ "$live" = 1 ] || name=batch-month-c$c
  psql_pg "$PGBENCH_DB" -c CHECKPOINT
  SRV=0; cpu_mark
  { time pgbench -n -M prepared -c "$c" -j 2 -T "$PGB_T" -D run="$(date +%s)$live$c" -D batch="$BATCH" -D payloads="$PAYLOADS" -D deferred=1 \
    -D live="$live" -D clients="$c" -D seq=0 \
    -f benches/pgbench/compute_batch.sql "$PG/$PGBENCH_DB" >"$OUT/pgbench/$name.txt" 2>&1; } 2>"$OUT/cpu/pgbench-$name.time"
  cpu_report "pgbench-$name" "$OUT/cpu/pgbench-$name.time"
  grep -E '^(number of transactions actually|number of failed|latency average|tps)' "$OUT/pgbench/$name.txt" |
    sed "s/^/pgbench batch=$BATCH -c $c live=$live: /" | tee -a "$OUT/run.log"
  tps=$(awk '/^tps/ {print $3}' "$OUT/pgbench/$name.txt")
  log "pgbench batch ceiling (live=$live): $tps transactions/s x $BATCH orders = $(python3 -c "print(round($tps * $BATCH))") orders/s"
done
done
# One order per transaction (group commit off), at the gRPC run's concurrency (64) and
# the pool's (16): the ceiling without batching, for comparison.
for c in "$CONC" 16; do
  psql_pg "$PGBENCH_DB" -c CHECKPOINT
  SRV=0; cpu_mark
  { time pgbench -n -M prepared -c "$c" -j 2 -T "$PGB_T" -D run="$(date +%s)$c" -D payloads="$PAYLOADS" -D partitioned="$PARTITIONED" \
    -D live=1 -D clients="$c" -D seq=0 \
    -f benches/pgbench/compute.sql "$PG/$PGBENCH_DB" >"$OUT/pgbench/c$c.txt" 2>&1; } 2>"$OUT/cpu/pgbench-c$c.time"
  cpu_report "pgbench-c$c" "$OUT/cpu/pgbench-c$c.time"
  grep -E '^(number of transactions actually|number of failed|latency average|tps)' "$OUT/pgbench/c$c.txt" |
    sed "s/^/pgbench -c $c: /" | tee -a "$OUT/run.log"
done
psql_pg "$PGBENCH_DB" -c "SELECT count(*) FROM splits" >"$OUT/pgbench/rows.txt"
psql_pg postgres -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)"
fi

# ---------------------------------------------------------------- C: growth (Preview)
if want c; then
stage "C: growth curves (Preview, SQLite)"
rm -f "$OUT"/c.db*
start_server c "$PC" PRORATA_SQLITE_PATH="$OUT/c.db"
setup_only c-setup "$PC" --setup --network "$BASE_NETWORK" --chain-depth "$CHAIN" --rules "$BASE_RULES"
shape() { echo --network "${1:-$BASE_NETWORK}" --chain-depth "$CHAIN" --levels "${2:-$BASE_LEVELS}" --lines "${3:-$BASE_LINES}"; }
for l in $LEVELS_STEPS; do
  # shellcheck disable=SC2046
  bench "growth-levels-$l" "$PC" --scenario preview $(shape "" "$l")
done
for n in $LINES_STEPS; do
  # shellcheck disable=SC2046
  bench "growth-lines-$n" "$PC" --scenario preview $(shape "" "" "$n")
done
for r in $RULES_STEPS; do
  # shellcheck disable=SC2046
  bench "growth-rules-$r" "$PC" --scenario preview --setup-rules --rules "$r" $(shape)
done
setup_only c-rules-back "$PC" --setup-rules --rules "$BASE_RULES"
prev=0
for n in $NETWORK_STEPS; do
  grow=(); [ "$n" -gt "$BASE_NETWORK" ] && grow=(--setup-network --network-from "$prev")
  # shellcheck disable=SC2046
  bench "growth-network-$n" "$PC" --scenario preview "${grow[@]}" $(shape "$n")
  prev=$n
done
NET_MAX=$prev
bench c-upline-c64 "$PC" --scenario upline --network "$NET_MAX" --chain-depth "$CHAIN" --levels 10
C=1 N=1 bench c-upline-c1 "$PC" --scenario upline --network "$NET_MAX" --chain-depth "$CHAIN" --levels 10
bench c-empty-c64 "$PC" --scenario empty
C=1 N=1 bench c-empty-c1 "$PC" --scenario empty
stop_server c
fi

# ---------------------------------------------------------------- D: 5,000 in flight
if want d; then
stage "D: 5,000 calls in flight (replay, SQLite)"
rm -f "$OUT"/d.db*
start_server d "$PD" PRORATA_SQLITE_PATH="$OUT/d.db"
PID_D=${PIDS[d]}
setup_only d-setup "$PD" --setup
# Stores 1,000 orders and replays them at 64 in flight; writes the first one's request
# (gRPC-framed) for h2load.
bench d-replay-c64 "$PD" --scenario replay --body-out "$OUT/bodies/replay.grpc"
grpc_check "$PD" /prorata.v1.CommissionService/Compute "$OUT/bodies/replay.grpc" d-replay
grep -qi '^prorata-replayed: *true' "$OUT/h2load/check-d-replay.headers" ||
  { echo "the replay body is not a replay" >&2; exit 1; }
grep -E 'VmRSS|VmHWM' "/proc/$PID_D/status" >"$OUT/rss/d-before.txt"
# RSS every 200 ms while the two runs last.
( while kill -0 "$PID_D" 2>/dev/null; do
    printf '%s\t%s\n' "$(date +%s.%N)" "$(awk '/VmRSS/ {print $2}' "/proc/$PID_D/status" 2>/dev/null)"
    sleep 0.2
  done ) >"$OUT/rss/d-samples.tsv" &
SAMPLER=$!
echo 5 >"/proc/$PID_D/clear_refs"   # resets VmHWM: the peak below is this run's
h2 d-replay-5000 "$PD" /prorata.v1.CommissionService/Compute "$OUT/bodies/replay.grpc" -c 500 -m 10 -t 2
grep -E 'VmRSS|VmHWM' "/proc/$PID_D/status" >"$OUT/rss/d-after-h2load.txt"
echo 5 >"/proc/$PID_D/clear_refs"
C=5000 N=500 bench d-replay-5000 "$PD" --scenario replay
grep -E 'VmRSS|VmHWM' "/proc/$PID_D/status" >"$OUT/rss/d-after-bench.txt"
sleep 3
grep -E 'VmRSS|VmHWM' "/proc/$PID_D/status" >"$OUT/rss/d-settled.txt"
kill "$SAMPLER" 2>/dev/null || true; SAMPLER=""
stop_server d
fi

# ---------------------------------------------------------------- summary and charts
stage "summary and charts"
T1=$(date +%s)
printf 'total\t%s\n' $((T1 - T0)) >>"$OUT/stages.tsv"
python3 benches/summarize.py "$OUT"
if [ ! -x "$PLOT_VENV/bin/python" ] || ! "$PLOT_VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$PLOT_VENV"
  "$PLOT_VENV/bin/pip" install -q matplotlib
fi
mkdir -p "$CHARTS" "$OUT/charts"
"$PLOT_VENV/bin/python" benches/plot.py "$OUT/summary.json" "$CHARTS"
if [ "$CHARTS" != "$OUT/charts" ]; then cp "$CHARTS"/*.png "$OUT/charts/" 2>/dev/null || true; fi
stage ""
log "done in $(( $(date +%s) - T0 )) s; outputs in $OUT"
