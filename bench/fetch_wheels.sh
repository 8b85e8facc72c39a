#!/usr/bin/env bash
# The wheels bench/gpu.sh installs on a GPU machine that has torch, timm and accelerate but not fastai and cannot reach
# a package registry: fetched here into .whl/ (git-ignored), carried with the tree. fastprogress<1.1 avoids its
# python-fasthtml dependency. Pure-Python wheels, for the GPU machine's Python 3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl \
    "fastai==$(ver fastai)" "fastcore==$(ver fastcore)" "fasttransform==$(ver fasttransform)" \
    "plum-dispatch==$(ver plum-dispatch)" "beartype==$(ver beartype)" "fastdownload==$(ver fastdownload)" 'fastprogress<1.1'
ls .whl
