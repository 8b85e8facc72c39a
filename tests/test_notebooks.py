"Each notebook runs as a test (cells tagged `slow` skipped; `cuda` cells skipped without a GPU), and the library is what exporting the notebooks gives."
import filecmp, os, shutil, subprocess, sys
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_'))

@pytest.mark.parametrize('nb', NBS, ids=[p.name for p in NBS])
def test_notebook(nb, monkeypatch):
    from nbdev.test import test_nb
    monkeypatch.chdir(nb.parent)
    skip = ['slow'] + ([] if torch.cuda.is_available() else ['cuda'])
    ok, _ = test_nb(nb, skip_flags=skip, force_flags=[], cell_timeout=600)
    assert ok, f"{nb.name} failed (its traceback is printed above)"

def _tree(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob('*') if p.is_file() and '__pycache__' not in p.parts)

def test_library_matches_notebooks(tmp_path):
    "Exporting the notebooks must reproduce fastai_softlabel/ exactly (edit the notebook, export, commit both)."
    for name in ('nbs', 'fastai_softlabel'): shutil.copytree(ROOT/name, tmp_path/name, ignore=shutil.ignore_patterns('__pycache__'))
    for name in ('pyproject.toml', 'settings.ini'): shutil.copy(ROOT/name, tmp_path/name)
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}
    exporter = Path(sys.executable).parent/'nbdev-export'
    subprocess.run([str(exporter if exporter.exists() else 'nbdev-export')], cwd=tmp_path, env=env, check=True)
    lib, exported = ROOT/'fastai_softlabel', tmp_path/'fastai_softlabel'
    assert _tree(lib) == _tree(exported), "nbdev-export adds or removes library files: run nbdev-export and commit"
    differ = [f for f in _tree(lib) if not filecmp.cmp(lib/f, exported/f, shallow=False)]
    assert not differ, f"fastai_softlabel/ differs from the notebooks in {differ}: run nbdev-export and commit"
