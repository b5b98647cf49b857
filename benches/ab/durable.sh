#!/bin/bash
# benches/ab/durable.sh BIN PORT NAME [VAR=value...]: durable Compute of unique 2-line orders, 64 in
# flight, 8 s (DUR), on a fresh SQLite file (or PRORATA_DATABASE_URL=...); output in /tmp/dur/NAME.
BIN=$1 PORT=$2 NAME=$3; shift 3
D=/tmp/dur/$NAME; rm -rf $D; mkdir -p $D; cd $D
env PRORATA_SQLITE_PATH=$D/db.sqlite "$@" PRORATA_GRPC_ADDR=127.0.0.1:$PORT PRORATA_LOG_LEVEL=warn $BIN serve > $D/server.log 2>&1 &
SP=$!
for i in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
B() { $BIN bench --addr http://127.0.0.1:$PORT --mode closed "$@"; }
B --duration 0.2 --warmup 0 --concurrency 1 --connections 1 --scenario empty --setup > $D/setup.txt 2>&1
B --concurrency 64 --connections 4 --duration ${DUR:-8} --warmup 2 --scenario compute --lines 2 --refund-ratio 0 > $D/compute.txt 2>&1
kill $SP; wait $SP 2>/dev/null
echo "$NAME: $(grep '^ok calls' $D/compute.txt) | $(grep -A1 '^call' $D/compute.txt | tail -1)"
