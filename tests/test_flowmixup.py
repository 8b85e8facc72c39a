"FlowMixup: the p = 1 equivalence, flow shapes, target mixing, fastai life cycle, interrupted fits, 1-D models, bad input."
import warnings
import pytest, torch
from fastai.vision.all import *
from copy import deepcopy
from fastai.vision.models.xresnet import xresnet18
from fastai_softlabel.flowmixup import FlowMixup, Mixup, ManifoldMixup, flow_mix
from fastai_softlabel.data import IndexInto, synthetic_class_images
from conftest import item_images, no_hooks, StopAfterBatches, CPUAutocast, make_dls, params_of, assert_same

def small_cnn(n_out, c=8):
    return nn.Sequential(ConvLayer(3, c, stride=2), ConvLayer(c, c, stride=2), ConvLayer(c, c), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(c, n_out))

def multilabel_dls(shuffle=True, bs=8):
    d = synthetic_class_images(n_per_class=8, size=16, n_classes=4)
    names, lab = d['class_names'], d['labels']
    # multi-hot: each image has its class and, for odd classes, also the class before it
    tags = [[names[k]] + ([names[k-1]] if k % 2 else []) for k in lab]
    block = DataBlock(blocks=(ImageBlock, MultiCategoryBlock(vocab=list(names))), get_x=IndexInto(d['images']),
                      get_y=IndexInto(tags), splitter=RandomSplitter(seed=0))
    return block.dataloaders(list(range(len(lab))), bs=bs, num_workers=0, shuffle=shuffle)

class Grads(Callback):
    "Loss and parameter gradients of the first training batch"
    order = 90
    def after_backward(self):
        if not hasattr(self, 'loss_value'):
            self.loss_value = self.learn.loss_grad.detach().clone()
            self.grads = {n: p.grad.detach().clone() for n, p in self.learn.model.named_parameters()}

class Shapes(Callback):
    "Rows of the flow, and the (shape of) predictions and targets the Learner sees, in training batches"
    order = 1   # after FlowMixup (0)
    def __init__(self): self.seen = []
    def after_pred(self):
        if not self.training: return
        fm = first(cb for cb in self.learn.cbs if isinstance(cb, FlowMixup))
        rows = fm.flow.pred.shape[0] if fm is not None and fm.flow is not None else self.pred.shape[0]
        self.seen.append((rows, self.pred.shape[0], tuple(self.yb[0].shape)))

POINTS = {1: ['1'], 2: ['1', '2'], 3: ['1', '2', '5']}

def one_batch(dls, model, cbs, loss_func=None):
    g = Grads()
    Learner(dls, model, loss_func=loss_func, cbs=L(cbs) + [g, StopAfterBatches(1)]).fit(1, 0.)
    return g

@pytest.mark.parametrize('op', [True, False])
@pytest.mark.parametrize('m', [1, 2, 3])
def test_no_mixing_gives_plain_loss_and_gradients(op, m):
    dls = make_dls(shuffle=False)
    set_seed(0); model = small_cnn(dls.c)
    plain = one_batch(dls, deepcopy(model), [])
    flow = one_batch(dls, deepcopy(model), FlowMixup(POINTS[m], alpha=0., op=op))
    test_close(flow.loss_value, plain.loss_value, eps=1e-6)
    assert plain.grads.keys() == flow.grads.keys()
    for n in plain.grads: test_close(flow.grads[n], plain.grads[n], eps=1e-5)
    mixed = one_batch(dls, deepcopy(model), FlowMixup(POINTS[m], alpha=3., op=op))   # the check can fail:
    assert not torch.allclose(mixed.loss_value, plain.loss_value)                          # mixing changes the loss

def test_no_mixing_multilabel_equals_plain_bce():
    dls = multilabel_dls(shuffle=False)
    set_seed(0); model = small_cnn(dls.c)
    plain = one_batch(dls, deepcopy(model), [])
    flow = one_batch(dls, deepcopy(model), FlowMixup(POINTS[2], alpha=0.))
    test_close(flow.loss_value, plain.loss_value, eps=1e-6)
    for n in plain.grads: test_close(flow.grads[n], plain.grads[n], eps=1e-5)

