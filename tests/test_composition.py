"CCL and FlowMixup next to the fastai machinery users switch on: gradient accumulation, skipped steps, mixing callbacks, the user's loss, interrupted fits, small batches, bad modules."
import io, warnings
from copy import deepcopy
import pytest, torch
from fastai.vision.all import *
from fastai.callback.training import GradientAccumulation
from fastai.callback.mixup import MixUp, CutMix
from fastai_softlabel.ccl import CCL
from fastai_softlabel.flowmixup import FlowMixup, Mixup, ManifoldMixup, mix_along_flow
from fastai_softlabel.losses import soft_label_kl
from conftest import no_hooks, StopAfterBatches, make_dls, params_of, assert_same, tiny_cnn

def plain_net(n_out=4, c=8):
    "No BatchNorm and no dropout: a training-mode forward is deterministic and batch-size independent"
    return nn.Sequential(nn.Conv2d(3, c, 3, stride=2), nn.ReLU(), nn.Conv2d(c, c, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_out))

def item_dls(n=16, bs=8, n_classes=4, seed=0, valid=8):
    "Fixed-order loaders of `n` training items (no shuffling, last batch kept)"
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n + valid, 3, 16, 16, generator=g), torch.arange(n + valid) % n_classes
    items = list(zip(x, y))
    return DataLoaders(DataLoader(items[:n], bs=bs, shuffle=False, drop_last=False), DataLoader(items[n:], bs=bs))

def ccl(**kw): return CCL(**{'n_classes': 4, 'widths': (16,), 'lr_ccl': 0.1, **kw})   # one Linear: no BatchNorm in the head

class Steps(Callback):
    "Counts optimizer steps and keeps the first step's backbone gradients"
    order = 99
    def before_fit(self): self.n, self.grads = 0, None
    def after_step(self):
        self.n += 1
        if self.grads is None: self.grads = [p.grad.clone() for p in self.learn.model.parameters()]

# ---------------------------------------------------------------- gradient accumulation

def test_ccl_gradient_accumulation_equals_one_large_batch(tmp_path):
    runs = {}
    for name, bs, cbs in [('big', 16, []), ('acc', 8, [GradientAccumulation(16)])]:
        set_seed(0)
        learn = Learner(item_dls(bs=bs), plain_net(), loss_func=CrossEntropyLossFlat(), path=tmp_path,
                        cbs=[ccl(), s := Steps(), *cbs])
        learn.fit(1, 1e-2)
        runs[name] = learn, s
    (big, sb), (acc, sa) = runs['big'], runs['acc']
    assert sb.n == sa.n == 1                                   # one step of the backbone, and so one of the head
    for a, b in zip(sb.grads, sa.grads): test_close(a, b, eps=1e-6)   # KL scaled like the loss
    for k, v in params_of(big.model).items(): test_close(v, params_of(acc.model)[k], eps=1e-6)
    for k, v in params_of(big.ccl.ccl_head).items(): test_close(v, params_of(acc.ccl.ccl_head)[k], eps=1e-6)
    for col in ('ce', 'kl', 'head_ce', 'l_cc'):                  # logged as per-item means, not divided by n_acc
        test_close(big.ccl.history[0][col], acc.ccl.history[0][col], eps=1e-5)

def test_ccl_gradient_accumulation_carries_across_epochs_like_the_backbone(tmp_path):
    "12 items in micro-batches of 4 with n_acc=8, 2 epochs: steps on items 0-7, 8-11+0-3, 4-11, as one epoch of bs 8 over that order"
    acc_dls = item_dls(n=12, bs=4)
    order = list(acc_dls.train.dataset)*2
    runs = {}
    for name, dls, epochs, cbs in [('big', DataLoaders(DataLoader(order, bs=8, shuffle=False), acc_dls.valid), 1, []),
                                   ('acc', acc_dls, 2, [GradientAccumulation(8)])]:
        set_seed(0)
        learn = Learner(dls, plain_net(), loss_func=CrossEntropyLossFlat(), path=tmp_path, cbs=[ccl(), s := Steps(), *cbs])
        learn.fit(epochs, 1e-2)
        runs[name] = learn, s
    (big, sb), (acc, sa) = runs['big'], runs['acc']
    assert sb.n == sa.n == 3
    # equal up to float32 rounding: summing two micro-batches' gradients rounds differently from one batch's, and Adam's
    # division by sqrt(v) magnifies it to ~1e-6 (torch 2.14); stepping on the wrong items moves parameters by ~1e-2
    for k, v in params_of(big.model).items(): test_close(v, params_of(acc.model)[k], eps=1e-5)
    for k, v in params_of(big.ccl.ccl_head).items(): test_close(v, params_of(acc.ccl.ccl_head)[k], eps=1e-5)

