#!/usr/bin/env bash
# The test suite against the lowest versions settings.ini allows for torch, fastai, timm and scikit-learn (its `>=` floors),
# in a second environment (.venv-lowest), so that the floors are what was tested:
#     bash tools/lowest_versions.sh              # the whole suite
#     bash tools/lowest_versions.sh tests/test_ccl.py -x   # arguments go to pytest
# torch's floor is the plain wheel (a CPU-only build would not match torchvision's operators).
set -euo pipefail
cd "$(dirname "$0")/.."
floor() { grep '^requirements' settings.ini | tr ' ' '\n' | sed -n "s/^$1>=//p"; }
TORCH=$(floor torch); FASTAI=$(floor fastai); TIMM=$(floor timm); SKLEARN=$(floor scikit-learn)
echo "floors: torch $TORCH, fastai $FASTAI, timm $TIMM, scikit-learn $SKLEARN"
python3.11 -m venv .venv-lowest
.venv-lowest/bin/pip install -q -e ".[dev]" "torch==$TORCH.0" "fastai==$FASTAI" "timm==$TIMM" "scikit-learn==$SKLEARN"
.venv-lowest/bin/python -c "import torch, fastai, timm, sklearn; print('testing with torch', torch.__version__, 'fastai', fastai.__version__, 'timm', timm.__version__, 'scikit-learn', sklearn.__version__)"
# the suite's console-script tests run `softlabel` beside the interpreter: this environment's
.venv-lowest/bin/python -m pytest "$@"