@pytest.mark.parametrize('make,flow', [(lambda: FlowMixup(['1']), 2), (lambda: FlowMixup(['1', '2']), 4),
                                       (lambda: FlowMixup(['1', '2', '5']), 8), (lambda: FlowMixup(['1', '2'], op=False), 2),
                                       (lambda: FlowMixup(['1', '2', '5'], op=False), 4),
                                       (lambda: Mixup(), 1), (lambda: ManifoldMixup(['1', '2', '5']), 1),
                                       (lambda: FlowMixup(['1', '2'], at='output'), 4)])
def test_flow_sizes_and_target_shapes(make, flow):
    dls = make_dls(bs=8)
    s = Shapes()
    learn = Learner(dls, small_cnn(dls.c), cbs=[make(), s])
    learn.fit(1, 1e-3)
    # the flow has 8*F rows; the Learner sees the batch's 8 predictions and 8 targets
    assert s.seen and all(rows == 8*flow and n == 8 and y == (8,) for rows, n, y in s.seen[:-1]), s.seen

class _Capture(Callback):
    "The batch, the features reaching the classifier, and FlowMixup's recorded (p, perm) before it mixes the targets"
    order = -1
    def before_fit(self): self.h = self.learn.model[2].register_forward_hook(lambda m, a, o: setattr(self, 'feats', a[0]))
    def after_fit(self): self.h.remove()
    def before_batch(self): self.x0, self.y0 = self.learn.xb[0].flatten(1).clone(), self.learn.yb[0].clone()
    def after_pred(self): self.ops = list(self.learn.flow_mixup._ops.values())   # by module, in forward order
    def after_loss(self):
        self.y = self.learn.flow_mixup.mix_targets(F.one_hot(self.y0.as_subclass(Tensor).long(), self.dls.c))
        raise CancelFitException

@pytest.mark.parametrize('per_sample', [False, True])
def test_targets_mixed_with_the_features_permutation_and_weights(per_sample):
    dls = make_dls(bs=8)
    model = nn.Sequential(nn.Identity(), nn.Flatten(), nn.Linear(3*16*16, dls.c))
    cap = _Capture()
    Learner(dls, model, cbs=[FlowMixup(['1', '2'], alpha=1., per_sample=per_sample), cap]).fit(1, 1e-3)
    (p1, perm1, keep1), (p2, perm2, keep2) = cap.ops
    assert keep1 and keep2 and len(perm1) == 8 and len(perm2) == 16
    col = lambda p: p.reshape(-1, 1) if p.ndim else p
    x1 = torch.cat([cap.x0, col(p1)*cap.x0 + (1-col(p1))*cap.x0[perm1]])
    x2 = torch.cat([x1, col(p2)*x1 + (1-col(p2))*x1[perm2]])
    test_close(cap.feats, x2, eps=1e-4)
    t0 = F.one_hot(cap.y0.as_subclass(Tensor).long(), dls.c).float()
    t1 = torch.cat([t0, col(p1)*t0 + (1-col(p1))*t0[perm1]])
    t2 = torch.cat([t1, col(p2)*t1 + (1-col(p2))*t1[perm2]])
    test_close(cap.y, t2, eps=1e-6)
    assert (p1.ndim == 1) == per_sample and (p1 >= 0.5).all()

@pytest.mark.parametrize('baseline,same', [(lambda: Mixup(1.), lambda: FlowMixup([''], alpha=1., op=False)),
                                           (lambda: Mixup(), lambda: FlowMixup([''], op=False)),
                                           (lambda: ManifoldMixup(POINTS[3]), lambda: FlowMixup(POINTS[3], op=False, one_random=True))],
                         ids=['mixup_alpha1', 'mixup', 'manifold_mixup'])
