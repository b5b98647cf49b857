#!/bin/bash
# benches/ab/engine-instructions.sh [BENCH_BINARY]: instructions per engine::compute (callgrind), for the
# 5-level/20-rule and the 1-level criterion benchmarks. Counts repeat to a few instructions, so they
# compare two builds on a noisy host where criterion's medians cannot (RESULTS.md §11).
# Default binary: the newest target/release/deps/engine-* (build it with `cargo bench --bench engine --no-run`).
# Two builds of one tree share that file name: copy the first binary away before building the second.
set -e
cd "$(dirname "$0")/../.."
B=${1:-$(ls -t target/release/deps/engine-* | grep -v '\.d$' | head -1)}
for b in split_5_levels_20_rules split_1_level_1_rule; do
  out=/tmp/engine-instructions.$b.out
  valgrind --tool=callgrind --callgrind-out-file=$out --toggle-collect='prorata::domain::engine::compute' \
    "$B" --bench $b --profile-time 1 > /tmp/engine-instructions.log 2>&1
  total=$(grep -m1 '^summary\|^totals' $out | awk '{print $2}')
  calls=$(callgrind_annotate --inclusive=yes --tree=caller $out 2>/dev/null \
    | grep -E '< .*engine::compute \(' | head -1 | sed -E 's/.*\(([0-9,]+)x\).*/\1/' | tr -d ,)
  echo "$b: $total instructions / $calls calls = $((total / calls)) per compute"
done
