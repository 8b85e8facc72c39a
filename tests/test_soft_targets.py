"""Soft targets (class distributions, per-label probabilities) as input: one-hot distributions reproduce the hard-label
run bit for bit through the command; every method defined on soft targets trains on them, scored against their hard
reading with KL and TV beside; a soft-target Learner keeps fastai's lr_find, get_preds and export/predict."""
import json
import numpy as np, pandas as pd, pytest, torch
from fastai.vision.all import *
from conftest import tiny_cnn, snapshot, assert_nested_equal, item_images, softlabel_here
from fastai_softlabel.data import array_image_dls, synthetic_class_images, synthetic_multilabel_images
from fastai_softlabel.methods import METHODS
from fastai_softlabel.signals import signal_dls
from fastai_softlabel.soft_targets import SoftTargetCrossEntropy, soft_target_kl, soft_target_tv, hard_labels

FAST = ['--epochs', '2', '--bs', '16', '--size', '16', '--backbone', 'resnet10t', '--progress', 'log', '--threads', '1']

def _single(folder, n_per_class=24):
    "hard.npz (class indices), onehot.npz (the same as one-hot distributions) and soft.npz (readers' shares) of one image set and split"
    d = synthetic_class_images(n_per_class=n_per_class, size=16, n_classes=3)
    rng = np.random.default_rng(0)
    y = d['labels']
    split = np.where(rng.random(len(y)) < .75, 'train', 'valid')
    votes = rng.multinomial(4, np.full(3, .1) + .7*np.eye(3)[y])/4   # four readers, each right with probability 0.8
    common = dict(images=d['images'], class_names=d['class_names'], split=split)
    np.savez(folder/'hard.npz', labels=y, **common)
    np.savez(folder/'onehot.npz', label_distributions=np.eye(3, dtype=np.float32)[y], **common)
    np.savez(folder/'soft.npz', label_distributions=votes.astype(np.float32), **common)
    return votes,split

def test_one_hot_distributions_reproduce_the_hard_run_bit_for_bit(tmp_path, monkeypatch):
    "The baseline on one-hot label_distributions is the baseline on class indices: every recorded number and every probability equal"
    _single(tmp_path)
    monkeypatch.chdir(tmp_path)
    for f in ('hard', 'onehot'): softlabel_here('--data', f'{f}.npz', '--methods', 'baseline', '--select', '0.2', *FAST, '--out', f)
    hard,soft = pd.read_csv('hard/runs.csv'),pd.read_csv('onehot/runs.csv')
    extra = sorted(set(soft.columns) - set(hard.columns))
    assert extra and all(c.startswith(('kl_to_target', 'tv_to_target')) for c in extra) and not set(hard.columns) - set(soft.columns)
    same = [c for c in hard.columns if c != 'seconds']
    pd.testing.assert_frame_equal(hard[same], soft[same], check_exact=True)
    assert soft.loc[0, 'kl_to_target'] > 0   # one-hot targets: KL is the cross-entropy, above 0
    a,b = np.load('hard/runs/baseline_seed0_c0/preds.npz'),np.load('onehot/runs/baseline_seed0_c0/preds.npz')
    np.testing.assert_array_equal(a['probs'], b['probs']); np.testing.assert_array_equal(a['targets'], b['targets'])
    assert json.loads(Path('hard/config.json').read_text())['targets'] == 'hard'
    assert json.loads(Path('onehot/config.json').read_text())['targets'] == 'soft'