def test_flowmixup_gradient_accumulation_counts_original_items(tmp_path):
    learn = Learner(item_dls(n=96, bs=32), plain_net(), loss_func=CrossEntropyLossFlat(), path=tmp_path,
                    cbs=[FlowMixup(['2', '4']), GradientAccumulation(64), s := Steps()])
    learn.fit(1, 1e-3)
    assert s.n == 1   # 96 items with n_acc=64: one step (the flow's 4 x 96 rows would give 6)

# ---------------------------------------------------------------- skipped steps

class CancelStepAt(Callback):
    "Cancels the optimizer step of chosen training batches, as GradScaler does for a non-finite step"
    order = 12
    def __init__(self, its): self.its = its
    def before_step(self):
        if self.train_iter in self.its: raise CancelStepException

class HeadAt(Callback):
    "Head parameters after every batch"
    order = 99
    def before_fit(self): self.seen = []
    def after_batch(self):
        if self.training: self.seen.append({n: p.detach().clone() for n, p in self.learn.ccl.ccl_head.named_parameters()})

def test_head_does_not_step_when_the_backbone_step_is_cancelled(tmp_path):
    learn = Learner(item_dls(n=32), plain_net(), loss_func=CrossEntropyLossFlat(), path=tmp_path,
                    cbs=[ccl(), CancelStepAt({1}), h := HeadAt()])
    with pytest.warns(UserWarning, match=r"1 batch\(es\) whose step was cancelled \(3 head steps taken\)"): learn.fit(1, 1e-2)
    changed = [any(not torch.equal(a[k], b[k]) for k in a) for a, b in zip(h.seen, h.seen[1:])]
    assert changed == [False, True, True]   # batch 1's step was cancelled: the head did not move either

class NaNAt(nn.Module):
    "Turns its input into NaN in chosen training batches (an fp16 overflow)"
    def __init__(self): super().__init__(); self.calls, self.at = 0, {1}
    def forward(self, x):
        if self.training: self.calls += 1
        return x*float('nan') if self.training and self.calls - 1 in self.at else x

class SkipNonFinite(Callback):
    "What GradScaler does: no step when the loss is not finite"
    order = 12
    def before_step(self):
        if not torch.isfinite(self.learn.loss): raise CancelStepException

def test_non_finite_features_never_reach_the_head(tmp_path):
    net = plain_net()
    model = nn.Sequential(*net[:5], NaNAt(), *net[5:])
    learn = Learner(item_dls(n=32), model, loss_func=CrossEntropyLossFlat(), path=tmp_path,
                    cbs=[ccl(), SkipNonFinite(), h := HeadAt()])
    with pytest.warns(UserWarning, match='with non-finite features'): learn.fit(2, 1e-2)
    assert all(torch.isfinite(v).all() for s in h.seen for v in s.values())
    assert len(learn.ccl.history) == 2 and all(np.isfinite(v) for v in learn.ccl.history[-1].values())
    assert any(not torch.equal(h.seen[-2][k], h.seen[-1][k]) for k in h.seen[-1])   # still learning afterwards

class HugeAt(NaNAt):
    "Makes features huge in chosen training batches, yet finite: one item's 3e38 (the sum overflows float32), or all of them 1e20"
    def __init__(self, how): super().__init__(); self.how = how
    def forward(self, x):
        if self.training: self.calls += 1
        if self.training and self.calls - 1 in self.at:
            x = x.clone()
            if self.how == 'one': x[0] = 3e38
            else: x = x*0 + 1e20
        return x

