#!/bin/sh
# run.sh SECONDS TARGET... - run each libFuzzer target (build-fuzz/fuzz_TARGET) for SECONDS
# from the committed seeds (tests/fuzz/corpus/TARGET) plus what earlier runs found
# (.run/fuzz/TARGET). A crash leaves its input in .run/fuzz/artifacts/ and fails the run:
# turn it into a regression test (a transcript, or a file in the seed corpus) and fix it.
# Prints executions per target and ends with "N passed, N failed".
set -u
secs=$1
shift
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
mkdir -p .run/fuzz/artifacts
passed=0 failed=0
for t in "$@"; do
    mkdir -p ".run/fuzz/$t"
    log=".run/fuzz/$t.log"
    ./build-fuzz/fuzz_"$t" -max_total_time="$secs" -max_len=60000 -timeout=10 -rss_limit_mb=1024 \
        -print_final_stats=1 -artifact_prefix=.run/fuzz/artifacts/"$t"- \
        ".run/fuzz/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    if [ $rc -eq 0 ]; then
        echo "PASS fuzz/$t: ${execs:-?} executions in ${secs}s, $cov"
        passed=$((passed + 1))
    else
        echo "FAIL fuzz/$t (exit $rc): see $log and .run/fuzz/artifacts/"
        grep -E 'ERROR|SUMMARY|deadly|Test unit written' "$log" | head -n 5
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
