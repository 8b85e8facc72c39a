"""Golden tests: today's code computes what the code of `tests/golden/` computed when it was recorded (`tests/golden/record.py`).

Seeded fits are compared bit for bit (Recorder values, CCL's history, a digest of every tensor of the model, the head and its
optimizer) when torch is the version that recorded them: other torch builds may round differently, and the comparison is then
skipped. An exported Learner, a results folder and every exported name are checked whatever the version."""
import json, shutil, subprocess, sys, importlib
from pathlib import Path
import pandas as pd, pytest, torch
from fastai.vision.all import *

GOLDEN = Path(__file__).parent/'golden'
sys.path.insert(0, str(GOLDEN))
from record import FITS, RESULTS_ARGS, golden_fit, fingerprint, exported_predictions

FITS_JSON = json.loads((GOLDEN/'fits.json').read_text())

def differences(a, b, path='')->list:
    "Where two nested JSON values differ (at most 10 places)"
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in one" for k in a.keys() ^ b.keys()]
        for k in a.keys() & b.keys(): out += differences(a[k], b[k], f"{path}.{k}")
        return out[:10]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i,(x,y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")][:10]
    return [] if a == b else [f"{path}: {a!r} recorded, {b!r} now"]

@pytest.mark.parametrize('name', list(FITS))
def test_a_seeded_fit_is_bit_identical_to_the_recorded_one(name, tmp_path):
    if torch.__version__ != FITS_JSON['torch']:
        pytest.skip(f"the fits were recorded with torch {FITS_JSON['torch']}, this is {torch.__version__}: bits may differ")
    diff = differences(FITS_JSON['fits'][name], json.loads(json.dumps(fingerprint(golden_fit(name, tmp_path)))))
    assert not diff, f"{name}: " + '; '.join(diff)

def test_an_exported_learner_of_the_recorded_code_loads_and_predicts_identically(tmp_path):
    shutil.copy(GOLDEN/'export.pkl', tmp_path/'export.pkl')
    check = torch.load(GOLDEN/'export_check.pt', weights_only=False)
    learn = load_learner(tmp_path/'export.pkl')
    preds = exported_predictions(learn, check['images'])
    if torch.__version__ == check['torch']: assert torch.equal(preds, check['preds'])
    else: test_close(preds, check['preds'], eps=1e-5)
    assert torch.equal(learn.ccl.soft_labels, check['soft_labels'])   # the head travelled as it was
    assert learn.ccl.frozen_at is None and len(learn.ccl.history) == 1
    assert learn.flow_mixup.points == ['1']

def softlabel(*args, cwd):
    return subprocess.run([str(Path(sys.executable).parent/'softlabel'), *args], cwd=cwd, capture_output=True, text=True, timeout=600)

def test_a_results_folder_of_the_recorded_code_reports_and_resumes_without_training(tmp_path):
    shutil.copytree(GOLDEN/'results', tmp_path/'res')
    tables = {f: (GOLDEN/'results'/f).read_text() for f in ('runs.csv', 'summary.csv')}
    r = softlabel('report', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for f,text in tables.items(): assert (tmp_path/'res'/f).read_text() == text, f"softlabel report changed {f}"
    r = softlabel(*RESULTS_ARGS, '--out', 'res', '--resume', cwd=tmp_path)
    from fastai_softlabel.results_folder import package_versions
    recorded = json.loads((GOLDEN/'results'/'config.json').read_text())['settings']['versions']
    other = {p for p,v in recorded.items() if package_versions().get(p) != v and p != 'fastai_softlabel'}
    if other:   # --resume refuses to mix runs of other versions, and says only that
        assert r.returncode == 2 and 'was made with other settings' in r.stderr, r.stderr[-3000:]
        assert all(f"{p} '" in r.stderr for p in other) and '--' not in r.stderr.split('settings (')[1].split(')')[0], r.stderr[-2000:]
        return
    assert r.returncode == 0, r.stderr[-3000:]
    assert '4 of 4 runs already finished' in r.stdout, r.stdout[-2000:]
    for f,text in tables.items(): assert (tmp_path/'res'/f).read_text() == text, f"--resume changed {f}"
    assert not list((tmp_path/'res').rglob('*.pkl')), "--resume trained a run again"

def test_every_name_exported_when_recorded_still_imports_from_its_module():
    missing = [f"{m}.{n}" for m,names in json.loads((GOLDEN/'names.json').read_text()).items()
               for n in names if not hasattr(importlib.import_module(f'fastai_softlabel.{m}'), n)]
    assert not missing, f"no longer importable: {missing}"
