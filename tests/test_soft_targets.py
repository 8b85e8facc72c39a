"""Soft targets (class distributions, per-label probabilities) as input: one-hot distributions reproduce the hard-label
run bit for bit through the command; every method defined on soft targets trains on them, scored against their hard
reading with KL and TV beside; a soft-target Learner keeps fastai's lr_find, get_preds and export/predict."""
import json
import numpy as np, pandas as pd, pytest, torch
from fastai.vision.all import *
from conftest import tiny_cnn, snapshot, assert_nested_equal, item_images, softlabel_here
from fastai_softlabel.data import array_image_dls, synthetic_class_images, synthetic_multilabel_images
from fastai_softlabel.methods import METHODS, on_soft_targets
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
    single,multi = ([n for n in METHODS if on_soft_targets(n, task)] for task in ('single', 'multi'))
    assert {'baseline', 'ccl', 'lsr-a1', 'gce', 'soft-labels'} <= set(single) and {'erm', 'flowmixup', 'elr'} <= set(multi) and 'ccl' not in multi
    one = [*FAST[:1], '1', *FAST[2:]]
    from fastai_softlabel.soft_label_prior import save_soft_labels
    save_soft_labels('P.npz', np.full((3, 3), .1) + .7*np.eye(3), [f'class{k}' for k in range(3)])   # for soft-labels
    softlabel_here('--data', 'soft.npz', '--methods', ','.join(single), '--soft-labels', 'P.npz', *one, '--out', 'single')
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
    assert got[0] == mine[0] and int(got[1]) == int(mine[2].argmax()) == int(got[2].argmax())
    assert str(got[0]) == d['class_names'][int(got[1])]   # the predicted class's name, not the first class's

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

def _coded(folder):
    "coded.npz: multi-hot findings coded as CheXpert codes them (1, 0, −1 uncertain, blank unmentioned), with a split"
    d = synthetic_multilabel_images(n_items=96, size=16, n_labels=6)
    rng = np.random.default_rng(0)
    y = d['labels'].astype(float)
    y[rng.random(y.shape) < .1] = -1
    y[(y == 0) & (rng.random(y.shape) < .3)] = np.nan
    np.savez(folder/'coded.npz', images=d['images'], labels=y, class_names=d['class_names'], split=np.where(rng.random(96) < .75, 'train', 'valid'))
    return y

def _check_policy_run(out, coded, policy, methods):
    "Each run trained on the policy's targets (preds.npz: the evaluated items'), was scored with the entries it left out left out, and recorded the policy"
    from fastai_softlabel.uncertain_labels import apply_uncertainty_policy, masked_mean_auroc
    expected = apply_uncertainty_policy(coded, policy, seed=0)
    cfg = json.loads(Path(out, 'config.json').read_text())
    assert cfg['settings']['arguments']['uncertain'] == policy and cfg['uncertain'] == dict(uncertain=int((coded == -1).sum()), unmentioned=int(np.isnan(coded).sum()))
    assert cfg['targets'] == ('hard' if policy in ('zeros', 'ones') else 'soft')
    rows = {r['method']: r for r in json.loads(Path(out, 'runs.json').read_text())}
    assert set(rows) == set(methods)
    for m,r in rows.items():
        p = np.load(Path(out, 'runs', f'{m}_seed0_c0', 'preds.npz'))
        t = expected[p['item']]
        if policy in ('zeros', 'ones'): np.testing.assert_array_equal(p['targets'], t)   # 0/1: the hard fast path
        else: np.testing.assert_array_equal(p['soft_targets'], t)
        assert r['diverged_epoch'] is None
        assert r['mean_auroc'] == pytest.approx(masked_mean_auroc(p['probs'], np.where(np.isnan(t), np.nan, t >= .5)), abs=1e-6), (policy, m)

def test_uncertain_findings_through_the_command(tmp_path, monkeypatch):
    "--uncertain: ignore leaves entries out of loss and metrics (also with --weighted-bce, and in co-teaching's small-loss ranking), ones-lsr trains soft targets through mixing, zeros is the hard path (CCL)"
    coded = _coded(tmp_path)
    monkeypatch.chdir(tmp_path)
    one = [*FAST[:1], '1', *FAST[2:]]
    for policy,methods,extra in (('ignore', ['erm', 'coteaching'], ['--weighted-bce', 'yes']), ('ones-lsr', ['erm', 'flowmixup'], ['--backbone', 'resnet18']),
                                 ('zeros', ['erm', 'ccl'], [])):
        softlabel_here('--data', 'coded.npz', '--uncertain', policy, '--methods', ','.join(methods), *one, *extra, '--out', policy)
        _check_policy_run(policy, coded, policy, methods)

