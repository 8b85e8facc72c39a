"The `softlabel` command: a short run on the synthetic default, resuming after a real SIGINT, each kind of data (bad input: tests/test_cli_inputs.py)."
import io, json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest

EXE = Path(sys.executable).parent/'softlabel'
FAST = ['--epochs', '1', '--n-per-class', '8', '--size', '16', '--backbone', 'resnet10t', '--progress', 'log']

def softlabel(*args, cwd):
    return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=600)

def refused(args, cwd, monkeypatch, capsys)->str:
    "stderr of `softlabel args` run in-process (`cli.main`, as the console script calls it), which must exit 2 with one line"
    from fastai_softlabel.cli import main
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e: main(list(args))
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err

def test_synthetic_default_short_run(tmp_path):
    r = softlabel(*FAST, '--methods', 'baseline,lsr-u1,ols,cutmix,ccl', '--seeds', '0,1', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path/'res'
    runs = pd.read_csv(out/'runs.csv')
    assert list(runs.method) == ['baseline']*2 + ['lsr-u1']*2 + ['ols']*2 + ['cutmix']*2 + ['ccl']*2 and list(runs.seed) == [0, 1]*5
    assert runs.loc[runs.method == 'ccl', 'spearman_vs_true_similarity'].notna().all()
    assert len(json.loads((out/'runs.json').read_text())) == 10
    curves = pd.read_csv(out/'curves.csv')
    assert {'epoch', 'accuracy', 'method', 'seed'} <= set(curves.columns) and len(curves) == 10
    assert (out/'runs'/'ccl_seed1_c0'/'soft_labels.png').exists() and (out/'runs'/'ccl_seed1_c0'/'ccl_history.json').exists()
    run_cfg = json.loads((out/'runs'/'ccl_seed1_c0'/'config.json').read_text())   # each run folder carries its own settings
    assert (run_cfg['method'], run_cfg['seed'], run_cfg['corruption'], run_cfg['epochs'], run_cfg['lr_ccl']) == ('ccl', 1, 0.0, 1, 5e-3)
    # summary.csv: numbers; the paired difference of lsr-u1 to baseline is the mean of the per-seed differences
    summary = pd.read_csv(out/'summary.csv')
    assert all(pd.api.types.is_numeric_dtype(summary[c]) for c in ('mean', 'std', 'n', 'ci_low', 'ci_high', 'diff_mean'))
    acc = summary[summary.metric == 'accuracy'].set_index('method')
    a = runs.set_index(['method', 'seed']).accuracy
    assert np.isclose(acc.loc['lsr-u1', 'diff_mean'], (a['lsr-u1'] - a['baseline']).mean())
    assert np.isclose(acc.loc['ccl', 'mean'], a['ccl'].mean()) and acc.loc['ccl', 'n'] == 2
    assert 'Δ accuracy' in r.stdout and 'results in res/' in r.stdout and 'run 10/10 (ccl, seed 1, corruption 0)' in r.stdout
    assert 'Note: n = 2 seeds: each interval is the mean ± 12.7 standard errors' in r.stdout   # two seeds: said in the table...
    assert 'Note: n = 2 seeds' in (out/'report.html').read_text()                         # ...and in the report
    assert '\r' not in r.stdout and '█' not in r.stdout       # a clean log when not a terminal
    assert [p.name for p in tmp_path.iterdir()] == ['res'] and not list((out/'runs').glob('.partial-*'))
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['settings']['arguments']['seeds'] == '0,1' and cfg['versions']['fastai'] and cfg['device'] == 'cpu'

def test_sigint_keeps_finished_runs_and_resume_finishes_the_rest(tmp_path, monkeypatch, capsys):
    args = [*FAST, '--methods', 'baseline', '--seeds', '0,1,2,3,4,5,6,7', '--out', 'res']   # runs of about a second: enough left to interrupt
    # a terminal's Ctrl-C: SIGINT handled as by default, even when this test runs in a background job (which ignores it)
    p = subprocess.Popen([str(EXE), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = tmp_path/'res'/'runs'/'baseline_seed0_c0'/'row.json'
    deadline = time.monotonic() + 300
    while not first.exists() and p.poll() is None and time.monotonic() < deadline: time.sleep(0.05)
    assert first.exists(), p.communicate()[1][-2000:]
    p.send_signal(signal.SIGINT)                      # what Ctrl-C sends
    _, err = p.communicate(timeout=120)
    lines = [l for l in err.splitlines() if l.strip() and 'Warning' not in l and 'warnings.warn' not in l]
    assert p.returncode == 130 and len(lines) == 1, err[-2000:]
    n_done = len(list((tmp_path/'res'/'runs').glob('baseline_*')))
    assert n_done < 8 and lines[0] == f'softlabel: interrupted after {n_done} of 8 runs; rerun the same command with --resume'
    kept = first.read_text()
    r = softlabel(*args, '--resume', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'{n_done} of 8 runs already finished' in r.stdout and f'run {n_done + 1}/8' in r.stdout
    assert 'Note: n =' not in r.stdout and 'Note: n =' not in (tmp_path/'res'/'report.html').read_text()   # 8 seeds: no note
    assert first.read_text() == kept                  # finished runs are not run again
    assert list(pd.read_csv(tmp_path/'res'/'runs.csv').seed) == list(range(8))
    # other settings: refused in one line, nothing changed (in-process, as the console script calls `cli.main`)
    err = refused([*args, '--resume', '--epochs', '2'], tmp_path, monkeypatch, capsys)
    assert err.startswith('softlabel: error: --resume:') and '--epochs 1 → 2' in err, err
    # `softlabel report` rebuilds the tables from runs/
    (tmp_path/'res'/'summary.csv').unlink()
    from fastai_softlabel.cli import main
    main(['report', 'res'])
    assert (tmp_path/'res'/'summary.csv').exists() and 'accuracy' in capsys.readouterr().out

def test_help_loads_neither_torch_nor_fastai():
    "`softlabel --help` parses arguments before the heavy imports (it answers in well under 2 s)"
    code = ("import sys\nfrom fastai_softlabel.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'fastai', 'timm', 'pandas', 'scipy') if m in sys.modules))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and '--resume' in r.stdout and r.stdout.strip().splitlines()[-1] == '[]', r.stdout + r.stderr

def test_help_prints_nothing_on_stderr():
    "Not even the FutureWarning torch gives for fastai's `torch.jit.script` (the command filters exactly that one)"
    r = subprocess.run([str(EXE), '--help'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and '--progress' in r.stdout and r.stderr == '', r.stderr

class _Terminal(io.StringIO):
    "A stdout that says it is a terminal"
    def isatty(self): return True

@pytest.mark.parametrize('terminal', [True, False])
def test_progress_bars_on_a_terminal_epoch_lines_otherwise(tmp_path, monkeypatch, terminal):
    "The default `--progress auto`, in-process: on a terminal progress bars only, otherwise one line per epoch only"
    from fastai_softlabel.cli import main
    out = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, 'stdout', out)
    main(['--epochs', '2', '--n-per-class', '8', '--size', '16', '--backbone', 'resnet10t', '--methods', 'baseline', '--out', str(tmp_path/'res')])
    text = out.getvalue()
    epoch_lines = [l for l in text.splitlines() if l.startswith('[baseline seed 0 corruption 0] epoch ')]
    bars = 'Epoch 2/2' in text or '\u2588' in text
    assert (bars, len(epoch_lines)) == ((True, 0) if terminal else (False, 2)), text[-3000:]
    assert 'run 1/1 (baseline, seed 0, corruption 0)' in text and 'results in' in text

def test_multilabel_with_corruption(tmp_path):
    r = softlabel(*FAST, '--backbone', 'resnet18', '--task', 'multi', '--methods', 'erm,flowmixup', '--corruption', '0,0.3', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = pd.read_csv(tmp_path/'res'/'runs.csv')
    assert len(runs) == 4 and {'mean_auroc', 'f1_score'} <= set(runs.columns)
    frac = runs.loc[runs.corruption == 0.3, 'corrupted_fraction']
    assert ((frac > 0.25) & (frac < 0.35)).all() and (runs.loc[runs.corruption == 0, 'corrupted_fraction'] == 0).all()

def test_multilabel_ccl_and_ccl_with_flowmixup(tmp_path):
    "Multi-label CCL runs when named (not in the papers' default comparison), with its soft labels written per run"
    from fastai_softlabel.arguments import command_parser as _parser
    from fastai_softlabel.prepare import prepare as _prepare
    from fastai_softlabel.methods import BEYOND_THE_PAPERS
    default = _prepare(_parser().parse_args(['--task', 'multi', '--out', str(tmp_path/'x')]))[1]
    assert default == ['erm', 'mixup-a1', 'mixup-a3', 'manifold', 'flowmixup', 'flowmixup-noop'] and not set(BEYOND_THE_PAPERS) & set(default)
    r = softlabel(*FAST, '--backbone', 'resnet18', '--task', 'multi', '--methods', 'erm,ccl,ccl+flowmixup', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = pd.read_csv(tmp_path/'res'/'runs.csv')
    assert list(runs.method) == ['erm', 'ccl', 'ccl+flowmixup'] and runs.mean_auroc.between(0, 1).all()
    for m in ('ccl', 'ccl+flowmixup'):
        h = json.loads((tmp_path/'res'/'runs'/f'{m}_seed0_c0'/'ccl_history.json').read_text())
        assert len(h['history']) == 1 and 0 < h['history'][0]['p_bar'] < 1
    assert 'ccl+flowmixup' in (tmp_path/'res'/'report.html').read_text()

def test_paper_recipes(tmp_path):
    "--recipe paper resolves each task's training section (overridable), recorded in config.json, and trains"
    r = softlabel(*FAST, '--recipe', 'paper', '--bs', '16', '--methods', 'baseline,ccl', '--out', 'single', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    a = json.loads((tmp_path/'single'/'config.json').read_text())['settings']['arguments']
    assert (a['opt'], a['lr'], a['wd'], a['schedule'], a['clip'], a['lr_ccl'], a['head'], a['bs']) == ('sgd', 0.1, 1e-4, 'step', 5.0, 5e-4, '1024,1024,512', 16)
    r = softlabel(*FAST, '--backbone', 'resnet18', '--task', 'multi', '--recipe', 'paper', '--methods', 'erm,flowmixup', '--out', 'multi', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    a = json.loads((tmp_path/'multi'/'config.json').read_text())['settings']['arguments']
    assert (a['opt'], a['lr'], a['schedule'], a['weighted_bce'], a['bs']) == ('adam', 1e-4, 'plateau', 'yes', 32)
    assert pd.read_csv(tmp_path/'multi'/'runs.csv').mean_auroc.between(0, 1).all()

CINC = Path(__file__).resolve().parent.parent.parent/'shared'/'data'/'ecg-cinc2021'

def _ecg_npz(path, single=False, nan=False):
    from fastai_softlabel.signals import synthetic_ecg
    e = synthetic_ecg(n=40, length=100)
    if nan: e['signals'][7, 2, 10] = np.nan
    labels = e['labels'][:, :1].astype(np.int64) if single else e['labels']   # (N, 1): class indices, as MedMNIST ships them
    np.savez(path, signals=e['signals'], labels=labels, **({} if single else dict(label_names=e['label_names'])))
    return path

def test_signals_npz_train_a_1d_resnet(tmp_path):
    _ecg_npz(tmp_path/'ecg.npz')
    r = softlabel('--data', 'ecg.npz', '--methods', 'erm,flowmixup', '--epochs', '1', '--bs', '8', '--progress', 'log', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = pd.read_csv(tmp_path/'res'/'runs.csv')
    assert list(runs.method) == ['erm', 'flowmixup'] and runs.mean_auroc.between(0, 1).all()
    assert json.loads((tmp_path/'res'/'config.json').read_text())['settings']['arguments']['backbone'] == 'resnet1d34'
    _ecg_npz(tmp_path/'one.npz', single=True)
    r = softlabel('--data', 'one.npz', '--methods', 'baseline', '--epochs', '1', '--bs', '8', '--progress', 'log', '--out', 'res1', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {'accuracy', 'cohen_kappa_score'} <= set(pd.read_csv(tmp_path/'res1'/'runs.csv').columns)   # single-label, not 1-output BCE
    from fastai_softlabel.arguments import command_parser as _parser
    from fastai_softlabel.prepare import prepare as _prepare
    methods = _prepare(_parser().parse_args(['--data', str(tmp_path/'one.npz'), '--bs', '8', '--out', str(tmp_path/'new')]))[1]
    assert methods == ['baseline', 'lsr-u1', 'lsr-u5', 'lsr-a1', 'lsr-a5', 'ols', 'ccl']   # the default list, without cutmix
    # multi-label signals, no --methods: the Flow-Mixup task's default list (it stopped with "list.remove(x): x not in list")
    methods = _prepare(_parser().parse_args(['--data', str(tmp_path/'ecg.npz'), '--bs', '8', '--out', str(tmp_path/'new')]))[1]
    assert methods == ['erm', 'mixup-a1', 'mixup-a3', 'manifold', 'flowmixup', 'flowmixup-noop']
    # config.json records what applied to 100 Hz signals, not the image or WFDB options' defaults
    args = json.loads((tmp_path/'res'/'config.json').read_text())['settings']['arguments']
    assert not {'fs', 'seconds', 'task', 'in_chans', 'size', 'n_per_class', 'min_count', 'head', 'lr_ccl', 'lsr_eps'} & set(args), args
    assert args['weighted_bce'] == 'no' and args['alpha'] is None   # multi-label; flowmixup draws from Beta(α, α) (its default)

@pytest.mark.skipif(not CINC.exists(), reason='no CinC records')
def test_wfdb_folder_through_the_whole_pipeline(tmp_path):
    r = softlabel('--data', str(CINC), '--fs', '100', '--seconds', '5', '--mapping', str(CINC/'dx_mapping_scored.csv'), '--min-count', '3',
                  '--methods', 'erm,flowmixup', '--epochs', '1', '--bs', '8', '--progress', 'log', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path/'res'/'config.json').read_text())
    assert cfg['settings']['data']['kind'] == 'folder' and cfg['settings']['data']['files'] == 102 and 'NSR' in cfg['classes']
    assert len(pd.read_csv(tmp_path/'res'/'runs.csv')) == 2

def test_wfdb_folder_split_by_a_table(tmp_path):
    "A WFDB folder evaluated on the split a table gives it (--splits, --split-column, --train, --valid): counts in the summary and config.json"
    from conftest import wfdb_folder
    wfdb_folder(tmp_path/'ecg', n=12)
    pd.DataFrame(dict(record=[f'R{i:03d}' for i in range(11)], fold=['1']*4 + ['2']*4 + ['3']*3)).to_csv(tmp_path/'folds.csv', index=False)
    r = softlabel('--data', 'ecg', '--fs', '100', '--seconds', '2', '--splits', 'folds.csv', '--split-column', 'fold', '--train', '1,2',
                  '--valid', '3', '--methods', 'erm', '--epochs', '1', '--bs', '4', '--progress', 'log', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path/'res'/'config.json').read_text())
    assert cfg['split'] == dict(source='from folds.csv (fold)', counts={'(not in the table)': 1, '1': 4, '2': 4, '3': 3}, train=['1', '2'], valid='3',
                                checks=dict(absent_from_evaluated=[], copies_in_train=0))
    assert cfg['items'] == {'train': 8, 'valid': 3}
    assert 'training on 1+2 (8), evaluating on 3 (3); left out: (not in the table) 1' in r.stdout
    args = cfg['settings']['arguments']
    assert (args['fs'], args['seconds'], args['split_column'], args['train'], args['valid']) == (100., 2., 'fold', '1,2', '3')
    assert not {'in_chans', 'size', 'task', 'n_per_class'} & set(args) and cfg['settings']['splits']['name'] == 'folds.csv'

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
    r = softlabel('--data', 'ham.csv', '--images', 'img', '--size', '16', '--backbone', 'resnet10t', '--epochs', '1', '--bs', '8',
                  '--methods', 'baseline', '--progress', 'log', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = pd.read_csv(tmp_path/'res'/'runs.csv')
    assert list(runs.method) == ['baseline'] and 0 <= runs.accuracy[0] <= 1

def test_csv_unknown_columns(tmp_path):
    _ham_table(tmp_path).rename(columns={'dx': 'diagnosis'}).to_csv(tmp_path/'ham.csv', index=False)
    r = softlabel('--data', 'ham.csv', '--images', 'img', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 2 and 'neither the HAM10000 columns' in r.stderr and not (tmp_path/'res').exists()

def test_grayscale_stays_one_channel_with_in_chans_1(tmp_path):
    "Grayscale X-ray-like images train a backbone built with in_chans=1 (a 3-channel batch would fail in its first convolution)"
    rng = np.random.default_rng(0)
    np.savez(tmp_path/'gray.npz', images=rng.integers(0, 255, (24, 16, 16), dtype=np.uint8), labels=(rng.random((24, 3)) < 0.4).astype(np.uint8),
             label_names=np.array(['a', 'b', 'c']))
    r = softlabel('--data', 'gray.npz', '--in-chans', '1', '--methods', 'erm,flowmixup', '--backbone', 'resnet18', '--epochs', '1', '--bs', '8',
                  '--progress', 'log', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path/'res'/'config.json').read_text())['settings']['arguments']['in_chans'] == 1
    assert len(pd.read_csv(tmp_path/'res'/'runs.csv')) == 2

@pytest.mark.slow
def test_synthetic_ccl_recovers_the_true_similarity(tmp_path):
    "The default synthetic run at lr_CCL 1.0, the dictionary never frozen (CCL-Net's patience of 10 in 5 epochs): CCL's soft labels rank-correlate with the generator's class similarity (mean of 3 seeds >= 0.8)"
    r = softlabel('--methods', 'ccl', '--seeds', '0,1,2', '--lr-ccl', '1.0', '--ccl-patience', '10', '--progress', 'log', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rho = pd.read_csv(tmp_path/'res'/'runs.csv')['spearman_vs_true_similarity']
    assert len(rho) == 3 and rho.mean() >= 0.8, rho.tolist()

def test_fast_recipe_patience_freezes_the_dictionary_in_10_epochs(tmp_path):
    "10 epochs: the fast recipe's patience, 30% of the epochs (3, recorded), freezes CCL's dictionary once p̄ has not dropped for 3 epochs (lr_CCL 1.0, where p̄ settles within a few epochs)"
    from fastai_softlabel.ccl import epochs_without_drop
    r = softlabel(*FAST, '--methods', 'ccl', '--epochs', '10', '--lr-ccl', '1.0', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path/'res'
    assert json.loads((out/'config.json').read_text())['settings']['arguments']['ccl_patience'] == 3
    h = json.loads((out/'runs'/'ccl_seed0_c0'/'ccl_history.json').read_text())
    p,f = [e['p_bar'] for e in h['history']],h['frozen_at']
    assert f is not None and f < 9, (f, p)                                  # frozen, and not only at the last epoch
    assert epochs_without_drop(p[:f + 1]) == 3 and all(epochs_without_drop(p[:e + 1]) < 3 for e in range(f)), (f, p)
    assert len(set(p[f:])) == 1, p                                          # frozen: p̄ no longer moves
    assert f'class dictionary frozen after epoch {f}' in r.stdout

def _hf_cache(root:Path, repo:str, state:dict)->Path:
    "A Hugging Face cache holding `state` as `repo`'s model.safetensors, laid out as timm's download leaves it"
    from safetensors.torch import save_file
    rev = 'a'*40
    snap = root/f"models--{repo.replace('/', '--')}"/'snapshots'/rev
    snap.mkdir(parents=True); (snap.parent.parent/'refs').mkdir(); (snap.parent.parent/'refs'/'main').write_text(rev)
    save_file(state, snap/'model.safetensors')
    return snap/'model.safetensors'

def test_pretrained_weights_from_the_cache_or_one_line_offline(tmp_path):
    "`--pretrained` reads timm's weights from the Hugging Face cache and records their source and SHA-256; offline without them: one line, exit 2, nothing written"
    import hashlib, timm, torch
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(tmp_path/'empty'))
    r = subprocess.run([str(EXE), *FAST, '--pretrained', '--out', 'res'], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    for part in ('--pretrained: no pretrained weights of resnet10t', str(tmp_path/'empty'), '--weights FILE'): assert part in r.stderr, r.stderr
    assert not (tmp_path/'res').exists()
    torch.manual_seed(0)
    f = _hf_cache(tmp_path/'hub', 'timm/resnet10t.c3_in1k', timm.create_model('resnet10t').state_dict())
    env['HF_HUB_CACHE'] = str(tmp_path/'hub')
    r = subprocess.run([str(EXE), *FAST, '--pretrained', '--methods', 'baseline', '--out', 'res'], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path/'res'/'config.json').read_text())
    assert cfg['weights'] == dict(source='hf-hub:timm/resnet10t.c3_in1k/model.safetensors', sha256=hashlib.sha256(f.read_bytes()).hexdigest())
    assert cfg['settings']['arguments']['pretrained'] is True and cfg['precision'] == 'fp32'
    assert 'starting weights hf-hub:timm/resnet10t.c3_in1k/model.safetensors' in (tmp_path/'res'/'report.html').read_text()
    f.write_bytes(f.read_bytes()[:-4] + b'\0\0\0\0')   # other weights in the cache: --resume refuses them
    r = subprocess.run([str(EXE), *FAST, '--pretrained', '--methods', 'baseline', '--out', 'res', '--resume'], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 2 and 'was made with other settings (the --weights' in r.stderr, r.stderr

def test_jobs_and_shards_give_the_tables_of_one_process(tmp_path, monkeypatch, capsys):
    "`--jobs 2`, and two `--shard`s started at once into one folder (one makes it, the other joins): the same runs.csv (but the seconds) and summary.csv as one process"
    args = [*FAST, '--task', 'multi', '--methods', 'erm,ccl', '--seeds', '0,1']
    for extra,out in [([], 'one'), (['--jobs', '2'], 'jobs')]:
        r = softlabel(*args, *extra, '--out', out, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    assert '4 runs in 2 worker processes on cpu' in r.stdout and 'run 4/4 finished' in r.stdout
    ps = [subprocess.Popen([str(EXE), *args, '--shard', s, '--out', 'shards'], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for s in ('1/2', '2/2')]
    outs = [p.communicate(timeout=600) for p in ps]
    assert [p.returncode for p in ps] == [0, 0], [e[-2000:] for _,e in outs]
    assert 'run 2/2 of shard 1/2 (ccl, seed 0, corruption 0)' in outs[0][0]   # every 2nd run, from the 1st
    one = pd.read_csv(tmp_path/'one'/'runs.csv').drop(columns='seconds')
    for out in ('jobs', 'shards'):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path/out/'runs.csv').drop(columns='seconds'), one)
        assert (tmp_path/out/'summary.csv').read_text() == (tmp_path/'one'/'summary.csv').read_text()
    # a shard of another comparison, of another split, or one that is running already: refused (in-process, as the
    # console script calls `cli.main`: the command's start-up is measured above)
    err = refused([*args, '--epochs', '2', '--shard', '1/2', '--out', 'shards'], tmp_path, monkeypatch, capsys)
    assert "--shard: shards was made with other settings (--epochs 1 → 2)" in err, err
    err = refused([*args, '--shard', '1/3', '--out', 'shards'], tmp_path, monkeypatch, capsys)
    assert '--shard I/2 → I/3' in err, err
    import fcntl
    with open(tmp_path/'shards'/'.softlabel-shard-1-of-2', 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        err = refused([*args, '--shard', '1/2', '--out', 'shards'], tmp_path, monkeypatch, capsys)
    assert 'shard 1/2 is running already in shards' in err, err

def test_a_shard_alone_leaves_the_tables_to_the_last(tmp_path):
    "One shard of two: its runs, no tables; `softlabel report` names the other shard's runs as missing"
    r = softlabel(*FAST, '--methods', 'baseline', '--seeds', '0,1,2', '--shard', '2/2', '--out', 'res', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'shard 2/2: its runs are finished' in r.stdout and not (tmp_path/'res'/'runs.csv').exists()
    assert [p.name for p in (tmp_path/'res'/'runs').iterdir()] == ['baseline_seed1_c0']
    rep = softlabel('report', 'res', cwd=tmp_path)
    assert rep.returncode == 0 and '2 run(s) not in the tables: baseline_seed0_c0 (not run yet); baseline_seed2_c0 (not run yet)' in rep.stdout, rep.stdout

def _running_in_group(pgid:int)->list:
    "The processes of a process group that are not zombies (from /proc: the state and group of each)"
    found = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try: fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError: continue
        if int(fields[2]) == pgid and fields[0] != 'Z': found.append(stat.parent.name)
    return found

def test_ctrl_c_stops_every_worker_and_resume_finishes(tmp_path):
    "`--jobs 2` and a terminal's Ctrl-C (SIGINT to the whole process group): one line, exit 130, no worker left running; --resume finishes the runs"
    args = [*FAST, '--methods', 'baseline', '--seeds', '0,1,2,3,4,5', '--jobs', '2', '--out', 'res']
    p = subprocess.Popen([str(EXE), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not list((tmp_path/'res'/'runs').glob('baseline_*')) and p.poll() is None and time.monotonic() < deadline: time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)                   # what a terminal's Ctrl-C sends: every process of the group
    _, err = p.communicate(timeout=120)
    lines = [l for l in err.splitlines() if l.strip() and 'Warning' not in l and 'warnings.warn' not in l and 'warn(' not in l]
    assert p.returncode == 130 and len(lines) == 1 and lines[0].startswith('softlabel: interrupted after '), err[-2000:]
    time.sleep(1)
    assert _running_in_group(p.pid) == []   # no process of the command is left running (a zombie whose parent left is not)
    r = softlabel(*args, '--resume', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(pd.read_csv(tmp_path/'res'/'runs.csv').seed) == list(range(6)) and not list((tmp_path/'res'/'runs').glob('.partial-*'))
