#!/usr/bin/env bash
# Builds LightCap's libFuzzer targets (Fuzzing/, docs/FUZZING.md) with -sanitize=fuzzer,address and
# runs each for SECONDS (default 10), one after the other, from its seed corpus
# (Fuzzing/seeds/<target>) plus what earlier runs kept (Fuzzing/.build/corpus/<target>). Prints a
# table (target, executions, executions/s, coverage, result); exits 1 if any target crashed,
# leaked, hung past 1 s or went over the memory limits. Findings go to Fuzzing/.build/findings/.
#
#   scripts/fuzz.sh [SECONDS]
#   LIGHTCAP_FUZZ_TARGETS="image safetensors" scripts/fuzz.sh 60
#   LIGHTCAP_FUZZ_CONFIG=release LIGHTCAP_FUZZ_RUNS=10000000 scripts/fuzz.sh 28800   # the long run: 10M executions per target (or the time)
#
# Limits: -timeout=1 (an input taking over 1 s is a hang), -rss_limit_mb (the process's resident
# memory, ASan's shadow and quarantine included) and -malloc_limit_mb (any single allocation; the
# bound every parser must keep before it rejects an input: docs/FUZZING.md, "Memory").
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
# A debug build by default: it compiles in about half the time of a release one (the CI smoke
# pays for it). LIGHTCAP_FUZZ_CONFIG=release: optimised, several times more executions a second
# (the long run), in its own build folder.
config=${LIGHTCAP_FUZZ_CONFIG:-debug}
case $config in debug) default_scratch=.build ;; release) default_scratch=.build-release ;;
    *) echo "fuzz.sh: LIGHTCAP_FUZZ_CONFIG must be debug or release, not '$config'" >&2; exit 64 ;; esac
scratch=${LIGHTCAP_FUZZ_SCRATCH:-$default_scratch}   # SwiftPM's build folder, relative to Fuzzing/
rss_mb=${LIGHTCAP_FUZZ_RSS_MB:-2048}
malloc_mb=${LIGHTCAP_FUZZ_MALLOC_MB:-64}
runs=${LIGHTCAP_FUZZ_RUNS:--1}
all="safetensors configuration model-directory image wordpiece ptb coco request"
targets=${LIGHTCAP_FUZZ_TARGETS:-$all}

options() {  # per-target libFuzzer options
    case $1 in
        # Unoptimised under ASan the plain twin that checks short inputs and the metrics are slow;
        # the cap keeps the debug smoke's inputs far from the 1 s timeout.
        ptb) [ "$config" = debug ] && echo "-max_len=512" || echo "" ;;
        *) echo "" ;;
    esac
}

executable() {  # seed directory name -> executable target name
    case $1 in
        safetensors) echo FuzzSafetensors ;;
        configuration) echo FuzzConfiguration ;;
        model-directory) echo FuzzModelDirectory ;;
        image) echo FuzzImage ;;
        wordpiece) echo FuzzWordPiece ;;
        ptb) echo FuzzPTB ;;
        coco) echo FuzzCOCO ;;
        request) echo FuzzRequest ;;
        *) echo "fuzz.sh: unknown target '$1' (known: $all)" >&2; exit 64 ;;
    esac
}

# One -sanitize=fuzzer,address for swiftc: given separately (SwiftPM's --sanitize=fuzzer
# --sanitize=address), the driver keeps only the last one, in an order that changes from build to
# build, and the code is built without coverage or without ASan. --sanitize=fuzzer is still given
# to SwiftPM: it then links with libFuzzer's main instead of the executables' own. Without debug
# info (-gnone) the build takes less time; findings still name the functions
# (LIGHTCAP_FUZZ_DEBUG_INFO=1 adds file and line).
flags=(-c "$config" --scratch-path "$scratch" --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address
       -Xswiftc -parse-as-library -Xswiftc -enable-testing)
[ "${LIGHTCAP_FUZZ_DEBUG_INFO:-0}" = 1 ] || flags+=(-Xswiftc -gnone)
echo "== building the fuzz targets ($config, -sanitize=fuzzer,address)"
start=$SECONDS
# A failed build stops here: the executables of an earlier build would otherwise run stale.
status=0
(cd Fuzzing && swift build "${flags[@]}" 2>&1) | grep -Ev '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Write|Linking|Applying)' \
    || status=${PIPESTATUS[0]}
[ "$status" = 0 ] || { echo "fuzz.sh: the fuzz targets did not build (swift build exit $status, above)" >&2; exit 1; }
bin=$(cd Fuzzing && swift build "${flags[@]}" --show-bin-path)
for t in $targets; do
    [ -x "$bin/$(executable "$t")" ] || { echo "fuzz.sh: the build did not produce $(executable "$t")" >&2; exit 1; }
done
echo "built in $((SECONDS - start)) s"

work=Fuzzing/.build
mkdir -p "$work/findings" "$work/logs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export LSAN_OPTIONS="suppressions=$PWD/Fuzzing/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

failed=0
rows=()
for t in $targets; do
    exe=$(executable "$t")
    corpus="$work/corpus/$t"
    log="$work/logs/$t.log"
    mkdir -p "$corpus"
    echo "== $t: $seconds s"
    rc=0
    "$bin/$exe" "$corpus" "Fuzzing/seeds/$t" -max_total_time="$seconds" -runs="$runs" -timeout=1 \
        -rss_limit_mb="$rss_mb" -malloc_limit_mb="$malloc_mb" -print_final_stats=1 $(options "$t") \
        -artifact_prefix="$work/findings/$t-" > "$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | grep ' cov: ' | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<< "$last")
    counters=$(sed -n 's/^INFO: Loaded 1 modules *(\([0-9]*\) inline 8-bit counters.*/\1/p' "$log" | head -1)
    if [ "$rc" -eq 0 ] && [ "${counters:-0}" -lt 3000 ]; then
        # A target over the engine has tens of thousands of edges; a few hundred means the
        # Swift code was built without coverage and the run was blind.
        failed=1
        result="UNINSTRUMENTED(${counters:-0} counters)"
    elif [ "$rc" -eq 0 ]; then
        result=ok
    else
        failed=1
        if grep -q 'ERROR: libFuzzer: timeout' "$log"; then result=TIMEOUT
        elif grep -q 'ERROR: libFuzzer: out-of-memory\|ERROR: libFuzzer: malloc' "$log"; then result=OUT-OF-MEMORY
        elif grep -q 'ERROR: LeakSanitizer' "$log"; then result=LEAK
        elif grep -q 'ERROR: AddressSanitizer' "$log"; then result=ASAN
        else result="CRASH(rc=$rc)"; fi
        echo "-- $t: $result; the log's end ($log):"
        grep -v '^ *#[0-9]* 0x' "$log" | tail -25
        ls "$work/findings/$t-"* 2>/dev/null | sed 's/^/   finding: /'
    fi
    rows+=("$(printf '%-16s %10s %8s %6s %7s %6s %8s  %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${peak:-?}" "$result")")
done

echo
echo "fuzzing: $seconds s per target ($config build, -timeout=1 -rss_limit_mb=$rss_mb -malloc_limit_mb=$malloc_mb)"
printf '%-16s %10s %8s %6s %7s %6s %8s  %s\n' target execs exec/s cov ft corpus rss_mb result
for row in "${rows[@]}"; do echo "$row"; done
exit $failed