def test_baselines_are_flowmixup_with_their_arguments(baseline, same):
    "Same seed: bit-identical loss and gradients to FlowMixup with the baseline's arguments, over several batches"
    dls = make_dls(shuffle=False, bs=8)
    set_seed(0); model = small_cnn(dls.c)
    def run(cb):
        set_seed(1); g = Grads(); r = FlowRows()
        learn = Learner(dls, deepcopy(model), cbs=[cb, g, r, StopAfterBatches(3)])
        learn.fit(1, 1e-2)
        return g, r.rows, params_of(learn.model)
    (a, rows_a, params_a), (b, rows_b, params_b) = run(baseline()), run(same())
    assert torch.equal(a.loss_value, b.loss_value) and rows_a == rows_b == [8, 8, 8]
    for n in a.grads: assert torch.equal(a.grads[n], b.grads[n]), n
    for n in params_a: assert torch.equal(params_a[n], params_b[n]), n      # after 3 steps: the same draws in every batch
    # the check can fail: FlowMixup at the same modules without the baseline's op=False/one_random differs
    other, rows_o, _ = run(FlowMixup(baseline().points, alpha=baseline().alpha))
    assert rows_o != rows_a and not torch.equal(other.loss_value, a.loss_value)

class FlowRows(Callback):
    "The number of rows of each training batch's flow"
    order = 1
    def before_fit(self): self.rows = []
    def after_pred(self):
        if self.training: self.rows.append(len(first(cb for cb in self.learn.cbs if isinstance(cb, FlowMixup)).flow.pred))

def test_baselines_are_subclasses_with_their_own_names(tmp_path):
    dls = make_dls(bs=8)
    for make, cls, attr in [(lambda: Mixup(), Mixup, 'mixup'), (lambda: ManifoldMixup(['1', '2']), ManifoldMixup, 'manifold_mixup'),
                            (lambda: FlowMixup(['1', '2']), FlowMixup, 'flow_mixup')]:
        cb = make()
        assert isinstance(cb, cls) and isinstance(cb, FlowMixup) and cb.name == attr
        learn = Learner(dls, small_cnn(dls.c), path=tmp_path, cbs=cb)
        assert getattr(learn, attr) is cb and all(not hasattr(learn, a) for a in {'mixup', 'manifold_mixup', 'flow_mixup'} - {attr})
    assert not isinstance(FlowMixup(['1']), (Mixup, ManifoldMixup)) and not isinstance(ManifoldMixup(['1']), Mixup)
    for pair in [(Mixup(), ManifoldMixup(['1'])), (Mixup(), FlowMixup(['1'])), (ManifoldMixup(['1']), FlowMixup(['2']))]:
        with pytest.raises(ValueError, match='two FlowMixup/Mixup/ManifoldMixup'): Learner(dls, small_cnn(dls.c), path=tmp_path, cbs=list(pair))
    with pytest.raises(TypeError, match="'one_random'"): ManifoldMixup(['1'], one_random=False)   # fixed by the subclass
    with pytest.raises(TypeError, match="'at'"): Mixup(at='output')

def test_eval_and_inference_are_the_plain_model(tmp_path):
    dls = make_dls()
    learn = Learner(dls, small_cnn(dls.c), metrics=accuracy, path=tmp_path, cbs=FlowMixup(['1', '2']))
    learn.fit_one_cycle(2, 1e-2)
    plain = Learner(dls, learn.model, metrics=accuracy, path=tmp_path)
    for a, b in zip(learn.get_preds(with_loss=True), plain.get_preds(with_loss=True)): assert torch.equal(a, b)
    assert learn.validate() == plain.validate()
    p1, p2 = learn.predict(0), plain.predict(0)
    assert p1[0] == p2[0] and torch.equal(p1[2], p2[2])
    # during a fit, validation batches are not mixed either
    s = Shapes(); s.after_pred = lambda: s.seen.append((learn.training, (learn.flow_mixup.flow.pred if learn.training else learn.pred).shape[0], learn.xb[0].shape[0]))
    learn.fit(1, 1e-3, cbs=s)
    assert {(rows == 2*2*n) for t, rows, n in s.seen if t} == {True} and {(rows == n) for t, rows, n in s.seen if not t} == {True}

