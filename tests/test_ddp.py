"CCL and FlowMixup under fastai's DDP (`learn.distrib_ctx()`): 2 CPU processes over gloo, ranks seeded differently, everything that must agree compared bit for bit."
from pathlib import Path
import pytest, torch
from conftest import assert_nested_equal, snapshot
from ddp_launch import run_ranks

WORKER = Path(__file__).parent/'ddp_worker.py'
pytest.importorskip('accelerate')

def run(setup, tmp_path, epochs=3):
    run_ranks(WORKER, world_size=2, timeout=300, args=['--out', tmp_path, '--setup', setup, '--epochs', epochs])
    return [torch.load(tmp_path/f'rank{r}.pt', weights_only=False) for r in range(2)]

@pytest.mark.parametrize('setup', ['ccl', 'ccl_named', 'ccl+flowmixup', 'ccl+mixup', 'ccl+manifold', 'ccl_multilabel'])
def test_ccl_ranks_agree_bit_for_bit(setup, tmp_path):
    r0, r1 = run(setup, tmp_path)
    assert not torch.equal(r0['first_draw'], r1['first_draw'])          # the ranks' random streams differ...
    for k in ('model', 'head', 'head_opt', 'soft_labels', 'history', 'frozen_at', 'values'):   # ...yet all of this agrees
        assert_nested_equal(snapshot(r0[k]), snapshot(r1[k]), k)
    assert r0['frozen_at'] == 1 and len(r0['history']) == 3   # frozen after epoch 1 (min_delta=1), on both ranks alike
    assert r0['module_name'] == ('4' if setup == 'ccl_named' else '3')  # names refer to the model inside the DDP wrapper
    # learn.save writes the model and the CCL state on rank 0 only
    assert r0['files'] == ['models/final.callbacks.pth', 'models/final.pth'] and r1['files'] == []
    # the heads agreed at every epoch's check without being copied: each rank stepped on the same gathered batch
    assert r0['warnings'] == [] and r1['warnings'] == []
    # that batch is rank 0's rows then rank 1's, features and targets alike, on both ranks
    g0, g1 = r0['first_gather'], r1['first_gather']
    for r in (g0, g1):
        assert torch.equal(r['all_feats'], torch.cat([g0['feats'], g1['feats']]))
        assert torch.equal(r['all_target'], torch.cat([g0['target'], g1['target']]))
        assert torch.equal(r['all_keep'], torch.cat([g0['keep'], g1['keep']]))   # the rows each rank's head may learn from
    if setup == 'ccl+mixup':   # mixed one-hot targets: rows of K probabilities, not all one-hot
        t = g0['all_target']
        assert t.shape == (16, 4) and torch.allclose(t.sum(1), torch.ones(16)) and (t.max(1).values < 1).any()
    elif setup == 'ccl_multilabel':   # the items' positives spread evenly: rows of K probabilities, some with two halves
        t = g0['all_target']
        assert t.shape[1] == 4 and torch.allclose(t.sum(1), torch.ones(len(t))) and (t == 0.5).any()
    elif setup == 'ccl+manifold':   # a rank that mixed before the features sends mixed rows, the other one-hot rows: the same columns
        t = g0['all_target']
        assert t.shape == (16, 4) and torch.allclose(t.sum(1), torch.ones(16))
    else:   # class indices travel as one-hot rows: the same columns on every rank, whichever way its batch went
        t = g0['all_target']
        assert t.shape == (16, 4) and set(t.unique().tolist()) <= {0., 1.} and torch.equal(t.sum(1), torch.ones(16))

def test_heads_that_drift_apart_are_reunited_with_a_warning(tmp_path):
    r0, r1 = run('ccl_drift', tmp_path)   # rank 1 nudges its head once in epoch 0
    assert len(r0['warnings']) == 1 and 'epoch 0 the head differed between ranks' in r0['warnings'][0]
    assert r1['warnings'] == []           # warned once, on rank 0
    for k in ('model', 'head', 'head_opt', 'soft_labels', 'history', 'values'):
        assert_nested_equal(snapshot(r0[k]), snapshot(r1[k]), k)

def test_all_gather_rows(tmp_path):
    "core.all_gather_rows: rows of every rank in rank order, whatever the number of rows per rank (none included)"
    r0, r1 = run('gather', tmp_path)
    for r in (r0, r1):
        assert torch.equal(r['gathered'], torch.tensor([[10., 11.], [12., 13.]]))   # rank 0 had no rows
        assert torch.equal(r['ints'], torch.tensor([0, 1, 1]))
        # a row count every rank knows: padded with zeros, no exchange of the counts
        assert torch.equal(r['padded'], torch.tensor([[0., 0.], [0., 0.], [10., 11.], [12., 13.]]))

def test_flowmixup_ranks_agree(tmp_path):
    r0, r1 = run('flowmixup', tmp_path, epochs=2)
    assert not torch.equal(r0['first_draw'], r1['first_draw'])
    assert_nested_equal(snapshot(r0['model']), snapshot(r1['model']), 'model')
    assert_nested_equal(snapshot(r0['values']), snapshot(r1['values']), 'values')

def test_ranks_that_disagree_are_refused(tmp_path):
    "`check_ranks_agree`, which the command runs after each DDP run: silent on identical models, an error on every rank for one bit of difference"
    r0, r1 = run('agree', tmp_path)
    assert r0['error'] == r1['error'] and "the ranks' trained models differ" in r0['error']

def test_the_command_under_torchrun(tmp_path):
    "`softlabel` as 2 gloo ranks (as `torchrun --nproc_per_node 2` starts it): each run trained by both, checked to agree, written once by rank 0"
    import json, os, sys, pandas as pd
    exe = Path(sys.executable).parent/'softlabel'
    cwd = os.getcwd(); os.chdir(tmp_path)
    try: outs = run_ranks(exe, world_size=2, timeout=300, args=['--epochs', '2', '--n-per-class', '8', '--size', '16', '--backbone', 'resnet10t',
                                                                   '--methods', 'baseline,ccl', '--bs', '8', '--save-model', 'last', '--out', 'res'])
    finally: os.chdir(cwd)
    assert [p.name for p in tmp_path.iterdir()] == ['res']
    assert sorted(p.name for p in (tmp_path/'res'/'runs').iterdir()) == ['baseline_seed0_c0', 'ccl_seed0_c0']
    runs = pd.read_csv(tmp_path/'res'/'runs.csv')
    assert list(runs.method) == ['baseline', 'ccl'] and runs.accuracy.between(0, 1).all()
    assert 'results in res/' in outs[0] and 'results in' not in outs[1] and 'epoch 1:' not in outs[1]   # rank 0 reports
    assert json.loads((tmp_path/'res'/'config.json').read_text())['device'] == 'cpu'
    # the accuracy over the 13 evaluated items, not over the 14 that fastai's DistributedDL pads them to for 2 processes
    from fastai.learner import load_learner
    from fastai_softlabel.experiments import synthetic_dataset
    d = synthetic_dataset('single', 8)
    valid = d['split'] == 'valid'
    assert valid.sum() == 13
    for i,method in enumerate(runs.method):
        learn = load_learner(tmp_path/'res'/'runs'/f'{method}_seed0_c0'/'export.pkl')
        with learn.no_bar(): probs,_ = learn.get_preds(dl=learn.dls.test_dl(list(d['images'][valid])))
        assert abs(runs.accuracy[i] - (probs.argmax(1).numpy() == d['labels'][valid]).mean()) < 1e-6, (method, runs.accuracy[i])
