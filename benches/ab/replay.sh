#!/bin/bash
# benches/ab/replay.sh BIN PORT NAME [VAR=value...]: a fresh server (SQLite, or PRORATA_DATABASE_URL=...),
# `prorata bench --setup`, then the empty RPC and a replay with `prorata bench` and with h2load,
# 8 s (DUR) each after 2 s; output in /tmp/rep/NAME, one summary line on stdout.
BIN=$1 PORT=$2 NAME=$3; shift 3
D=/tmp/rep/$NAME; rm -rf $D; mkdir -p $D; cd $D
env PRORATA_SQLITE_PATH=$D/db.sqlite "$@" PRORATA_GRPC_ADDR=127.0.0.1:$PORT PRORATA_LOG_LEVEL=warn $BIN serve > $D/server.log 2>&1 &
SP=$!
for i in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
B() { $BIN bench --addr http://127.0.0.1:$PORT --mode closed "$@"; }
B64() { B --concurrency 64 --connections 4 "$@"; }
B --duration 0.2 --warmup 0 --concurrency 1 --connections 1 --scenario empty --setup > $D/setup.txt 2>&1
B64 --duration ${DUR:-8} --warmup 2 --scenario empty > $D/empty.txt 2>&1
B64 --duration ${DUR:-8} --warmup 2 --scenario replay --body-out $D/replay.grpc > $D/replay.txt 2>&1
printf '\0\0\0\0\0' > $D/health.grpc
H() { h2load -D ${DUR:-8} --warm-up-time 2 -c 4 -m 16 -H 'content-type: application/grpc' -H 'te: trailers' -d "$2" "http://127.0.0.1:$PORT$1"; }
H /grpc.health.v1.Health/Check $D/health.grpc > $D/h2-empty.txt 2>&1
H /prorata.v1.CommissionService/Compute $D/replay.grpc > $D/h2-replay.txt 2>&1
kill $SP; wait $SP 2>/dev/null
echo "$NAME: bench empty $(grep -o '= [0-9.]*/s' $D/empty.txt) replay $(grep -o '= [0-9.]*/s' $D/replay.txt) | h2load empty $(grep -o 'finished in.*req/s' $D/h2-empty.txt | grep -o '[0-9.]* req/s') replay $(grep -o 'finished in.*req/s' $D/h2-replay.txt | grep -o '[0-9.]* req/s') | h2 replay status: $(grep 'status codes' $D/h2-replay.txt)"