def model_snapshot(learn, x):
    learn.model.eval()
    with torch.no_grad(): out = learn.model(x)
    return list(learn.model.state_dict()), out

@pytest.mark.parametrize('how', ['fit', 'lr_find', 'fit_one_cycle'])
def test_model_and_loss_restored(tmp_path, how):
    dls = make_dls()
    learn = Learner(dls, small_cnn(dls.c), path=tmp_path, cbs=FlowMixup(['1', '2'], op=False))
    lf, x = learn.loss_func, dls.one_batch()[0]
    keys, _ = model_snapshot(learn, x)
    if how == 'fit': learn.fit(1, 1e-3)
    elif how == 'lr_find': learn.lr_find(num_it=8, show_plot=False)
    else: learn.fit_one_cycle(1, 1e-3)
    assert learn.loss_func is lf and no_hooks(learn.model)
    keys2, out = model_snapshot(learn, x)
    assert keys == keys2
    learn.remove_cb(learn.flow_mixup)
    test_eq(model_snapshot(learn, x)[1], out)

class Boom(Exception): pass

class RaiseAt(Callback):
    order = 50
    def __init__(self, event, it=2): self.event, self.it = event, it
    def after_pred(self):
        if self.event == 'after_pred' and self.training and self.train_iter == self.it: raise Boom('interrupted')
    def before_step(self):
        if self.event == 'before_step' and self.train_iter == self.it: raise Boom('interrupted')

class _RaiseInForward(nn.Module):
    def __init__(self): super().__init__(); self.armed = False
    def forward(self, x):
        if self.armed and self.training: self.armed = False; raise Boom('interrupted')
        return x

@pytest.mark.parametrize('where', ['after_pred', 'before_step', 'forward'])
@pytest.mark.parametrize('later', ['same_learner', 'new_learner'])
def test_interrupted_fit_then_plain_training(tmp_path, where, later):
    dls = make_dls(bs=8)
    model = nn.Sequential(*small_cnn(dls.c)[:2], _RaiseInForward(), *small_cnn(dls.c)[2:])   # '2' raises when armed
    learn = Learner(dls, model, path=tmp_path)
    lf = learn.loss_func
    cbs = [FlowMixup(['1', '3'])]
    if where == 'forward': model[2].armed = True
    else: cbs.append(RaiseAt(where))
    with pytest.raises(Boom): learn.fit(1, 1e-3, cbs=cbs)
    # an eval forward is unchanged meanwhile
    x = dls.one_batch()[0]
    model.eval()
    with torch.no_grad(): out = model(x)
    assert out.shape[0] == x.shape[0]
    s = Shapes()
    later_learn = learn if later == 'same_learner' else Learner(dls, model, path=tmp_path)
    later_learn.fit(1, 1e-3, cbs=s)
    assert s.seen and all(rows == 8 and y == (8,) for rows, _, y in s.seen[:-1]), s.seen   # nothing mixed
    assert no_hooks(model) and learn.loss_func is lf and later_learn.loss_func is lf