def test_every_method_defined_on_soft_targets_trains_on_them(tmp_path, monkeypatch):
    "Single- and multi-label soft targets, every method the registry defines on them: one epoch, finite, scored against the hard reading"
    votes,split = _single(tmp_path)
    d = synthetic_multilabel_images(n_items=96, size=16, n_labels=6)
    rng = np.random.default_rng(1)
    probs = np.clip(.8*d['labels'] + rng.uniform(0, .2, d['labels'].shape), 0, 1).astype(np.float32)   # per-finding confidences
    np.savez(tmp_path/'msoft.npz', images=d['images'], labels=probs, class_names=d['class_names'], split=np.where(rng.random(96) < .75, 'train', 'valid'))
    monkeypatch.chdir(tmp_path)
    single = [n for n,m in METHODS.items() if m.soft_targets and 'single' in m.tasks]
    multi = [n for n,m in METHODS.items() if m.soft_targets and 'multi' in m.tasks]
    assert 'baseline' in single and {'erm', 'flowmixup'} <= set(multi)
    one = [*FAST[:1], '1', *FAST[2:]]
    softlabel_here('--data', 'soft.npz', '--methods', ','.join(single), *one, '--out', 'single')
    softlabel_here('--data', 'msoft.npz', '--methods', ','.join(multi), *one, '--backbone', 'resnet18', '--out', 'multi')
    for out,methods,file,ml in (('single', single, 'soft.npz', False), ('multi', multi, 'msoft.npz', True)):
        rows = {r['method']: r for r in json.loads(Path(out, 'runs.json').read_text())}
        assert set(rows) == set(methods)
        targets = np.load(file)['label_distributions' if not ml else 'labels']
        for m,r in rows.items():
            assert r['diverged_epoch'] is None and np.isfinite(r['kl_to_target']) and 0 <= r['tv_to_target'] <= 1, (out, m)
            p = np.load(Path(out, 'runs', f'{m}_seed0_c0', 'preds.npz'))
            np.testing.assert_array_equal(p['soft_targets'], targets[p['item']])        # the file's targets, of the evaluated items
            np.testing.assert_array_equal(p['targets'], hard_labels(targets[p['item']], ml))   # the tables' hard reading
            assert r['kl_to_target'] == pytest.approx(soft_target_kl(p['probs'], p['soft_targets'], ml), abs=1e-5)
            assert r['tv_to_target'] == pytest.approx(soft_target_tv(p['probs'], p['soft_targets'], ml), abs=1e-5)
            main = 'mean_auroc' if ml else 'accuracy'
            if not ml: assert r[main] == pytest.approx((p['probs'].argmax(1) == p['targets']).mean())

def test_a_soft_target_learner_in_fastais_life_cycle(tmp_path):
    "lr_find leaves the model bit-identical; get_preds gives the targets as given and per-item losses; export/predict decodes a class"
    d = synthetic_class_images(n_per_class=16, size=16, n_classes=4)
    votes = np.random.default_rng(0).dirichlet(np.ones(4), len(d['labels'])).astype(np.float32)
    dls = array_image_dls(d['images'], votes, d['class_names'], multi_label=False, bs=16, device='cpu', seed=0)
    set_seed(0)
    learn = Learner(dls, tiny_cnn(4), path=tmp_path)
    assert isinstance(learn.loss_func, SoftTargetCrossEntropy)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    before = snapshot(learn.model.state_dict())
    with learn.no_bar(), learn.no_logging(): learn.lr_find(num_it=5, show_plot=False)
    assert_nested_equal(snapshot(learn.model.state_dict()), before)
    with learn.no_bar(): probs,targs,losses = learn.get_preds(with_loss=True)
    np.testing.assert_array_equal(targs.numpy(), votes[np.asarray(dls.valid_ds.items)])
    torch.testing.assert_close(losses, -(targs*torch.log(probs)).sum(1), rtol=1e-4, atol=1e-5)
    learn.export('export.pkl')
    back = load_learner(tmp_path/'export.pkl')
    item = item_images(dls, dls.valid_ds.items[:1])[0]
    with back.no_bar(), learn.no_bar(): got,mine = back.predict(item),learn.predict(item)
    assert got[0] == mine[0] and str(got[0]) in d['class_names'] and int(got[1]) == int(mine[2].argmax())

def test_signals_take_soft_targets():
    "signal_dls carries class distributions as floats (cross-entropy against them) and per-label probabilities (BCE)"
    x = np.random.default_rng(0).normal(size=(20, 2, 50)).astype(np.float32)
    dist = np.random.default_rng(1).dirichlet(np.ones(3), 20).astype(np.float32)
    dls = signal_dls(x, dist, ['a', 'b', 'c'], multi_label=False, bs=4, device='cpu')
    assert isinstance(dls.loss_func, SoftTargetCrossEntropy)
    _,y = dls.valid.one_batch()
    np.testing.assert_array_equal(y.numpy(), dist[np.asarray(dls.valid.items[:4])])
    ml = signal_dls(x, np.clip(dist*1.5, 0, 1), ['a', 'b', 'c'], bs=4, device='cpu')
    assert type(ml.loss_func).__name__ == 'BCEWithLogitsLossFlat'
    with pytest.raises(ValueError, match='must sum to 1'): signal_dls(x, dist*.5, ['a', 'b', 'c'], multi_label=False, bs=4)
