"""Nothing in a results table that a reviewer would reject, each as the command does it in a fresh process: the epoch chosen on a
selection split apart from the evaluated one, diverged runs counted and never averaged, torchrun's per-process share of the
training split checked before any run. (Leakage, labels, weights and messages that need no training are refused in
tests/test_cli_inputs.py's table.)"""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest

EXE = Path(sys.executable).parent/'softlabel'
FAST = ['--size', '16', '--backbone', 'resnet10t', '--progress', 'log', '--bs', '16']

def softlabel(*args, cwd, timeout=600):
    return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)

def medmnist_file(path:Path):
    """A MedMNIST-layout file (`train_*`, `val_*`, `test_*`) whose `val` labels name the class after the image's (1 → 2 → 0 → 1):
    the better a model gets on `test`, the worse on `val`, so the epoch chosen on `val` is not the best on `test`. Class 2 has no
    `test` item, and one training image is there twice"""
    from fastai_softlabel.data import synthetic_class_images
    d = synthetic_class_images(n_per_class=40, size=16, n_classes=3, seed=1, noise=1.0)
    x,y = d['images'],d['labels']
    idx = np.random.default_rng(0).permutation(len(y))
    tr,va,te = idx[:72],idx[72:96],idx[96:]
    te = te[y[te] != 2]
    tr_x = x[tr].copy(); tr_x[1] = tr_x[0]; tr_y = y[tr].copy(); tr_y[1] = tr_y[0]   # a copy inside the training split
    np.savez(path, train_images=tr_x, train_labels=tr_y[:, None], val_images=x[va], val_labels=((y[va] + 1) % 3)[:, None],
             test_images=x[te], test_labels=y[te][:, None])
    return path

