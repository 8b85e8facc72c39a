"""The noise-robust baselines in fastai's life cycle: ELR's per-item targets under shuffling, gradient accumulation,
bf16 autocast, lr_find, fine_tune, save/load, export/predict and interrupted fits; the robust losses as a Learner's
loss through the same steps."""
import json
import numpy as np, pytest, torch
from fastai.vision.all import *
from conftest import tiny_cnn, make_dls, snapshot, assert_nested_equal, no_hooks, StopAfterBatches, CPUAutocast, item_images
from fastai_softlabel.elr import ELR, elr_target_update, elr_regularizer
from fastai_softlabel.robust_losses import GCELoss, SCELoss, BootstrapLoss, BootstrapBCELoss
from fastai_softlabel.flowmixup import Mixup

class Spy(Callback):
    "Every training batch's item indices and probabilities, as ELR saw them"
    order,run_valid = ELR.order + 1,False
    def before_fit(self): self.seen = []
    def after_loss(self): self.seen.append((self.learn.elr._idx.clone(), F.softmax(self.learn.pred.detach().float(), -1)))

def replayed(seen, n, k, beta=0.7):
    "ELR's targets computed by hand from the batches' indices and probabilities"
    t = torch.zeros(n, k)
    for idx,p in seen: t[idx] = elr_target_update(t[idx], p, beta)
    return t

def elr_learner(dls, tmp_path=None, **kwargs):
    set_seed(0)
    return Learner(dls, tiny_cnn(4), cbs=[ELR(**kwargs)], path=tmp_path or Path('.'))