@pytest.mark.parametrize('how', ['one', 'all'])
def test_features_whose_sum_overflows_leave_the_head_as_it_was(how, tmp_path):
    "Such a batch counts as non-finite: the head's parameters and BatchNorm statistics stay as they were, and stay finite (1e20 would overflow them)"
    class StateAt(Callback):
        order = 99
        def before_fit(self): self.seen = []
        def after_batch(self):
            if self.training: self.seen.append({k: v.clone() for k, v in self.learn.ccl.ccl_head.state_dict().items()})
    net = plain_net()
    learn = Learner(item_dls(n=32), nn.Sequential(*net[:5], HugeAt(how), *net[5:]), loss_func=CrossEntropyLossFlat(), path=tmp_path,
                    cbs=[ccl(), SkipNonFinite(), s := StateAt()])
    with pytest.warns(UserWarning, match='1 batch\\(es\\) with non-finite features'): learn.fit(1, 1e-2)
    assert all(torch.equal(s.seen[0][k], s.seen[1][k]) for k in s.seen[0])     # batch 1: nothing of it in the head
    assert any(not torch.equal(s.seen[1][k], s.seen[2][k]) for k in s.seen[1])  # batch 2 trains it again
    assert all(torch.isfinite(v.float()).all() for st in s.seen for v in st.values())

def test_batches_of_one_item(tmp_path):
    learn = Learner(item_dls(n=17, bs=8), plain_net(), loss_func=CrossEntropyLossFlat(), path=tmp_path,
                    cbs=CCL(n_classes=4, widths=(16, 8), lr_ccl=0.1))   # BatchNorm in the head
    with pytest.warns(UserWarning, match=r'1 batch\(es\) of one item \(2 head steps taken\)'): learn.fit(1, 1e-2)
    assert len(learn.ccl.history) == 1 and np.isfinite(learn.ccl.history[0]['head_ce'])
    learn = Learner(item_dls(n=4, bs=1), plain_net(), loss_func=CrossEntropyLossFlat(), path=tmp_path,
                    cbs=CCL(n_classes=4, widths=(16, 8)))
    with pytest.warns(UserWarning, match='4 batch'): learn.fit(1, 1e-2)   # bs=1 trains the backbone, never the head
    assert np.isfinite(learn.ccl.history[0]['ce'])

# ---------------------------------------------------------------- mixing callbacks

@pytest.mark.parametrize('ours', ['ccl', 'flowmixup'])
@pytest.mark.parametrize('theirs', [MixUp, CutMix])
def test_fastai_mixing_callbacks_are_refused(ours, theirs, tmp_path):
    dls = item_dls()
    cb = lambda: ccl() if ours == 'ccl' else FlowMixup(['2'])
    with pytest.raises(ValueError, match=f"fastai's {theirs.__name__}.*Mixup"):
        Learner(dls, plain_net(), loss_func=CrossEntropyLossFlat(), cbs=[cb(), theirs()])
    learn = Learner(dls, plain_net(), loss_func=CrossEntropyLossFlat(), path=tmp_path, cbs=cb())
    state = params_of(learn.model)
    with pytest.raises(ValueError, match=f"fastai's {theirs.__name__}"): learn.fit(1, 1e-2, cbs=theirs())
    assert_same(state, params_of(learn.model)) ; assert no_hooks(learn.model)

class FirstBatch(Callback):
    "Loss, gradients, flow and soft labels of the first training batch, and the shapes reaching the CCL head"
    order = 90
    def before_fit(self):
        self.head_in, self.done, c = [], False, getattr(self.learn, 'ccl', None)
        self.h = c.ccl_head.embed.register_forward_pre_hook(lambda m, a: self.head_in.append(a[0].shape)) \
            if c is not None and c.ccl_head is not None else None
    def after_loss(self):
        if not self.training or self.done: return
        fm, c = first(cb for cb in self.learn.cbs if isinstance(cb, FlowMixup)), getattr(self.learn, 'ccl', None)   # also learn.mixup, learn.manifold_mixup
        self.lossv, self.yv = self.learn.loss.detach().clone(), self.learn.yb[0].clone()
        self.flowv = fm.flow if fm is not None else None
        self.Pv = c.ccl_head.soft_labels().clone() if c is not None else None
    def after_backward(self):
        if self.done: return
        self.gradsv = {n: p.grad.clone() for n, p in self.learn.model.named_parameters()}
        self.done = True
    def after_fit(self):
        if self.h is not None: self.h.remove()

def first_batch(model, cbs, tmp_path, head_state=None):
    learn = Learner(item_dls(), model, loss_func=CrossEntropyLossFlat(), path=tmp_path, cbs=[*cbs, StopAfterBatches(1)])
    if head_state is not None: learn.ccl.load_state_dict(head_state)
    learn.fit(1, 1e-3, cbs=(spy := FirstBatch()))
    return learn, spy

