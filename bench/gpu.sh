#!/usr/bin/env bash
# The GPU checks, on a machine with torch, timm, accelerate, pandas, scikit-learn, matplotlib and pytest but without
# fastai and without a package registry (the device machine of a lease, which carries `.whl`):
#
#     bash bench/fetch_wheels.sh      # here, once: fastai & co. as wheels into .whl/ (git-ignored)
#     bash bench/gpu.sh tests         # there: the `cuda` tests (tests/test_gpu.py, test_step_cost.py's sync check, ...)
#     bash bench/gpu.sh bench         # there: the benchmarks, JSON in bench/results/*_cuda.json
#     bash bench/gpu.sh               # both, in one command
#     bash bench/gpu.sh suite         # the whole test suite but the docs and notebook tests (they need nbdev)
#
# A virtual environment over the machine's own packages gets the wheels and this package (editable, so that the
# `softlabel` command the tests start sits beside its Python). Each JSON and log is copied to $OUT as soon as it is
# written, so a run stopped at its time limit still returns what it finished.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
V=/tmp/gpu_venv
if ! $V/bin/python -c "import fastai, fastai_softlabel" 2>/dev/null; then
    rm -rf $V && python3 -m venv --system-site-packages $V &&
    $V/bin/python -m pip install -q --no-index --no-deps --no-compile .whl/*.whl &&
    $V/bin/python -m pip install -q --no-index --no-deps --no-build-isolation -e . || { echo "install failed"; exit 1; }
fi
PY=$V/bin/python
export PYTHONUNBUFFERED=1
$PY -c "import torch, fastai, timm; print('torch', torch.__version__, '| fastai', fastai.__version__, '| timm', timm.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
t0=$SECONDS; rc=0
what=${1:-all}
if [ "$what" = suite ]; then
    $PY -m pytest -q -p no:cacheprovider --ignore=tests/test_docs.py --ignore=tests/test_notebooks.py 2>&1 | tee "$OUT/suite_cuda.log"
    exit ${PIPESTATUS[0]}
fi
if [ "$what" = tests ] || [ "$what" = all ]; then
    $PY -m pytest -q -p no:cacheprovider -m cuda -rs tests 2>&1 | tee "$OUT/tests_cuda.log"; rc=${PIPESTATUS[0]}
    echo "cuda tests: rc=$rc after $((SECONDS-t0)) s"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    run() {   # one benchmark, its JSON copied to $OUT at once
        local out=$1; shift
        echo "== $*"
        timeout 170 $PY "$@" --out "bench/results/$out" && cp "bench/results/$out" "$OUT/" || echo "FAILED or timed out: $*"
        echo "   $((SECONDS-t0)) s"
    }
    run ccl_bs32_cuda.json bench/bench_ccl.py --device cuda --bs 32 --steps 20 --repeats 2 --rounds 10
    run ccl_bs128_cuda.json bench/bench_ccl.py --device cuda --bs 128 --steps 20 --repeats 2 --rounds 10
    run flowmixup_cuda.json bench/bench_flowmixup.py --device cuda --steps 20 --repeats 2
    run throughput_single_cuda.json bench/bench_throughput.py --device cuda --size 224 --task single --bs 64 --n 2048 --rounds 3
    run throughput_multi_cuda.json bench/bench_throughput.py --device cuda --size 224 --task multi --bs 64 --n 2048 --rounds 3
fi
echo "done in $((SECONDS-t0)) s"
exit $rc