@pytest.mark.slow
def test_every_multi_label_method_on_each_uncertainty_policy(tmp_path, monkeypatch):
    "Every multi-label method trains one epoch under each policy where it is defined: all of them under zeros and ones (0/1 targets), those defined on soft targets under the -lsr policies, erm under ignore"
    from fastai_softlabel.methods import method_names
    coded = _coded(tmp_path)
    monkeypatch.chdir(tmp_path)
    soft = [n for n in method_names('multi') if on_soft_targets(n, 'multi')]
    matrix = tmp_path/'P.npz'
    from fastai_softlabel.soft_label_prior import save_soft_labels
    save_soft_labels(matrix, np.full((6, 6), .04) + .76*np.eye(6), [f'label{k}' for k in range(6)])
    for policy,methods in (('zeros', list(method_names('multi'))), ('ones', list(method_names('multi'))), ('zeros-lsr', soft), ('ones-lsr', soft),
                            ('ignore', [n for n in METHODS if METHODS[n].left_out])):
        extra = ['--soft-labels', str(matrix)] if 'soft-labels' in methods else []
        softlabel_here('--data', 'coded.npz', '--uncertain', policy, '--methods', ','.join(methods), *FAST[:1], '1', *FAST[2:], '--backbone', 'resnet18', *extra, '--out', policy)
        _check_policy_run(policy, coded, policy, methods)

class KLSpy(Callback):
    "The training loss just before and just after CCL's `after_loss` (order 51): their difference is the KL term CCL added"
    run_valid = False
    def __init__(self, order): self.order = order
    def before_fit(self): self.seen = []
    def after_loss(self): self.seen.append((self.learn.loss.detach().clone(), self.learn.pred.detach().clone(), self.learn.yb[0].clone()))

def _ccl_learner(labels, **kw):
    from fastai_softlabel.ccl import CCL
    d = synthetic_class_images(n_per_class=16, size=16, n_classes=4)
    set_seed(0)   # the DataLoaders' shuffling, then the weights
    dls = array_image_dls(d['images'], labels(d['labels']), d['class_names'], bs=16, device='cpu', seed=0, **kw)
    set_seed(0)
    return Learner(dls, tiny_cnn(4), cbs=[CCL(widths=(32, 16), lr_ccl=0.05)])

def test_ccl_on_class_distributions():
    "CCL on soft single-label targets: one-hot rows train as class indices do; its KL is towards the expected soft label t·P; its head's CE is the expected head loss"
    from fastai_softlabel.losses import soft_label_kl, ccl_head_loss
    fits = []
    for labels,kw in ((lambda y: y, {}), (lambda y: np.eye(4, dtype=np.float32)[y], dict(multi_label=False))):
        learn = _ccl_learner(labels, **kw)   # made and fitted in turn: the head is drawn from the seed at the fit's start
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
        fits.append(learn)
    hard,onehot = fits
    assert_nested_equal(snapshot(onehot.model.state_dict()), snapshot(hard.model.state_dict()))
    assert_nested_equal(snapshot(onehot.ccl.ccl_head.state_dict()), snapshot(hard.ccl.ccl_head.state_dict()))
    votes = _ccl_learner(lambda y: np.random.default_rng(0).dirichlet(np.ones(4), len(y)).astype(np.float32), multi_label=False)
    with votes.no_bar(), votes.no_logging(): votes.fit(1, 1e-2)
    votes.ccl.freeze_dictionary()
    P = votes.ccl.soft_labels.clone()
    before,after = KLSpy(50),KLSpy(52)
    with votes.no_bar(), votes.no_logging(): votes.fit(1, 1e-2, cbs=[before, after])
    assert len(before.seen) == len(votes.dls.train)
    for (l0,pred,t),(l1,_,_) in zip(before.seen, after.seen):
        assert t.ndim == 2 and t.is_floating_point()
        torch.testing.assert_close(l1 - l0, soft_label_kl(pred, t.as_subclass(Tensor)@P), rtol=1e-5, atol=1e-6)
    # the head's CE on a distribution is the expected CE over its classes: sum_k t_k CE(e, k)
    torch.manual_seed(0)
    e,dic,t = torch.randn(5, 8),torch.randn(4, 8),torch.softmax(torch.randn(5, 4), 1)
    per_class = torch.stack([ccl_head_loss(e, dic, torch.full((5,), k), weight=torch.eye(5)[i])[1] for i in range(5) for k in range(4)]).view(5, 4)
    torch.testing.assert_close(ccl_head_loss(e, dic, t)[1], (t*per_class).sum(1).mean())

def test_ccl_refuses_multi_label_soft_targets():
    "CCL's multi-label form scales multi-hot positives: per-label probabilities are refused when the Learner is made, before any work"
    from fastai_softlabel.ccl import CCL
    d = synthetic_multilabel_images(n_items=64, size=16, n_labels=6)
    dls = array_image_dls(d['images'], np.clip(.8*d['labels'] + .1, 0, 1), d['class_names'], bs=16, device='cpu')
    with pytest.raises(ValueError, match="CCL is defined on multi-hot labels \\(its multi-label form scales"): Learner(dls, tiny_cnn(6), cbs=[CCL()])