def test_ccl_with_flowmixup_alpha0_equals_ccl_alone(tmp_path):
    set_seed(1); model = plain_net()
    head = first_batch(deepcopy(model), [ccl()], tmp_path)[0].ccl.state_dict()   # the same head for both runs
    _, alone = first_batch(deepcopy(model), [ccl()], tmp_path, head)
    _, both = first_batch(deepcopy(model), [ccl(), FlowMixup(['2', '4'], alpha=0.)], tmp_path, head)
    test_close(both.lossv, alone.lossv, eps=1e-6)
    for n in alone.gradsv: test_close(both.gradsv[n], alone.gradsv[n], eps=1e-6)

@pytest.mark.parametrize('make,head_rows,mixed', [(lambda: FlowMixup(['2', '4']), 8, False), (lambda: Mixup(), 8, True),
                                                  (lambda: FlowMixup(['2', '4'], op=False), 16, True),
                                                  (lambda: ManifoldMixup(['2', '4']), 8, True),
                                                  # mixing after the features ('5', the Flatten) leaves them un-mixed
                                                  (lambda: ManifoldMixup(['6']), 8, False),
                                                  (lambda: FlowMixup(['2', '6'], op=False), 8, False)])
def test_ccl_soft_labels_are_mixed_along_the_flow(make, head_rows, mixed, tmp_path):
    learn, spy = first_batch(plain_net(), [ccl(), make()], tmp_path)
    head_targets, head_loss = [], learn.ccl.ccl_head.loss
    learn.ccl.ccl_head.loss = lambda f, t, *a: (head_targets.append(t.clone()), head_loss(f, t, *a))[1]
    learn.fit(1, 1e-3, cbs=[spy := FirstBatch(), StopAfterBatches(1)])   # the head exists now: watch its input
    f = spy.flowv
    soft = mix_along_flow(spy.Pv[spy.yv.long()], f.idx, f.weight)       # P[y] mixed exactly as the hard targets
    ce = CrossEntropyLossFlat()
    from fastai_softlabel.flowmixup import flow_loss
    expected = flow_loss(ce, f.pred, spy.yv, f.idx, f.weight) + soft_label_kl(f.pred, soft)
    test_close(spy.lossv, expected, eps=1e-5)
    # the head learns from the original items when the flow keeps them (op=True), else from every mixed row
    assert spy.head_in and spy.head_in[0][0] == head_rows
    # ...with the hard targets of the original items, or the one-hot targets mixed as the features were
    t = head_targets[0]
    if mixed: test_close(t, mix_along_flow(F.one_hot(spy.yv.long(), 4), f.idx, f.weight), eps=1e-6)
    else: test_eq(t, spy.yv.long())

# ---------------------------------------------------------------- the user's loss

class FocalCE(nn.Module):
    "A focal loss of one's own, with a reduction attribute"
    def __init__(self, gamma=2., reduction='mean'): super().__init__(); self.gamma, self.reduction = gamma, reduction
    def forward(self, z, y):
        ce = F.cross_entropy(z, y, reduction='none'); l = (1 - torch.exp(-ce))**self.gamma*ce
        return l.mean() if self.reduction == 'mean' else l.sum() if self.reduction == 'sum' else l

@pytest.mark.parametrize('loss', ['label_smoothing', 'focal', 'own_focal', 'weighted_ce', 'sum'])
def test_flowmixup_no_mixing_equals_plain_training_with_the_users_loss(loss, tmp_path):
    make = dict(label_smoothing=lambda: LabelSmoothingCrossEntropyFlat(eps=0.2), focal=lambda: FocalLossFlat(gamma=2.),
                own_focal=lambda: FocalCE(), weighted_ce=lambda: CrossEntropyLossFlat(weight=torch.tensor([1., 3., .5, 2.])),
                sum=lambda: CrossEntropyLossFlat(reduction='sum'))[loss]
    set_seed(0); model = plain_net()
    res = {}
    for name, cbs in [('plain', []), ('flow', [FlowMixup(['2', '4'], alpha=0.)]), ('mixed', [FlowMixup(['2', '4'], alpha=3.)])]:
        set_seed(0)
        learn = Learner(item_dls(), deepcopy(model), loss_func=make(), path=tmp_path, cbs=[*cbs, StopAfterBatches(1)])
        learn.fit(1, 1e-3, cbs=(spy := FirstBatch()))
        res[name] = spy
    test_close(res['flow'].lossv, res['plain'].lossv, eps=1e-5)
    for n in res['plain'].gradsv: test_close(res['flow'].gradsv[n], res['plain'].gradsv[n], eps=1e-5)
    assert not torch.allclose(res['mixed'].lossv, res['plain'].lossv)

