#!/bin/sh
# run.sh DIR: runs every test binary in DIR and prints a summary.
#
# Each binary runs each of its tests in a child process and prints one
# "ok NAME", "FAIL NAME" or "skip NAME" line per test. This script shows
# those lines as they come and counts them. It exits 1 if any test failed
# or any binary exited non-zero, so a crash of a binary's own runner counts
# as a failure. A skipped test is not a failure.
#
# GORO_TEST_SANITIZER=asan|ubsan|tsan selects sanitizer options that stop at
# the first error and print a stack trace. The tests read the same variable to
# scale heavy workloads down.
set -u

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: $0 DIR (a directory of test binaries)" >&2
  exit 2
fi
dir=$1

case "${GORO_TEST_SANITIZER:-}" in
asan)
  # goro switches stacks without telling ASan, so the fake stacks of
  # use-after-return detection would belong to the wrong stack. That check
  # is off. Leak checking stays on because goro_run frees its runtime.
  ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=0:detect_leaks=1:print_summary=1:${ASAN_OPTIONS:-}"
  export ASAN_OPTIONS
  ;;
ubsan)
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:print_summary=1:${UBSAN_OPTIONS:-}"
  export UBSAN_OPTIONS
  ;;
tsan)
  # The first data race ends the test process, so the race fails its test.
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:print_summary=1:${TSAN_OPTIONS:-}"
  export TSAN_OPTIONS
  ;;
"") ;;
*)
  echo "run.sh: unknown GORO_TEST_SANITIZER=$GORO_TEST_SANITIZER (use asan, ubsan or tsan)" >&2
  exit 2
  ;;
esac

log=$(mktemp)
trap 'rm -f "$log" "$log.rc"' EXIT

start=$(date +%s)
passed=0
failed=0
skipped=0
broken=""
found=0
for bin in "$dir"/test_*; do
  [ -f "$bin" ] && [ -x "$bin" ] || continue
  found=$((found + 1))
  echo "== $(basename "$bin")${GORO_TEST_SANITIZER:+ ($GORO_TEST_SANITIZER)}"
  # tee shows lines as they come. The exit status travels through a file
  # because POSIX sh has no pipefail.
  { "$bin"; echo $? >"$log.rc"; } 2>&1 | tee "$log"
  rc=$(cat "$log.rc")
  ok=$(grep -c '^ok ' "$log" || true)
  bad=$(grep -c '^FAIL ' "$log" || true)
  skip=$(grep -c '^skip ' "$log" || true)
  passed=$((passed + ok))
  failed=$((failed + bad))
  skipped=$((skipped + skip))
  if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
    broken="$broken $(basename "$bin")(exit $rc)"
    failed=$((failed + 1))
  fi
done
elapsed=$(($(date +%s) - start))

if [ "$found" -eq 0 ]; then
  echo "run.sh: no test binaries in $dir (build them with make tests)" >&2
  exit 1
fi
[ -n "$broken" ] && echo "binaries that failed outside any test:$broken"
echo "wall time: ${elapsed} s for $found binaries${GORO_TEST_SANITIZER:+ under $GORO_TEST_SANITIZER}"
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
