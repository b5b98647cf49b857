#!/bin/bash
# benches/ab/upline.sh BIN DB PORT NAME [setup]: with "setup", makes DB, a 1M-promoter network in
# chains of 10; otherwise GetUpline depth 10 for 10 s at 1 and then 64 in flight on DB (use a
# fresh copy per binary: the server caches what it reads). Output in /tmp/upl.
BIN=$1 DB=$2 PORT=$3 NAME=$4
mkdir -p /tmp/upl; cd /tmp/upl
PRORATA_SQLITE_PATH=$DB PRORATA_GRPC_ADDR=127.0.0.1:$PORT PRORATA_LOG_LEVEL=warn $BIN serve > /tmp/upl/server-$NAME.log 2>&1 &
SP=$!
for i in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
B() { $BIN bench --addr http://127.0.0.1:$PORT --mode closed "$@"; }
if [ "$5" = setup ]; then
  /usr/bin/time -f 'setup %e s' $BIN bench --addr http://127.0.0.1:$PORT --mode closed --concurrency 1 --connections 1 --duration 0.2 --warmup 0 --scenario empty --setup --network 1000000 --chain-depth 10 2>&1 | tail -3
else
  B --concurrency 1 --connections 1 --duration 10 --warmup 2 --scenario upline --network 1000000 --chain-depth 10 --levels 10 --json /tmp/upl/$NAME-c1.json > /tmp/upl/$NAME-c1.txt 2>&1
  B --concurrency 64 --connections 4 --duration 10 --warmup 2 --scenario upline --network 1000000 --chain-depth 10 --levels 10 --json /tmp/upl/$NAME-c64.json > /tmp/upl/$NAME-c64.txt 2>&1
  grep -E 'ok calls|p99|p50' /tmp/upl/$NAME-c1.txt /tmp/upl/$NAME-c64.txt | head
fi
kill $SP; wait $SP
