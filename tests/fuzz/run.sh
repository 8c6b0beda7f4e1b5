#!/bin/sh
# Build every libFuzzer target (tests/fuzz/fuzz_*.c, each with the other .c files here and
# src_c/*.c) with clang -fsanitize=fuzzer,address,undefined, then run each in turn for
# FUZZ_TIME seconds (default 600) or FUZZ_RUNS executions (default: no bound), whichever
# comes first, on its committed corpus tests/fuzz/corpus/<target>/. New inputs go to
# build/fuzz/corpus/<target>/ (the committed corpus is only read: to keep some, minimize
# them into it with -merge=1, see the README); a crash or failed property is saved as
# build/fuzz/<target>-crash-<sha1> and ends the run with status 1.
# Usage (from the repository root): sh tests/fuzz/run.sh [target ...]   (`make fuzz`)
set -eu
CLANG=${CLANG:-clang}
FUZZ_TIME=${FUZZ_TIME:-600}
FUZZ_RUNS=${FUZZ_RUNS:--1}
OUT=build/fuzz
COMMON="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -O1 -UNDEBUG -fno-omit-frame-pointer
        -fsanitize=address,undefined -fno-sanitize-recover=undefined -I src_c -I tests/fuzz"
# src_c/ gets libFuzzer's whole instrumentation; the targets and their helpers (models and
# property checks, compared over and over) no comparison tracing, which would be half of
# the time of every execution and guides nothing in src_c.
SRC_FLAGS="$COMMON -fsanitize=fuzzer-no-link"
HARNESS_FLAGS="$COMMON -fsanitize=fuzzer-no-link -fno-sanitize-coverage=trace-cmp"
HELPERS=$(ls tests/fuzz/*.c | grep -v '/fuzz_[^/]*\.c$')
if [ $# -gt 0 ]; then TARGETS=$*; else TARGETS=$(ls tests/fuzz/fuzz_*.c | sed 's|.*/||; s|\.c$||'); fi
mkdir -p "$OUT/obj"
objs=""
for src in src_c/*.c $HELPERS; do
  obj="$OUT/obj/$(basename "$src" .c).o"
  case $src in src_c/*) flags=$SRC_FLAGS ;; *) flags=$HARNESS_FLAGS ;; esac
  # shellcheck disable=SC2086
  "$CLANG" $flags -c "$src" -o "$obj"
  objs="$objs $obj"
done
for t in $TARGETS; do
  # shellcheck disable=SC2086
  "$CLANG" $HARNESS_FLAGS -fsanitize=fuzzer "tests/fuzz/$t.c" $objs -o "$OUT/$t"
done
echo "built: $TARGETS"
for t in $TARGETS; do
  mkdir -p "$OUT/corpus/$t"
  start=$(date +%s)
  if ! "$OUT/$t" -max_total_time="$FUZZ_TIME" -runs="$FUZZ_RUNS" -max_len=4096 -print_final_stats=1 \
      -artifact_prefix="$OUT/$t-" "$OUT/corpus/$t" "tests/fuzz/corpus/$t" > "$OUT/$t.log" 2>&1; then
    tail -n 60 "$OUT/$t.log"
    echo "$t: FAILED (log: $OUT/$t.log; the input: $OUT/$t-crash-*)"
    exit 1
  fi
  # libFuzzer's last status line ("#N DONE cov: C ft: F corp: ...") and final stats
  awk -v t="$t" -v secs=$(( $(date +%s) - start )) '
    /^#[0-9]+/ { for (i = 1; i <= NF; i++) { if ($i == "cov:") cov = $(i + 1); if ($i == "ft:") ft = $(i + 1);
                                              if ($i == "corp:") corp = $(i + 1) } }
    /stat::number_of_executed_units:/ { runs = $2 }
    /stat::average_exec_per_sec:/ { rate = $2 }
    /stat::peak_rss_mb:/ { rss = $2 }
    END { printf "%s: %s executions in %d s, %s exec/s, cov %s, ft %s, corpus %s, rss %s MB, no finding\n",
                 t, runs, secs, rate, cov, ft, corp, rss }' "$OUT/$t.log"
done
