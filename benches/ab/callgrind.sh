#!/bin/bash
# benches/ab/callgrind.sh BIN PORT DIR: callgrind instructions per call on the server, empty and replay.
# DIR is a directory replay.sh left (db.sqlite, replay.grpc, health.grpc). Needs valgrind, h2load.
BIN=$1 PORT=$2 D=$3
mkdir -p /tmp/cg; cd /tmp/cg
PRORATA_SQLITE_PATH=$D/db.sqlite PRORATA_GRPC_ADDR=127.0.0.1:$PORT PRORATA_LOG_LEVEL=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg/out.$PORT.%p $BIN serve > /tmp/cg/server-$PORT.log 2>&1 &
VP=$!
for i in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
H() { h2load -n $1 -c 2 -m 8 -H 'content-type: application/grpc' -H 'te: trailers' -d "$3" "http://127.0.0.1:$PORT$2" | grep -E 'succeeded|status codes'; }
H 1000 /prorata.v1.CommissionService/Compute $D/replay.grpc
H 1000 /grpc.health.v1.Health/Check $D/health.grpc
callgrind_control -i on $VP >/dev/null
H 4000 /grpc.health.v1.Health/Check $D/health.grpc
callgrind_control -d empty $VP >/dev/null
callgrind_control -z $VP >/dev/null
H 4000 /prorata.v1.CommissionService/Compute $D/replay.grpc
callgrind_control -d replay $VP >/dev/null
kill $VP; wait $VP 2>/dev/null
for f in /tmp/cg/out.$PORT.*; do echo "$f $(grep -m1 '^summary\|^totals' $f)"; done
