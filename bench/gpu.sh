#!/usr/bin/env bash
# The GPU checks, in one command, on a machine with torch, timm and accelerate but without fastai and without a
# package registry (the device machine of a lease: `carry: [".whl"]`):
#
#     bash bench/fetch_wheels.sh        # here, once: fastai & co. as wheels into .whl/ (git-ignored)
#     bash bench/gpu.sh                 # there: the cuda tests, then the benchmarks; JSON in bench/results/*_cuda.json
#     bash bench/gpu.sh suite           # there: the whole test suite (but the docs and notebook tests, which need nbdev)
#
# A virtual environment over the machine's own packages gets the wheels and this package (editable, so that the
# `softlabel` command the tests start sits beside its Python). Results and logs are copied to $OUT when it is set.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
V=/tmp/gpu_venv
if [ ! -x $V/bin/python ]; then
    python3 -m venv --system-site-packages $V || exit 1
    $V/bin/python -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 1
    $V/bin/python -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
fi
PY=$V/bin/python
export PYTHONUNBUFFERED=1
$PY -c "import torch, fastai, timm; print('torch', torch.__version__, '| fastai', fastai.__version__, '| timm', timm.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
if [ "${1:-}" = suite ]; then
    $PY -m pytest -q -p no:cacheprovider -x --ignore=tests/test_docs.py --ignore=tests/test_notebooks.py 2>&1 | tee "$OUT/suite_cuda.log"
    exit ${PIPESTATUS[0]}
fi
t0=$SECONDS
$PY -m pytest -q -p no:cacheprovider -m cuda -rs tests 2>&1 | tee "$OUT/tests_cuda.log"; rc=${PIPESTATUS[0]}
echo "cuda tests: rc=$rc, $((SECONDS-t0)) s"
run() { echo "== $*"; timeout 150 $PY "$@" || echo "FAILED (rc=$?): $*"; echo "   at $((SECONDS-t0)) s"; }
run bench/bench_ccl.py --device cuda --bs 32 --steps 20 --repeats 2 --rounds 10 --out bench/results/ccl_bs32_cuda.json
run bench/bench_ccl.py --device cuda --bs 128 --steps 20 --repeats 2 --rounds 10 --out bench/results/ccl_bs128_cuda.json
run bench/bench_flowmixup.py --device cuda --steps 20 --repeats 2
run bench/bench_throughput.py --device cuda --size 224 --task single --bs 64 --n 2048 --rounds 3
run bench/bench_throughput.py --device cuda --size 224 --task multi --bs 64 --n 2048 --rounds 3
cp bench/results/*_cuda.json "$OUT"/ 2>/dev/null
echo "done in $((SECONDS-t0)) s; cuda tests rc=$rc"
exit $rc