def test_targets_are_running_averages_under_accumulation(dls):
    "`GradientAccumulation` changes when the optimizer steps, not which items each batch holds: targets as without it"
    learn = elr_learner(dls)
    learn.fit(2, 1e-2, cbs=[spy := Spy(), GradientAccumulation(n_acc=32)])
    n = len(dls.train_ds)
    test_close(learn.elr.targets, replayed(spy.seen, n, 4))
    assert len(spy.seen) == 2*(n//16) and len({tuple(i.tolist()) for i,_ in spy.seen}) == len(spy.seen)   # shuffled: no two batches alike

def test_loss_is_scaled_by_accumulation_as_the_learners_is(dls):
    "ELR adds to `loss_grad` before `GradientAccumulation` (order 6) divides it: λ = 0 trains as plain accumulation does"
    def weights(cbs):
        set_seed(0); learn = Learner(make_dls(), tiny_cnn(4), cbs=cbs)   # a new loader each: its generator starts alike
        learn.fit(1, 1e-2, cbs=GradientAccumulation(n_acc=32))
        return learn.model.state_dict()
    assert_nested_equal(snapshot(weights([ELR(lam=0.)])), snapshot(weights([])))

def test_bf16_autocast_keeps_targets_float32(dls):
    learn = elr_learner(dls)
    learn.fit(1, 1e-2, cbs=[spy := Spy(), CPUAutocast()])
    assert learn.elr.targets.dtype == torch.float32 and torch.isfinite(learn.elr.targets).all()
    test_close(learn.elr.targets, replayed(spy.seen, len(dls.train_ds), 4), eps=1e-5)

def test_lr_find_leaves_model_optimizer_and_targets_bit_identical(dls, tmp_path):
    learn = elr_learner(dls, tmp_path)
    learn.fit(1, 1e-2)
    before = snapshot(dict(model=learn.model.state_dict(), targets=learn.elr.targets))
    learn.lr_find(num_it=6, show_plot=False, suggest_funcs=())
    assert_nested_equal(before, snapshot(dict(model=learn.model.state_dict(), targets=learn.elr.targets)))
    assert learn.dls.train.dataset is dls.train.dataset   # the indexed copy never replaced the Learner's loader

def test_save_load_restores_targets_and_fine_tune_keeps_them(dls, tmp_path):
    learn = elr_learner(dls, tmp_path)
    learn.fit(1, 1e-2); learn.save('m')
    saved = learn.elr.targets.clone()
    learn.fit(1, 1e-2)
    assert not torch.equal(learn.elr.targets, saved)
    learn.load('m')
    test_eq(learn.elr.targets, saved)
    learn.fine_tune(1, 1e-3, freeze_epochs=1)   # two fits: the targets go on averaging over both
    assert learn.elr.targets.shape == (len(dls.train_ds), 4) and (learn.elr.targets.sum(1) > saved.sum(1) - 1e-6).all()

def test_interrupted_fit_leaves_the_loader_and_the_next_fit_correct(dls):
    "A fit cancelled mid-epoch keeps the targets of the last finished epoch; the next fit's targets follow its batches"
    learn = elr_learner(dls)
    learn.fit(1, 1e-2)
    done = learn.elr.targets.clone()
    learn.fit(1, 1e-2, cbs=StopAfterBatches(2))
    test_eq(learn.elr.targets, done)
    learn.fit(1, 1e-2, cbs=(spy := Spy()))
    t = done.clone()
    for idx,p in spy.seen: t[idx] = elr_target_update(t[idx], p, 0.7)
    test_close(learn.elr.targets, t)

def test_same_shuffling_as_without_elr(dls):
    "The indexed copy draws its order from the loader's own generator: the same batches as a Learner without ELR"
    def orders(cbs):
        class Order(Callback):
            run_valid = False
            order = ELR.order + 1
            def before_fit(self): self.rows = []
            def before_batch(self): self.rows.append(self.learn.xb[0].sum((1, 2, 3)).clone())
        set_seed(0); learn = Learner(make_dls(), tiny_cnn(4), cbs=cbs + [o := Order()])
        learn.fit(2, 0.)
        return o.rows
    for a,b in zip(orders([ELR()]), orders([])): test_eq(a, b)

def test_export_predicts_and_get_preds_has_no_index(dls, tmp_path):
    learn = elr_learner(dls, tmp_path)
    learn.fit(1, 1e-2)
    probs,targs = learn.get_preds()
    test_eq(probs.shape, (len(dls.valid_ds), 4)); test_eq(targs.ndim, 1)
    learn.export(tmp_path/'export.pkl')
    new = load_learner(tmp_path/'export.pkl')
    assert not {'_plain', '_indexed', '_t'} & set(vars(new.elr))   # no training loader (nor its data) in the export
    img = item_images(dls, [dls.valid_ds.items[0]])[0]
    test_eq(new.predict(img)[2], learn.predict(img)[2])

def test_refuses_mixing_and_a_second_elr(dls):
    for cbs,msg in [([ELR(), Mixup()], 'mix items'), ([ELR(), ELR()], 'one ELR callback'), ([ELR(), MixUp()], "fastai's MixUp")]:
        learn = Learner(dls, tiny_cnn(4), cbs=cbs)
        with pytest.raises(ValueError, match=msg): learn.fit(1, 1e-2)

def test_elr_refuses_ddp(dls, monkeypatch):
    "Under DDP a process sees its share of the items only: refused before the fit, the model untouched"
    import fastai_softlabel.elr as elr
    monkeypatch.setattr(elr, 'distributed_world', lambda: 2)
    learn = elr_learner(dls)
    before = snapshot(learn.model.state_dict())
    with pytest.raises(ValueError, match='Train ELR in one process'): learn.fit(1, 1e-2)
    assert_nested_equal(before, snapshot(learn.model.state_dict()))

def test_multilabel_targets_are_per_label_averages():
    from test_step_cost import multilabel_dls
    dls = multilabel_dls()
    set_seed(0); learn = Learner(dls, tiny_cnn(4), loss_func=BCEWithLogitsLossFlat(), cbs=[ELR()])
    class MSpy(Spy):
        def after_loss(self): self.seen.append((self.learn.elr._idx.clone(), torch.sigmoid(self.learn.pred.detach().float())))
    learn.fit(2, 1e-2, cbs=(spy := MSpy()))
    t = torch.zeros(len(dls.train_ds), 4)
    for idx,p in spy.seen: t[idx] = elr_target_update(t[idx], p, 0.7, multi=True)
    test_close(learn.elr.targets, t)

@pytest.mark.parametrize('make', [GCELoss, SCELoss, BootstrapLoss, lambda: BootstrapLoss(hard=True)], ids=['gce', 'sce', 'bootstrap-soft', 'bootstrap-hard'])
def test_robust_losses_through_lr_find_save_load_and_export(make, dls, tmp_path):
    set_seed(0); learn = Learner(dls, tiny_cnn(4), loss_func=make(), path=tmp_path)
    learn.fit(1, 1e-2)
    before = snapshot(learn.model.state_dict())
    learn.lr_find(num_it=6, show_plot=False, suggest_funcs=())
    assert_nested_equal(before, snapshot(learn.model.state_dict()))
    learn.save('m'); learn.fit(1, 1e-2); learn.load('m')
    assert_nested_equal(before, snapshot(learn.model.state_dict()))
    probs,_,losses = learn.get_preds(with_loss=True)
    test_close(probs.sum(1), torch.ones(len(probs))); test_eq(losses.shape, (len(probs),))
    learn.export(tmp_path/'export.pkl')
    img = item_images(dls, [dls.valid_ds.items[0]])[0]
    test_eq(load_learner(tmp_path/'export.pkl').predict(img)[2], learn.predict(img)[2])

@pytest.mark.parametrize('make,multi', [(GCELoss, False), (SCELoss, False), (BootstrapLoss, False), (BootstrapBCELoss, True)])
def test_robust_losses_take_fastais_typed_tensors(make, multi):
    "A model called on a `TensorImage` returns one (as `--select`'s scoring does); targets come as `TensorCategory`/`TensorMultiCategory`"
    z = TensorImage(torch.randn(4, 3))
    y = TensorMultiCategory(torch.tensor([[1., 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])) if multi else TensorCategory(torch.tensor([0, 2, 1, 0]))
    test_close(make()(z, y), make()(z.as_subclass(Tensor), y.as_subclass(Tensor)))

def test_bootstrap_bce_multilabel_predicts_labels(tmp_path):
    from test_step_cost import multilabel_dls
    dls = multilabel_dls()
    set_seed(0); learn = Learner(dls, tiny_cnn(4), loss_func=BootstrapBCELoss(), path=tmp_path)
    learn.fit(1, 1e-2)
    probs,targs = learn.get_preds()
    assert ((probs >= 0) & (probs <= 1)).all() and targs.shape == probs.shape
    learn.export(tmp_path/'export.pkl')
    img = item_images(dls, [dls.valid_ds.items[0]])[0]
    test_eq(load_learner(tmp_path/'export.pkl').predict(img)[2], learn.predict(img)[2])

# ---------------------------------------------------------------- co-teaching
from fastai_softlabel.coteaching import CoTeaching

def coteaching_learner(dls, tmp_path=None, loss_func=None, **kwargs):
    set_seed(0)
    return Learner(dls, tiny_cnn(4), loss_func=loss_func, cbs=[CoTeaching(0.3, t_k=2, **kwargs)], path=tmp_path or Path('.'))

class PeerSteps(Callback):
    "The peer's weights after every optimizer step of the Learner, and the number of steps"
    order = CoTeaching.order + 1
    def before_fit(self): self.steps,self.changed = 0,[]
    def before_step(self): self._before = [p.detach().clone() for p in self.learn.co_teaching.peer.parameters()]
    def after_step(self):
        self.steps += 1
        self.changed.append(any(not torch.equal(a, p) for a,p in zip(self._before, self.learn.co_teaching.peer.parameters())))

def test_peer_steps_exactly_when_the_learner_steps_under_accumulation(dls):
    learn = coteaching_learner(dls)
    before = snapshot(learn.model.state_dict())
    learn.fit(1, 1e-2, cbs=[spy := PeerSteps(), GradientAccumulation(n_acc=32)])
    n = len(dls.train_ds)//16
    assert spy.steps == n//2 and all(spy.changed)   # one step per two batches, and the peer moved at each
    assert learn.co_teaching.peer is not learn.model and not any(p is q for p,q in zip(learn.co_teaching.peer.parameters(), learn.model.parameters()))

def test_interrupted_fit_then_a_fit_and_export(dls, tmp_path):
    learn = coteaching_learner(dls, tmp_path)
    learn.fit(1, 1e-2, cbs=StopAfterBatches(1))
    learn.fit(2, 1e-2)
    test_eq([h['keep_rate'] for h in learn.co_teaching.history], [1., .7])   # R(T) with T_k = 2, τ = 0.3; the cancelled epoch is not one
    learn.export(tmp_path/'export.pkl')
    new = load_learner(tmp_path/'export.pkl')
    assert isinstance(new.co_teaching.peer, nn.Module)   # both networks exported; the Learner's model predicts
    img = item_images(dls, [dls.valid_ds.items[0]])[0]
    test_eq(new.predict(img)[2], learn.predict(img)[2])

def test_multilabel_coteaching_keeps_whole_items():
    from test_step_cost import multilabel_dls
    dls = multilabel_dls()
    class Kept(Callback):
        order,run_valid = CoTeaching.order + 0.5,False
        def before_fit(self): self.n = []
        def after_loss(self): self.n.append((len(self.learn.co_teaching._kept[0]), len(self.learn.yb[0])))
    learn = coteaching_learner(dls, loss_func=BCEWithLogitsLossFlat())
    learn.fit(2, 1e-2, cbs=(k := Kept()))
    assert [a for a,b in k.n[-2:]] == [int(.7*b) for a,b in k.n[-2:]]   # items, not label bits

def test_coteaching_refuses_what_it_cannot_run_with(dls):
    for cbs,msg in [([CoTeaching(.2), ELR()], 'does not combine with ELR'), ([CoTeaching(.2), CoTeaching(.2)], 'one CoTeaching')]:
        learn = Learner(dls, tiny_cnn(4), cbs=cbs)
        with pytest.raises(ValueError, match=msg): learn.fit(1, 1e-2)
    with pytest.raises(ValueError, match=r'tau must be in \[0, 1\)'): CoTeaching(1.)

def test_peer_optimizer_is_the_learners_kind_and_its_start_the_models_distribution(dls):
    "SGD with L2 weight decay (the paper recipe) gives the peer SGD with it; Adam gives AdamW; the peer's weights are the model's, permuted"
    for opt_func,kind in [(partial(SGD, mom=0.9, decouple_wd=False), torch.optim.SGD), (Adam, torch.optim.AdamW)]:
        set_seed(0); learn = Learner(dls, tiny_cnn(4), opt_func=opt_func, wd=1e-4, cbs=[CoTeaching(0.2)])
        learn.fit(1, 1e-2, cbs=StopAfterBatches(1))
        opt = learn.co_teaching._lockstep.opt
        assert type(opt) is kind and opt.param_groups[0]['weight_decay'] == 1e-4, (type(opt), opt.param_groups[0]['weight_decay'])
    set_seed(0); m = tiny_cnn(4); nn.init.zeros_(m[0][1].weight)   # a zero-initialised BatchNorm scale
    learn = Learner(dls, m, cbs=[CoTeaching(0.2)]); learn.fit(1, 0., cbs=StopAfterBatches(1))
    peer = dict(learn.co_teaching.peer.named_parameters())
    assert (peer['0.1.weight'] == 0).all()
    for k,p in learn.model.named_parameters():
        if p.numel() > 16: assert not torch.equal(p, peer[k]) and torch.equal(p.flatten().sort().values, peer[k].flatten().sort().values), k

def test_instance_noise_from_a_model_the_user_names(tmp_path, monkeypatch):
    "--noise instance --noise-file export.pkl: the training labels' noise is drawn from the exported model's classifier inputs (noise.npz), not the random projection's"
    from conftest import softlabel_here
    from fastai_softlabel.data import synthetic_class_images
    from fastai_softlabel.corruption import add_label_noise, random_projection_features, standardised
    from fastai_softlabel.models import penultimate_features
    d = synthetic_class_images(n_per_class=20, size=16, n_classes=3, seed=0)
    split = np.where(np.arange(60) % 5 == 0, 'valid', 'train'); train = split == 'train'
    np.savez(tmp_path/'d.npz', images=d['images'], labels=d['labels'], split=split)
    fast = ['--data', 'd.npz', '--methods', 'baseline', '--epochs', '1', '--bs', '16', '--backbone', 'resnet10t', '--progress', 'log', '--threads', '1']
    monkeypatch.chdir(tmp_path)
    softlabel_here(*fast, '--save-model', 'last', '--out', 'model')
    softlabel_here(*fast, '--noise', 'instance', '--noise-file', 'model/runs/baseline_seed0_c0/export.pkl', '--corruption', '0.4', '--out', 'noisy')
    z = np.load('noisy/runs/baseline_seed0_c0.4/noise.npz')
    learn = load_learner('model/runs/baseline_seed0_c0/export.pkl', cpu=True)
    features = standardised(penultimate_features(learn, d['images'][train]))   # over the training items, as the random projection's inputs
    expected = add_label_noise(d['labels'][train], 'instance', .4, 3, seed=0, features=features)
    np.testing.assert_array_equal(z['noisy'], expected.noisy); np.testing.assert_array_equal(z['mask'], expected.mask)
    projected = add_label_noise(d['labels'][train], 'instance', .4, 3, seed=0, features=random_projection_features(d['images'][train], seed=0))
    assert (projected.noisy != expected.noisy).any()   # the file's features decided the noise
    assert 'noise_file' in json.loads(Path('noisy/config.json').read_text())['settings']

def test_a_cl_runs_saved_predictions_name_their_items(tmp_path, monkeypatch):
    "cl trains without the items it flags: preds.npz's item ids still name the evaluated items (their labels are the targets scored)"
    from conftest import softlabel_here
    from fastai_softlabel.experiments import synthetic_dataset
    monkeypatch.chdir(tmp_path)
    softlabel_here('--methods', 'cl', '--corruption', '0.4', '--epochs', '1', '--bs', '16', '--n-per-class', '12', '--size', '16',
                   '--backbone', 'resnet10t', '--progress', 'log', '--threads', '1', '--out', 'cl')
    row = json.loads(Path('cl/runs.json').read_text())[0]
    assert row['cl_flagged_share'] > 0   # items were left out of training
    p = np.load('cl/runs/cl_seed0_c0.4/preds.npz')
    np.testing.assert_array_equal(p['targets'], synthetic_dataset('single', 12)['labels'][p['item']])