def test_single_and_multilabel_datablocks_end_to_end(tmp_path):
    dls = make_dls(n_per_class=12)
    learn = Learner(dls, small_cnn(dls.c), metrics=accuracy, path=tmp_path, cbs=FlowMixup(['1', '2'], alpha=3.))
    learn.fit_one_cycle(2, 1e-2)
    assert np.isfinite(learn.recorder.values[-1][0])
    mdls = multilabel_dls()
    s = Shapes()
    learn = Learner(mdls, small_cnn(mdls.c), metrics=accuracy_multi, path=tmp_path,
                    cbs=[FlowMixup(['1', '2'], class_weights='inverse_prevalence'), s])
    assert isinstance(learn.loss_func, BCEWithLogitsLossFlat)
    learn.fit_one_cycle(2, 1e-2)
    w = learn.flow_mixup._class_weight
    assert w.shape == (4,) and torch.isclose(w.mean(), tensor(1.)) and w[0] < w[3]  # class 0 is more frequent than 3
    assert s.seen[0] == (32, 8, (8, 4))
    preds, targs = learn.get_preds()
    assert preds.shape == targs.shape == (len(mdls.valid_ds), 4) and ((preds >= 0) & (preds <= 1)).all()

def test_one_dimensional_model_end_to_end(tmp_path):
    set_seed(0)
    n, leads, T, C = 64, 12, 128, 5
    x = torch.randn(n, leads, T)
    y = (torch.rand(n, C) < 0.3).float()
    items = list(zip(x, y))
    dls = DataLoaders(DataLoader(items[:48], bs=16, shuffle=True), DataLoader(items[48:], bs=16))
    model = xresnet18(ndim=1, c_in=leads, n_out=C)
    s = Shapes()
    learn = Learner(dls, model, loss_func=BCEWithLogitsLossFlat(), path=tmp_path, cbs=[FlowMixup(['5', '7']), s])
    learn.fit_one_cycle(1, 1e-3)
    assert s.seen[0] == (64, 16, (16, C))
    assert learn.get_preds()[0].shape == (16, C) and no_hooks(model)

class _Unused(nn.Module):
    def __init__(self, n_out):
        super().__init__(); self.body, self.spare = small_cnn(n_out), nn.Linear(3, 3)
    def forward(self, x): return self.body(x)

@pytest.mark.parametrize('case', ['unknown', 'never_runs', 'regression_targets', 'weights_single_label'])
def test_bad_input_is_refused_and_learner_untouched(tmp_path, case):
    dls = make_dls(bs=8)
    model = small_cnn(dls.c)
    if case == 'unknown': cb, match = FlowMixup(['1', '22']), r"no module named '22'.*Close matches:.*'2'"
    elif case == 'never_runs': model, cb, match = _Unused(dls.c), FlowMixup(['body.1', 'spare']), "'spare' never run"
    elif case == 'weights_single_label': cb, match = FlowMixup(['1'], class_weights='inverse_prevalence'), 'multi-label'
    else:
        d = synthetic_class_images(n_per_class=8, size=16, n_classes=2)
        block = DataBlock(blocks=(ImageBlock, RegressionBlock), get_x=IndexInto(d['images']),
                          get_y=IndexInto(d['labels'].astype(np.float32)), splitter=RandomSplitter(seed=0))
        dls = block.dataloaders(list(range(16)), bs=8, num_workers=0)
        model, cb, match = small_cnn(1), FlowMixup(['1']), 'classification targets'
    if case != 'never_runs':   # found when the Learner is created...
        with pytest.raises(ValueError, match=match): Learner(dls, model, path=tmp_path, cbs=FlowMixup(cb.points, class_weights=cb.class_weights))
    learn = Learner(dls, model, path=tmp_path)   # ...and when it is added to a fit
    state, lf, cbs = params_of(learn.model), learn.loss_func, list(learn.cbs)
    with pytest.raises(ValueError, match=match): learn.fit(1, 1e-3, cbs=cb)
    assert_same(state, params_of(learn.model), 'model changed')
    assert learn.loss_func is lf and list(learn.cbs) == cbs and no_hooks(learn.model)

def test_more_classes_than_the_model_outputs_is_refused_before_training(tmp_path):
    "DataLoaders swapped for a larger label set: refused with what to do, not an IndexError in the loss"
    dls4, dls6 = make_dls(bs=8), make_dls(bs=8, n_classes=6)
    learn = Learner(dls4, small_cnn(dls4.c), path=tmp_path, cbs=FlowMixup(['1']))
    learn.dls = dls6
    state = params_of(learn.model)
    with pytest.raises(ValueError, match=r'The model outputs 4 scores per item but the data has 6 classes \(dls.c\)'): learn.fit(1, 1e-3)
    assert_same(state, params_of(learn.model), 'model changed')
    assert no_hooks(learn.model)

