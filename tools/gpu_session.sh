#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in one call:
#   build, the GPU tests, convnet.check (small and AlexNet shapes),
#   compute-sanitizer memcheck and racecheck over the kernel checks, and the
#   three benchmarks (their JSON results land in benchmarks/results/).
# Usage: tools/gpu_session.sh [OUTDIR]   (logs go to OUTDIR, default build/gpu-session)
# Each step runs even if an earlier one failed; the exit code counts failures.
set -u
cd "$(dirname "$0")/.."
out=${1:-build/gpu-session}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
fails=0
step() {  # step NAME COMMAND...
    local name=$1; shift
    echo "=== $name: $*"
    local t0=$SECONDS
    "$@" > "$out/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.log"
    echo "=== $name: exit $rc after $((SECONDS - t0)) s"
    [ $rc -eq 0 ] || fails=$((fails + 1))
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/device.txt" 2>&1
cat "$out/device.txt"
step make        make
step gpu-tests   python3 -m pytest -q -m gpu tests
step check       python3 -m convnet.check --shapes all
if command -v compute-sanitizer >/dev/null; then
    step memcheck  compute-sanitizer --tool memcheck  --error-exitcode 1 python3 -m convnet.check --backend cuda --shapes small
    step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 python3 -m convnet.check --backend cuda --shapes small
fi
step conv-bench   python3 benchmarks/conv_throughput.py --versions all
step train-bench  python3 benchmarks/train_throughput.py
step memory-bench python3 benchmarks/memory_throughput.py
ls -l benchmarks/results/
echo "$fails step(s) failed"
exit $fails
