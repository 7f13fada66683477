#!/usr/bin/env bash
# Everything a lent GPU should run, in one command that ends within 8 minutes
# on an H200:
#
#   tools/gpu_session.sh OUTDIR
#
# Steps, in order of value, each under its own `timeout` (and never past the
# session's deadline, GPU_SESSION_SECONDS, default 470 s after the start):
#   build       make deps kernels emu (offline: deps that import are not installed)
#   check       python -m convnet.check on the GPU, small shapes
#   conv        benchmarks/conv_throughput.py --versions all (with the model's bound per row)
#   conv-tf32   the same on the tensor-core kernels in tf32, against cuDNN with TF32 allowed
#   conv-bf16   the same in bf16, against cuDNN on bf16 tensors
#   gpu-tests   pytest -m gpu
#   tune        python -m convnet.tune (each kept candidate checked, then timed, and cached)
#   train       benchmarks/train_throughput.py (the whole iteration)
#   train-bf16  the same in bf16, against PyTorch under bf16 autocast
#   check-alex  convnet.check at AlexNet's shapes (the float64 NumPy references take most of it)
#   memory      benchmarks/memory_throughput.py (the memory-bound ops)
#   memcheck    compute-sanitizer --tool memcheck over convnet.check's small shapes
#   racecheck   compute-sanitizer --tool racecheck over the same
#   static      benchmarks/static_model.py (the static bounds; needs cuobjdump; also runs here)
# and a short table last.
#
# OUTDIR gets, as the steps go (a run cut off still leaves what it did):
#   session.log    every step's full log, one section per step, written live
#   summary.txt    the table (rewritten after each step)
#   steps.tar      the per-step logs as separate files (rewritten after each step)
#   results.tar    the results files (JSON) the benchmarks wrote (rewritten after each step)
# -- four files: the device tool brings back at most 8 from $OUT, so the JSON files
# (one per benchmark step) travel in one tar.
# Each step runs even if an earlier one failed; the exit code counts failures.
set -u
cd "$(dirname "$0")/.."
out=${1:?usage: tools/gpu_session.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
logs=build/gpu-session
rm -rf "$logs"
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
# The GPU machine has no network: Python packages its image lacks (safetensors) come from
# build/wheels, made here by `make gpu-wheels` and carried along (see the README).
if [ -d build/wheels ]; then
    export PIP_FIND_LINKS="$PWD/build/wheels" PIP_NO_INDEX=1
fi
deadline=${GPU_SESSION_SECONDS:-470}
stamp="$logs/.start"
touch "$stamp"
fails=0
summary=()

{
    echo "gpu_session $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
} > "$logs/device.txt"
cat "$logs/device.txt" | tee "$out/session.log"

write_summary() {
    {
        cat "$logs/device.txt"
        printf '%-10s %6s %6s  %s\n' step exit secs "last line"
        printf '%s\n' "${summary[@]}"
    } > "$out/summary.txt"
    tar -cf "$out/steps.tar" -C "$logs" . 2>/dev/null
    find benchmarks/results -name '*.json' -newer "$stamp" -printf '%P\n' 2>/dev/null \
        | tar -cf "$out/results.tar" -C benchmarks/results -T - 2>/dev/null
}

step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local left=$((deadline - SECONDS - 5))
    if [ "$left" -lt 10 ]; then
        summary+=("$(printf '%-10s %6s %6s  %s' "$name" skip 0 "no time left before the ${deadline} s deadline")")
        echo "=== $name: skipped (no time left)" | tee -a "$out/session.log"
        fails=$((fails + 1))
        write_summary
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "=== $name (limit ${limit} s): $*" | tee -a "$out/session.log"
    local t0=$SECONDS
    timeout --signal=TERM --kill-after=5 "$limit" "$@" > "$logs/$name.log" 2>&1
    local rc=$?
    cat "$logs/$name.log" >> "$out/session.log"
    tail -n 15 "$logs/$name.log"
    local last
    last=$(grep -v '^\s*$' "$logs/$name.log" | tail -n 1 | cut -c1-110)
    [ $rc -eq 124 ] && last="TIMED OUT after ${limit} s; $last"
    echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$out/session.log"
    summary+=("$(printf '%-10s %6s %6s  %s' "$name" "$rc" "$((SECONDS - t0))" "$last")")
    [ $rc -eq 0 ] || fails=$((fails + 1))
    write_summary
}

step build      150 make deps kernels emu
step check       40 python3 -m convnet.check --backend cuda --shapes small
step conv       110 python3 benchmarks/conv_throughput.py --versions all --repeat 10
step conv-tf32   45 python3 benchmarks/conv_throughput.py --precision tf32 --repeat 10
step conv-bf16   45 python3 benchmarks/conv_throughput.py --precision bf16 --repeat 10
step gpu-tests   60 python3 -m pytest -q -m gpu tests
step tune        60 python3 -m convnet.tune --repeat 5
step train       60 python3 benchmarks/train_throughput.py
step train-bf16  60 python3 benchmarks/train_throughput.py --precision bf16
step check-alex  90 python3 -m convnet.check --backend cuda --shapes alexnet
step memory      40 python3 benchmarks/memory_throughput.py --repeat 10
if command -v compute-sanitizer >/dev/null; then
    step memcheck  40 compute-sanitizer --tool memcheck  --error-exitcode 1 python3 -m convnet.check --backend cuda --shapes small
    step racecheck 40 compute-sanitizer --tool racecheck --error-exitcode 1 python3 -m convnet.check --backend cuda --shapes small
else
    summary+=("$(printf '%-10s %6s %6s  %s' sanitizer skip 0 'compute-sanitizer not on the PATH')")
fi
# Last: the same static model runs on any machine with cuobjdump (`make static`).
step static      30 python3 benchmarks/static_model.py --no-make --kernels conv
write_summary

{
    echo
    echo "=== table ($((SECONDS)) s in all, $fails step(s) failed)"
    cat "$out/summary.txt"
    echo "conv totals (measured; rows that passed):"
    grep -E '^  (device|column) .* all \|' "$logs/conv.log" 2>/dev/null
    echo "static model, conv passes of one iteration (upper bounds):"
    grep -E '^  (device|column) +(v[0-9]+|shipped) ' "$logs/static.log" 2>/dev/null
} | tee -a "$out/session.log"
exit $fails