def test_the_epoch_is_chosen_on_the_selection_split_and_described_throughout(tmp_path):
    "--valid test --select valid: the epoch of the best val accuracy, not of the best test accuracy; the table, per-class metrics, confusion matrix and export all of that epoch"
    medmnist_file(tmp_path/'mm.npz')
    r = softlabel('--data', 'mm.npz', '--valid', 'test', '--select', 'valid', '--methods', 'baseline', '--epochs', '5', '--lr', '5e-3',
                  '--save-model', 'best', *FAST, '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path/'res'
    assert "choosing each run's epoch on the split value valid (24)" in r.stdout
    assert '1 training item(s) are copies of others' in r.stdout                       # counted, and allowed
    assert 'not in the evaluated split (their per-class scores are undefined): 2' in r.stdout
    curves = pd.read_csv(out/'runs'/'baseline_seed0_c0'/'curves.csv')
    chosen,best_on_test = int(curves.select_accuracy.idxmax()),int(curves.accuracy.idxmax())
    assert chosen != best_on_test, f"the data should make the two choices differ: {curves[['accuracy', 'select_accuracy']]}"
    run = pd.read_csv(out/'runs.csv').iloc[0]
    assert run.selected_epoch == chosen and run.described_epoch == chosen and run.described == 'selected'
    assert run.accuracy_selected == pytest.approx(curves.accuracy[chosen])              # the evaluated split, at the selected epoch
    from fastai_softlabel.metrics import prediction_metrics   # preds.npz holds that epoch's predictions: every metric of it, again
    p = np.load(out/'runs'/'baseline_seed0_c0'/'preds.npz')
    assert int(p['epoch']) == chosen
    for m,v in prediction_metrics(p['probs'], p['targets']).items():
        assert v == pytest.approx(run[m if m in ('ece', 'auprc') else f'{m}_selected'], abs=1e-6), m
    assert run.accuracy == pytest.approx(curves.accuracy.iloc[-1])                      # ... and at the last
    assert run.accuracy_best_on_eval == pytest.approx(curves.accuracy.max())            # the optimistic best, named as such
    assert 'accuracy_best' not in pd.read_csv(out/'runs.csv').columns
    assert json.loads((out/'runs'/'baseline_seed0_c0'/'model.json').read_text())['epoch'] == chosen
    pc,cm = pd.read_csv(out/'per_class.csv'),pd.read_csv(out/'confusion.csv')
    assert set(pc.epoch) == {chosen} and set(cm.epoch) == {chosen}
    absent = pc[pc['class'].astype(str) == '2'].iloc[0]
    assert absent.positives == 0 and np.isnan(absent.sensitivity) and np.isnan(absent.auroc) and np.isnan(absent.f1)   # undefined, not 0
    # the exported model is the selected epoch's: its accuracy on the test images is the table's
    from fastai.learner import load_learner
    z = np.load(tmp_path/'mm.npz')
    learn = load_learner(out/'runs'/'baseline_seed0_c0'/'export.pkl')
    with learn.no_bar(): probs,_ = learn.get_preds(dl=learn.dls.test_dl(list(z['test_images'])))
    assert (probs.argmax(1).numpy() == z['test_labels'][:, 0]).mean() == pytest.approx(run.accuracy_selected)
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['split']['select'] == 'valid' and cfg['items'] == dict(train=72, valid=len(z['test_labels']), select=24)
    assert cfg['split']['checks'] == dict(absent_from_evaluated=['2'], copies_in_train=1)
    page = (out/'report.html').read_text()
    assert 'At the epoch with the best accuracy on the selection split (the split value valid)' in page and 'Best epoch on the evaluated split (optimistic)' in page

def here(args, cwd, monkeypatch, capsys)->tuple:
    "`softlabel args` in this process (`cli.main`, as the console script calls it): (exit code, stdout)"
    from fastai_softlabel.cli import main
    monkeypatch.chdir(cwd); capsys.readouterr()
    try: main(list(args)); code = 0
    except SystemExit as e: code = e.code or 0
    return code,capsys.readouterr().out

def test_diverged_runs_are_counted_never_averaged_and_resume_keeps_them(tmp_path, monkeypatch, capsys):
    "--lr 1e4: every run's losses become non-finite; the tables say so per method, with no number, and --resume keeps the runs as finished"
    args = ['--lr', '1e4', '--methods', 'baseline,lsr-u1', '--seeds', '0,1', '--epochs', '2', '--n-per-class', '8', *FAST, '--out', 'res']
    r = softlabel(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path/'res'
    assert 'baseline at corruption 0: every seed diverged (2 of 2 runs, non-finite from epoch 0, 0): no number is shown for it' in r.stdout
    assert 'lsr-u1 at corruption 0: every seed diverged' in r.stdout
    table = r.stdout[r.stdout.index('at the last epoch:'):]
    assert 'auroc' in table and 'diverged' in table and '0.1' not in table.split('diverged runs')[0]   # no accuracy of a one-class guess
    runs = pd.read_csv(out/'runs.csv')
    assert runs.diverged_epoch.tolist() == [0, 0, 0, 0] and runs.accuracy.isna().all() and runs.auroc.isna().all()
    s = pd.read_csv(out/'summary.csv')
    acc = s[s.metric == 'accuracy']
    assert acc.n.tolist() == [0, 0] and acc.diverged.tolist() == [2, 2] and acc['mean'].isna().all()
    assert 'Diverged runs' in (out/'report.html').read_text() and not (out/'curves.csv').exists()
    kept = (out/'runs'/'baseline_seed0_c0'/'row.json').read_text()
    code,stdout = here([*args, '--resume'], tmp_path, monkeypatch, capsys)   # in this process: the command's start-up is measured above
    assert code == 0 and '4 of 4 runs already finished' in stdout
    assert (out/'runs'/'baseline_seed0_c0'/'row.json').read_text() == kept and 'every seed diverged' in stdout
    for f in (out/'runs').glob('*/row.json'):   # runs of an older version, which recorded no divergence: found from their curves
        f.write_text(json.dumps({k: v for k,v in json.loads(f.read_text()).items() if k != 'diverged_epoch'}))
    code,stdout = here(['report', 'res'], tmp_path, monkeypatch, capsys)
    assert code == 0 and pd.read_csv(out/'runs.csv').diverged_epoch.tolist() == [0, 0, 0, 0] and 'every seed diverged' in stdout

def test_torchrun_with_a_share_smaller_than_a_batch_is_refused_once(tmp_path):
    "Each of 2 processes would train on 26 of the 51 training items, fewer than a batch of 32: refused before any run, printed by rank 0, exit 2 on every rank, nothing written"
    pytest.importorskip('accelerate')
    torchrun = Path(sys.executable).parent/'torchrun'
    r = subprocess.run([str(torchrun), '--standalone', '--nproc_per_node', '2', '--log-dir', 'logs', '--redirects', '3', str(EXE),
                        '--n-per-class', '8', '--size', '16', '--epochs', '1', '--methods', 'baseline,ccl', '--backbone', 'resnet10t', '--out', 'res'],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode != 0 and not (tmp_path/'res').exists()
    logs = {int(p.parent.name): p.read_text() for p in (tmp_path/'logs').rglob('stderr.log')}
    assert sorted(logs) == [0, 1], list((tmp_path/'logs').rglob('*'))
    assert logs[0].strip().splitlines() == [
        "softlabel: error: under torchrun each of the 2 processes trains on 26 of the 51 training items (fastai's DistributedDL deals them "
        "out), fewer than the batch size 32 per process (--recipe fast's batch size): not one step would train. Use --bs 26 or less, or "
        "fewer processes, or a larger --n-per-class"], logs[0]
    assert logs[1].strip() == '' and 'Traceback' not in logs[0] + logs[1]          # once, from rank 0; no traceback from any rank
    assert r.stderr.count('exitcode  : 2') == 2, r.stderr[-3000:]                  # torchrun's report: both processes exited with 2
