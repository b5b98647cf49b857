#!/bin/bash
# benches/ab/pg-durable.sh /abs/BIN NAME: durable Compute on PostgreSQL (benches/ab/durable.sh,
# 64 in flight, PAID=live|month as there, on a fresh database migrated by `BIN migrate`), then with PGB=1 the database
# ceiling beside it: pgbench of the same batched statements (-D batch=${BATCH:-16} -D deferred=1,
# as the pgbench stage of benches/run.sh), at -c 2 and -c 4 (PGB_CS="2 3 4" to choose), on a second
# fresh database holding 1,000 of the results the run stored. Both databases are dropped at the end.
# SERVER_ENV="VAR=value ..." is given to the server only (not to the load generator).
# SHARE=1: each pgbench run again beside benches/ab/burn.py taking the cores the server and
# the load generator used in the server's run (/tmp/dur/pg-NAME/cpu.txt): pgbench with what
# PostgreSQL had left (RESULTS.md §31).
set -e
BIN=$1 NAME=$2; cd "$(dirname "$0")/../.."
LIVE=1; [ "${PAID:-live}" = live ] || LIVE=0   # pgbench pays its orders as the server run did
P="psql -h 127.0.0.1 -U postgres -qAt"
URL=postgres://postgres@127.0.0.1:5432
DB=pd_$NAME G=pgb_$NAME
$P -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
PRORATA_DATABASE_URL=$URL/$DB "$BIN" migrate > /dev/null
# A checkpoint first, as before each pgbench run: no run starts with WAL left by the one before.
$P -d $DB -c CHECKPOINT
bash benches/ab/durable.sh "$BIN" "${PORT:-7900}" "pg-$NAME" PRORATA_DATABASE_URL=$URL/$DB $SERVER_ENV | tail -4
if [ -n "$PGB" ]; then
  $P -d $DB -c "\\copy (SELECT result FROM splits LIMIT 1000) TO '/tmp/pg-durable-$NAME.txt'"
  $P -d postgres -c "DROP DATABASE IF EXISTS $G WITH (FORCE)" -c "CREATE DATABASE $G"
  PRORATA_DATABASE_URL=$URL/$G "$BIN" migrate > /dev/null
  $P -d $G -c "CREATE TABLE bench_payloads (id SERIAL PRIMARY KEY, body TEXT NOT NULL)"
  $P -d $G -c "\\copy bench_payloads (body) FROM '/tmp/pg-durable-$NAME.txt'"
  N=$($P -d $G -c "SELECT count(*) FROM bench_payloads")
  $P -d $G -f benches/pgbench/batch_setup.sql > /dev/null
  # pgbench of one batch per transaction at -c $1 after a checkpoint; $2: a suffix that
  # keeps the run's order ids apart; $3: the label its lines are printed with.
  batch_pgbench() {
    $P -d $G -c CHECKPOINT
    pgbench -h 127.0.0.1 -U postgres -n -M prepared -c $1 -j 2 -T 10 -D run="$(date +%s)$1$2" -D batch="${BATCH:-16}" \
      -D payloads="$N" -D deferred=1 -D live="$LIVE" -D clients=$1 -D seq=0 -f benches/pgbench/compute_batch.sql $G 2>&1 |
      grep -E '^tps|failed' | sed "s/^/$3: /"
  }
  [ -n "$SHARE" ] && share=$(awk '{printf "%.3f", ($1 + $2) / $3}' /tmp/dur/pg-$NAME/cpu.txt)
  for c in ${PGB_CS:-2 4}; do
    batch_pgbench $c "" "pgbench -c $c batch=${BATCH:-16}"
    if [ -n "$SHARE" ]; then
      python3 benches/ab/burn.py $share 10.5 > /tmp/pg-durable-$NAME.burn & BP=$!
      batch_pgbench $c 9 "pgbench -c $c batch=${BATCH:-16} beside $share cores taken"
      wait $BP; sed "s/^/  /" /tmp/pg-durable-$NAME.burn
    fi
  done
  $P -d postgres -c "DROP DATABASE IF EXISTS $G WITH (FORCE)"
fi
$P -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