@pytest.mark.parametrize('lf', [BCEWithLogitsLossFlat(pos_weight=torch.tensor([1., 2., 3., 4.])),
                                BCEWithLogitsLossFlat(weight=torch.tensor([0.5, 1., 1.5, 1.]), flatten=False)],   # softlabel's weighted BCE
                         ids=['pos_weight', 'class_weight'])
def test_flowmixup_with_weighted_bce_on_multilabel_targets(tmp_path, lf):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 3, 16, 16, generator=g), (torch.rand(24, 4, generator=g) < 0.4).float()
    items = list(zip(x, y))
    dls = DataLoaders(DataLoader(items[:16], bs=8), DataLoader(items[16:], bs=8))
    set_seed(0); model = plain_net()
    res = {}
    for name, cbs in [('plain', []), ('flow', [FlowMixup(['2', '4'], alpha=0.)])]:
        learn = Learner(dls, deepcopy(model), loss_func=lf, path=tmp_path, cbs=[*cbs, StopAfterBatches(1)])
        learn.fit(1, 1e-3, cbs=(spy := FirstBatch()))
        res[name] = spy
    test_close(res['flow'].lossv, res['plain'].lossv, eps=1e-6)
    for n in res['plain'].gradsv: test_close(res['flow'].gradsv[n], res['plain'].gradsv[n], eps=1e-5)

def test_loss_without_reduction_is_refused():
    with pytest.raises(ValueError, match='no `reduction`'):
        Learner(item_dls(), plain_net(), loss_func=lambda z, y: F.cross_entropy(z, y), cbs=FlowMixup(['2']))

# ---------------------------------------------------------------- interrupted fits

class Boom(Exception): pass

EVENTS = ['before_fit', 'before_epoch', 'before_train', 'before_batch', 'after_pred', 'after_loss', 'before_backward',
          'after_backward', 'before_step', 'after_step', 'after_batch', 'after_train', 'before_validate',
          'after_validate', 'after_epoch', 'after_fit']

def raise_at(event, order, exc=Boom):
    "A callback raising `exc` at `event` (in the second training batch for batch events)"
    def f(self):
        if event in ('before_batch', 'after_pred', 'after_loss', 'before_backward', 'after_backward', 'before_step',
                     'after_step', 'after_batch') and (not self.training or self.train_iter != 1): return
        raise exc('interrupted')
    return type('RaiseAt', (Callback,), {'order': order, event: f})()

def pickled_size(o):
    buf = io.BytesIO(); torch.save(o, buf); return buf.tell()

def strip(model):
    "A copy of `model` without any hook"
    m = deepcopy(model)
    for mod in m.modules():
        for d in (mod._forward_pre_hooks, mod._forward_hooks, mod._forward_hooks_always_called): d.clear()
    return m

SETUPS = {'ccl': lambda: [ccl()], 'flowmixup': lambda: [FlowMixup(['2', '4'])], 'both': lambda: [ccl(), FlowMixup(['2', '4'])]}

@pytest.mark.parametrize('setup', list(SETUPS))
@pytest.mark.parametrize('event,order,exc', [(e, 55, Boom) for e in EVENTS] + [('before_batch', 5, Boom), ('before_batch', 60, KeyboardInterrupt),
                                                                            ('after_pred', -5, KeyboardInterrupt)])
