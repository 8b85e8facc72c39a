"The `softlabel` command: a short run on the synthetic default, and bad input refused with one line and nothing written."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest

EXE = Path(sys.executable).parent/'softlabel'
FAST = ['--epochs', '1', '--n-per-class', '8', '--size', '16', '--backbone', 'resnet10t', '--progress', 'log']

def softlabel(*args, cwd):
    return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=600)

def test_synthetic_default_short_run(tmp_path):
    r = softlabel(*FAST, '--methods', 'baseline,lsr,ccl', '--seeds', '0,1', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path/'res'
    runs = pd.read_csv(out/'runs.csv')
    assert len(runs) == 6 and set(runs.method) == {'baseline', 'lsr', 'ccl'} and set(runs.seed) == {0, 1}
    assert runs.loc[runs.method == 'ccl', 'spearman_vs_true_similarity'].notna().all()
    assert len(json.loads((out/'runs.json').read_text())) == 6
    curves = pd.read_csv(out/'curves.csv')
    assert {'epoch', 'accuracy', 'method', 'seed'} <= set(curves.columns)
    assert (out/'soft_labels_ccl_seed1_c0.png').exists() and (out/'summary.csv').exists()
    assert 'accuracy' in r.stdout and 'results written to res' in r.stdout
    assert '\r' not in r.stdout and '█' not in r.stdout       # a clean log when not a terminal
    assert [p.name for p in tmp_path.iterdir()] == ['res']    # no temporary folder left

def test_multilabel_with_corruption(tmp_path):
    r = softlabel(*FAST, '--backbone', 'resnet18', '--task', 'multi', '--methods', 'erm,flowmixup', '--corruption', '0,0.3', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = pd.read_csv(tmp_path/'res'/'runs.csv')
    assert len(runs) == 4 and {'mean_auroc', 'f1_score'} <= set(runs.columns)
    frac = runs.loc[runs.corruption == 0.3, 'corrupted_fraction']
    assert ((frac > 0.25) & (frac < 0.35)).all() and (runs.loc[runs.corruption == 0, 'corrupted_fraction'] == 0).all()

def _ham_table(d, n=24):
    from PIL import Image
    rng = np.random.default_rng(0)
    (d/'img').mkdir()
    df = pd.DataFrame(dict(image_id=[f'ISIC_{i:04d}' for i in range(n)], dx=np.repeat(['nv', 'mel', 'bkl'], n//3),
                           lesion_id=[f'HAM_{i//2}' for i in range(n)]))
    for i in df.image_id: Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(d/'img'/f'{i}.jpg')
    df.to_csv(d/'ham.csv', index=False)
    return df

def test_csv_table_with_image_folder(tmp_path):
    _ham_table(tmp_path)
    r = softlabel('--data', 'ham.csv', '--images', 'img', '--size', '16', '--backbone', 'resnet10t', '--epochs', '1',
                  '--methods', 'baseline', '--progress', 'log', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = pd.read_csv(tmp_path/'res'/'runs.csv')
    assert list(runs.method) == ['baseline'] and 0 <= runs.accuracy[0] <= 1

def test_csv_unknown_columns(tmp_path):
    _ham_table(tmp_path).rename(columns={'dx': 'diagnosis'}).to_csv(tmp_path/'ham.csv', index=False)
    r = softlabel('--data', 'ham.csv', '--images', 'img', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 2 and 'neither the HAM10000 columns' in r.stderr and not (tmp_path/'res').exists()

def _bad_npz(path):
    np.savez(path, images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.zeros((4, 2, 2)))
    return path

@pytest.mark.parametrize('args,message', [
    (['--data', 'missing.npz'], 'No such file'),
    (['--data', 'bad.npz'], "'labels' must be"),
    (['--data', 'nokey.npz'], "has no 'images' array"),
    (['--backbone', 'resnet81'], "unknown model name 'resnet81'"),
    (['--corruption', '1.0'], r'corruption rates must be in \[0, 1\)'),
    (['--corruption', '-0.1'], r'corruption rates must be in \[0, 1\)'),
    (['--methods', 'flowmixup'], 'do not fit single-label data'),
    (['--task', 'multi', '--methods', 'flowmixup', '--backbone', 'resnet10t'], 'fewer than 5'),
    (['--out', 'no/such/folder/res'], 'does not exist'),
])
def test_bad_input_one_line_and_nothing_written(tmp_path, args, message):
    _bad_npz(tmp_path/'bad.npz')
    np.savez(tmp_path/'nokey.npz', pictures=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(2))
    before = sorted(p.name for p in tmp_path.iterdir())
    r = softlabel(*args, *([] if '--out' in args else ['--out', 'res']), cwd=tmp_path)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip() and 'Warning' not in l and 'warnings.warn' not in l]
    assert len(lines) == 1 and lines[0].startswith('softlabel: error:'), r.stderr
    import re; assert re.search(message, lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before

@pytest.mark.slow
def test_synthetic_ccl_recovers_the_true_similarity(tmp_path):
    "The default synthetic run: CCL's soft labels rank-correlate with the generator's class similarity (mean of 3 seeds >= 0.8)"
    r = softlabel('--methods', 'ccl', '--seeds', '0,1,2', '--progress', 'log', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rho = pd.read_csv(tmp_path/'res'/'runs.csv')['spearman_vs_true_similarity']
    assert len(rho) == 3 and rho.mean() >= 0.8, rho.tolist()
