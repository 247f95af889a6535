#!/usr/bin/env bash
# The checks that need a GPU, in one run, with the Python environment you are in (one that has a
# CUDA build of torch and this package's dev dependencies):
#
#   1. the device tests (tests/test_devices.py and the CUDA test of the curvature probes);
#   2. every notebook in QUICK mode through nbval, on CUDA;
#   3. the benchmarks with --device cuda: optimizers (with their targets checked), landscape
#      (batching must give >= 10x the per-point loop), curvature (quick).
#
# Usage: scripts/gpu_checks.sh [LOG_DIR]   (default build/gpu-checks; one log per step there)
# Exits non-zero when a step fails; the steps after it still run.
set -uo pipefail

PYTHON=${PYTHON:-python3}
LOGS=${1:-build/gpu-checks}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 MPLBACKEND=Agg
status=0

step() {  # step NAME COMMAND...: run, log to LOGS/NAME.log, report
    local name=$1
    shift
    local start=$SECONDS
    echo "== $name: $*"
    if "$@" >"$LOGS/$name.log" 2>&1; then
        echo "   ok ($((SECONDS - start)) s)"
    else
        echo "   FAILED ($((SECONDS - start)) s); the end of $LOGS/$name.log:"
        tail -n 25 "$LOGS/$name.log" | sed 's/^/   | /'
        status=1
    fi
}

if ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device visible to $PYTHON: nothing to check" >&2
    exit 2
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name())"

step tests "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_devices.py \
    tests/test_curvature.py -k "cuda or devices"
step notebooks env QUICK=1 ANALYSIS_LIB_FIGURES="$LOGS/figures" \
    "$PYTHON" -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env notebooks
step bench_optimizers "$PYTHON" benchmarks/bench_optimizers.py --device cuda --check
step bench_landscape "$PYTHON" benchmarks/bench_landscape.py --device cuda --threads 0 --check
step bench_curvature "$PYTHON" benchmarks/bench_curvature.py --device cuda --quick

for name in bench_optimizers bench_landscape bench_curvature; do
    [[ -f "$LOGS/$name.log" ]] && { echo "== $name"; tail -n 20 "$LOGS/$name.log"; }
done
exit $status