def test_interrupted_fit_leaves_a_plain_model(setup, event, order, exc, tmp_path):
    model, dls = plain_net(), make_dls(bs=8)   # a DataBlock, so that export works
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), path=tmp_path, cbs=SETUPS[setup]())
    lf = learn.loss_func
    with pytest.raises(exc): learn.fit(1, 1e-3, cbs=raise_at(event, order, exc))
    ref = strip(model)
    # the model is a plain model at once: a training-mode forward equals the same model without any hook
    x = torch.randn(5, 3, 16, 16)
    model.train(); ref.train()
    test_eq(model(x), ref(x))
    assert learn.loss_func is lf
    assert abs(pickled_size(model) - pickled_size(ref)) < 500     # torch.save works and is as large as without the callbacks
    other = Learner(dls, model, loss_func=CrossEntropyLossFlat(), path=tmp_path)
    other.export(tmp_path/'o.pkl'); Learner(dls, ref, loss_func=CrossEntropyLossFlat(), path=tmp_path).export(tmp_path/'r.pkl')
    assert abs((tmp_path/'o.pkl').stat().st_size - (tmp_path/'r.pkl').stat().st_size) < 500
    preds, targs, losses = learn.get_preds(with_loss=True)       # works first time
    test_close(losses.mean(), F.cross_entropy(preds.log(), targs), eps=1e-4)
    assert no_hooks(model)                                        # after the next get_preds: no hook anywhere
    learn.fit(1, 1e-3)                                            # and the same Learner trains again
    assert no_hooks(model) and learn.loss_func is lf

# ---------------------------------------------------------------- modules that cannot be mixed or read

class Pair(Module):
    def forward(self, x): return x, x

class TupleNet(Module):
    "A block returning a tuple, and a module used by two branches"
    def __init__(self, n_out=4):
        self.stem, self.pair, self.shared = nn.Conv2d(3, 8, 3), Pair(), nn.Conv2d(8, 8, 1)
        self.pool, self.flat, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, n_out)
        self.shared_fc = nn.Identity()
    def forward(self, x):
        a, b = self.pair(self.stem(x))
        f = self.flat(self.pool(self.shared(a) + self.shared(b)))
        return self.fc(self.shared_fc(f) + self.shared_fc(f))

@pytest.mark.parametrize('cb,match', [(lambda: FlowMixup(['pair'], at='output'), "output of 'pair' is a tuple"),
                                      (lambda: FlowMixup(['shared']), "'shared' runs 2 times"),
                                      (lambda: ccl(features='shared_fc'), "`shared_fc` runs 2 times")])
def test_modules_that_cannot_be_mixed_or_read_are_refused(cb, match, tmp_path):
    learn = Learner(item_dls(), TupleNet(), loss_func=CrossEntropyLossFlat(), path=tmp_path)
    state = params_of(learn.model)
    with pytest.raises(ValueError, match=match): learn.fit(1, 1e-3, cbs=cb())
    assert_same(state, params_of(learn.model)); assert no_hooks(learn.model)

# ---------------------------------------------------------------- fastai's other training callbacks

@pytest.mark.parametrize('setup', ['ccl', 'flowmixup'])
def test_early_stopping_and_plateau(setup, tmp_path):
    learn = Learner(make_dls(bs=8), plain_net(), loss_func=CrossEntropyLossFlat(), path=tmp_path, cbs=SETUPS[setup]())
    lf = learn.loss_func
    learn.fit(6, 1e-3, cbs=[EarlyStoppingCallback(patience=1, min_delta=10.), ReduceLROnPlateau(patience=0, min_delta=10.)])
    assert len(learn.recorder.values) == 2                     # stopped after 2 epochs on the Recorder's valid_loss
    if setup == 'ccl': assert len(learn.ccl.history) == 2
    assert learn.loss_func is lf and no_hooks(learn.model)

@pytest.mark.parametrize('setup', ['ccl', 'flowmixup'])
def test_fine_tune(setup, tmp_path):
    learn = Learner(make_dls(bs=8), plain_net(), loss_func=CrossEntropyLossFlat(), path=tmp_path, cbs=SETUPS[setup]())
    learn.fine_tune(1, 1e-3, freeze_epochs=1)                  # two fits
    if setup == 'ccl':
        assert len(learn.ccl.history) == 2 and all(np.isfinite(h['head_ce']) for h in learn.ccl.history)
    assert no_hooks(learn.model) and np.isfinite(learn.recorder.values[-1][0])

def test_ccl_with_a_compiled_model(tmp_path):
    "torch.compile: CCL reads the features inside the compiled model (`_orig_mod.` names) and trains its head"
    compiled = torch.compile(tiny_cnn(4))
    learn = Learner(make_dls(bs=8), compiled, path=tmp_path, cbs=CCL(widths=(32, 16)))
    learn.fit(1, 1e-3)
    h = learn.ccl.history
    assert learn.ccl.feature_module == '_orig_mod.3' and len(h) == 1 and all(np.isfinite(v) for v in h[0].values())
    assert learn.ccl.ccl_opt.state and no_hooks(compiled)   # the head stepped; no hook left on the model