@pytest.mark.parametrize('with_ccl', [False, True])
def test_an_epoch_without_a_training_batch_is_refused(tmp_path, with_ccl):
    "A training set smaller than the batch size: refused before the epoch; with CCL too, whichever refuses, no CCL column stays"
    from fastai_softlabel.ccl import CCL
    dls = make_dls(n_per_class=2, bs=64)
    learn = Learner(dls, small_cnn(dls.c), path=tmp_path, metrics=accuracy)
    state = params_of(learn.model)
    cbs = [FlowMixup(['1'])] + ([CCL(widths=(8,))] if with_ccl else [])
    with pytest.raises(ValueError, match='FlowMixup: this training epoch has no batch to train on: the training DataLoader has 7 items'):
        learn.fit(1, 1e-3, cbs=cbs)
    assert_same(state, params_of(learn.model), 'model changed')
    assert no_hooks(learn.model) and not {'ce', 'kl', 'p_bar'} & set(learn.recorder.metric_names)

def test_invalid_arguments():
    with pytest.raises(ValueError, match='alpha'): FlowMixup(['1'], alpha=-1)
    with pytest.raises(ValueError, match='alpha must be a finite number'): FlowMixup(['1'], alpha=float('nan'))
    with pytest.raises(ValueError, match='is 0 in float32'): FlowMixup(['1'], alpha=1e-50)
    with pytest.raises(ValueError, match="'input' or 'output'"): FlowMixup(['1'], at='middle')
    with pytest.raises(ValueError, match='at least one'): FlowMixup([])

def test_export_has_no_mixing(tmp_path):
    dls = make_dls()
    learn = Learner(dls, small_cnn(dls.c), path=tmp_path, cbs=FlowMixup(['1', '2']))
    learn.fit(1, 1e-3)
    preds = learn.get_preds()[0]
    learn.export('export.pkl')
    loaded = load_learner(tmp_path/'export.pkl')
    assert no_hooks(loaded.model) and list(loaded.model.state_dict()) == list(learn.model.state_dict())
    test_eq(loaded.get_preds(dl=loaded.dls.test_dl(item_images(dls, dls.valid_ds.items)))[0], preds)
    loaded.model.train()
    x = dls.one_batch()[0][:4]
    assert loaded.model(x).shape[0] == 4      # even in training mode, outside a FlowMixup fit nothing mixes

class HooksSeen(Callback):
    "Whether the model carries hooks in each event of a fit"
    order = 99
    def before_fit(self): self.seen = {}
    def _note(self, event): self.seen.setdefault((event, self.training), set()).add(not no_hooks(self.learn.model))
    def before_train(self): self._note('before_train')
    def after_pred(self): self._note('after_pred')
    def after_batch(self): self._note('after_batch')
    def before_validate(self): self._note('before_validate')
    def after_fit(self): self._note('after_fit')

def test_hooks_live_for_the_training_forward_pass_only(tmp_path):
    dls = make_dls(bs=4)
    learn = Learner(dls, small_cnn(dls.c), path=tmp_path, cbs=[FlowMixup(['1', '2']), spy := HooksSeen()])
    learn.fit(2, 1e-3)
    # registered in before_batch of each training batch, gone once its forward pass has run
    assert spy.seen == {('before_train', True): {False}, ('after_pred', True): {False}, ('after_pred', False): {False},
                        ('after_batch', True): {False}, ('after_batch', False): {False},
                        ('before_validate', False): {False}, ('after_fit', False): {False}}, spy.seen

def test_bf16_autocast_and_gradient_clip(tmp_path):
    dls = make_dls()
    dtypes = []
    model = small_cnn(dls.c)
    model[2].register_forward_hook(lambda m, a, o: dtypes.append(a[0].dtype) if m.training else None)
    learn = Learner(dls, model, path=tmp_path, cbs=[FlowMixup(['1', '2']), CPUAutocast(), GradientClip(0.5)])
    learn.fit(1, 1e-3)
    assert torch.bfloat16 in dtypes                     # the mixed features kept the autocast dtype
    assert np.isfinite(learn.recorder.values[-1][0])

def test_to_fp16_runs(tmp_path):
    dls = make_dls()
    learn = Learner(dls, small_cnn(dls.c), path=tmp_path, cbs=FlowMixup(['1', '2'])).to_fp16()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # without CUDA, fastai's autocast is disabled (and says so)
        learn.fit_one_cycle(1, 1e-3)
    assert np.isfinite(learn.recorder.values[-1][0]) and no_hooks(learn.model)

@pytest.mark.cuda
@pytest.mark.parametrize('amp', ['fp16', 'bf16'])
def test_mixed_precision_on_gpu(amp, tmp_path):
    dls = make_dls(size=32, device='cuda')
    learn = Learner(dls, small_cnn(dls.c), path=tmp_path, cbs=[FlowMixup(['1', '2']), GradientClip(1.)])
    learn = learn.to_fp16() if amp == 'fp16' else learn.to_bf16()
    learn.fit_one_cycle(1, 1e-3)
    assert np.isfinite(learn.recorder.values[-1][0]) and no_hooks(learn.model)

def test_modules_passed_as_modules_and_show_results(tmp_path):
    dls = make_dls()
    model = small_cnn(dls.c)
    s = Shapes()
    learn = Learner(dls, model, path=tmp_path, cbs=[FlowMixup([model[1], model[2]]), s])
    learn.fit(1, 1e-3)
    assert s.seen[0][:2] == (4*16, 16)
    learn.show_results(max_n=4)
    plt.close('all')

def test_survives_torch_compile(tmp_path):
    "The hooks are traced by Dynamo: a compiled model mixes while training and not in validation"
    dls = make_dls(bs=8)
    seen = []
    class Rows(Callback):
        order = 1
        def after_pred(self): seen.append((self.training, (self.flow_mixup.flow.pred if self.training else self.pred).shape[0], self.xb[0].shape[0]))
    compiled = torch.compile(small_cnn(dls.c))
    learn = Learner(dls, compiled, path=tmp_path, cbs=[FlowMixup(['_orig_mod.1', '_orig_mod.2']), Rows()])
    learn.fit(1, 1e-3)
    assert {rows == 4*n for t, rows, n in seen if t} == {True} and {rows == n for t, rows, n in seen if not t} == {True}
    assert no_hooks(compiled)


class _EvalBatch(Callback):
    "Puts the model in eval mode for the training batch (after FlowMixup's before_batch) and keeps the flow and a plain forward"
    order = 1
    def before_batch(self): self.learn.model.eval()
    def after_pred(self):
        if not self.training: return
        fm = first(cb for cb in self.learn.cbs if isinstance(cb, FlowMixup))
        with torch.no_grad(): self.ref = self.learn.model(*self.learn.xb)
        self.flow, self.pred = fm.flow, self.learn.pred.detach()
        raise CancelFitException

@pytest.mark.parametrize('make', [lambda: Mixup(), lambda: FlowMixup(['', '1']), lambda: FlowMixup(['1'])], ids=['mixup', 'input+1', '1'])
def test_a_training_batch_in_eval_mode_is_not_mixed(make):
    dls = make_dls(bs=8)
    spy = _EvalBatch()
    learn = Learner(dls, small_cnn(dls.c), cbs=[make(), spy])
    learn.fit(1, 1e-3)
    test_eq(spy.flow.idx.shape, (8, 1))          # one component per row: nothing mixed
    test_close(spy.pred, spy.ref, eps=1e-6)
    assert no_hooks(learn.model)
