"CCL in fastai's life cycle: the alternating step, lr_find, freezing, inference, export, save/resume, precision, bad input."
import warnings
import pytest, timm, torch
from fastai.vision.all import *
from fastai.callback.training import GradientClip
from fastai_softlabel.ccl import CCL, CCLHead
from fastai_softlabel.data import IndexInto, synthetic_class_images
from fastai_softlabel.losses import class_orthogonality_loss
from conftest import item_images, no_hooks, StopAfterBatches, CPUAutocast, tiny_cnn, make_dls, params_of, assert_same, snapshot, assert_nested_equal

def ccl_learner(dls, path, model=None, cbs=(), seed=0, **ccl_kwargs):
    set_seed(seed)
    kw = dict(widths=(32, 16), lr_ccl=0.05); kw.update(ccl_kwargs)
    return Learner(dls, model if model is not None else tiny_cnn(dls.c), path=path, metrics=accuracy, cbs=[CCL(**kw), *L(cbs)])

class StopAfterEpoch(Callback):
    order = 99
    def __init__(self, epoch): self.stop_epoch = epoch
    def after_epoch(self):
        if self.epoch == self.stop_epoch: raise CancelFitException

def full_state(learn):
    c = learn.ccl
    opt = learn.opt.state_dict()
    # fastai's own `fit` (inside lr_find) sets the lr hyper-parameter to `learn.lr` before anything is saved, with or
    # without CCL; every fit sets it again. Compare everything else.
    for h in opt['hypers']: h.pop('lr')
    return snapshot(dict(model=learn.model.state_dict(), opt=opt,
                         head=c.ccl_head.state_dict() if c.ccl_head else None,
                         head_opt=c.ccl_opt.state_dict() if c.ccl_opt else None,
                         frozen_at=c.frozen_at, history=c.history))

# ---------------------------------------------------------------- the alternating step

def named_params(m): return {n: p.detach().clone() for n, p in m.named_parameters()}

class _SnapBeforeHead(Callback):
    "Just before CCL (order 51) in each event: after the backbone's backward and step, before the head's"
    order = 50.5
    def before_batch(self): self.model_before = params_of(self.learn.model)
    def after_loss(self):
        if self.training: self.head_at_loss = named_params(self.learn.ccl.ccl_head)
    def after_backward(self):
        self.head_grads = [p.grad for p in self.learn.ccl.ccl_head.parameters()]
        self.model_grads = [p.grad.clone() for p in self.learn.model.parameters()]
    def after_step(self):
        self.head = named_params(self.learn.ccl.ccl_head)
        self.model_p = params_of(self.learn.model)

class _SnapAfterHead(Callback):
    order = 52
    def after_step(self):
        self.head = named_params(self.learn.ccl.ccl_head)
        self.model_p = params_of(self.learn.model)
        self.model_grads = [p.grad.clone() for p in self.learn.model.parameters()]

def test_one_batch_separates_backbone_and_head(dls, tmp_path):
    pre, post = _SnapBeforeHead(), _SnapAfterHead()
    learn = ccl_learner(dls, tmp_path, cbs=[pre, post, StopAfterBatches(1)])
    learn.fit(1, 1e-2)
    # the backbone's loss (CE + KL) gave the head no gradient, and its step changed no head parameter
    assert all(g is None for g in pre.head_grads)
    assert_same(pre.head_at_loss, pre.head, "head changed by the backbone's step")
    # the head's backward added nothing to the backbone's gradients, and its step changed no backbone parameter
    assert_same(pre.model_p, post.model_p, "backbone changed by the head's step")
    for a, b in zip(pre.model_grads, post.model_grads): assert torch.equal(a, b)
    # ...while each step did move its own parameters
    assert any(not torch.equal(pre.model_before[k], pre.model_p[k]) for k in pre.model_p)
    assert any(not torch.equal(pre.head[k], post.head[k]) for k in pre.head)

def test_l_cc_gradient_reaches_only_the_dictionary():
    head = CCLHead(8, 3, widths=(6, 4))
    with torch.no_grad(): head.dictionary.copy_(tensor([[1., 0, 0, 0], [-1., .5, 0, 0], [0, 0, 1., 0]]))  # one pair with cos < 0
    class_orthogonality_loss(head.dictionary).backward()
    assert all(p.grad is None for p in head.embed.parameters())
    assert head.dictionary.grad.abs().sum() > 0
    head.dictionary.grad = None
    with torch.no_grad(): head.dictionary.copy_(torch.eye(3, 4))
    loss = class_orthogonality_loss(head.dictionary)
    loss.backward()
    assert loss == 0 and torch.equal(head.dictionary.grad, torch.zeros(3, 4))

def test_backbone_loss_is_learner_loss_plus_kl(dls, tmp_path):
    "During training learn.loss = CE + KL(P[y] || softmax(pred)); the Learner's loss function is never swapped."
    class Check(Callback):
        order = 52
        def after_loss(self):
            if not self.training: return
            P = self.learn.ccl.soft_labels.to(self.pred.device)
            y = self.yb[0].as_subclass(Tensor)
            expected = F.cross_entropy(self.pred, y) + F.kl_div(F.log_softmax(self.pred, 1), P[y], reduction='batchmean')
            self.diffs.append((self.learn.loss_grad - expected).abs().item())
    chk = Check(); chk.diffs = []
    learn = ccl_learner(dls, tmp_path, cbs=chk)
    lf = learn.loss_func
    learn.fit(1, 1e-2)
    assert learn.loss_func is lf and chk.diffs and max(chk.diffs) < 1e-5

# ---------------------------------------------------------------- lr_find

@pytest.mark.parametrize('trained_first', [True, False])
def test_lr_find_leaves_everything_bit_identical(dls, tmp_path, trained_first):
    learn = ccl_learner(dls, tmp_path)
    if trained_first: learn.fit(2, 1e-2)
    else: learn.create_opt()
    before, lf = full_state(learn), learn.loss_func
    learn.lr_find(num_it=8, show_plot=False)
    assert_nested_equal(before, full_state(learn))
    assert learn.loss_func is lf and no_hooks(learn.model)
    assert not list((tmp_path/'models').rglob('*.pth'))

# ---------------------------------------------------------------- freezing

class _PbarSequence(Callback):
    "Replace each epoch's p_bar by the next value of `pbars` (CCL's after_train, order 51, computes it from P)"
    order = 50.9
    def __init__(self, pbars): self.pbars = list(pbars)
    def after_train(self):
        ccl = self.learn.ccl
        ccl.ccl_head.soft_labels = lambda p=self.pbars.pop(0), k=ccl.ccl_head.dictionary.shape[0]: torch.full((k, k), p)
    def after_epoch(self): del self.learn.ccl.ccl_head.soft_labels

@pytest.mark.parametrize('pbars, patience, min_delta, frozen_at', [
    ([.5, .4, .45, .41, .42, .39], 3, 0., 4),     # 0.45, 0.41, 0.42: three epochs without a new minimum
    ([.5, .4, .37, .36, .30, .29], 2, 0.05, 3),   # 0.37 and 0.36 are less than 0.05 below 0.4
    ([.5, .4, .3, .2, .1, .05], 2, 0., None)])
def test_freeze_rule_counts_epochs_without_a_drop(dls, tmp_path, capsys, pbars, patience, min_delta, frozen_at):
    learn = ccl_learner(dls, tmp_path, cbs=_PbarSequence(pbars), patience=patience, min_delta=min_delta)
    learn.fit(len(pbars), 1e-2)
    test_close(learn.ccl.pbar_history, pbars, eps=1e-6)
    assert learn.ccl.frozen_at == frozen_at
    assert ('frozen after epoch' in capsys.readouterr().out) == (frozen_at is not None)
    assert learn.ccl.ccl_head.dictionary.requires_grad == (frozen_at is None)

class _DictionaryAt(Callback):
    order = 60
    def after_epoch(self): self.dicts.append(self.learn.ccl.ccl_head.dictionary.detach().clone()); self.embeds.append(params_of(self.learn.ccl.ccl_head.embed))

def test_frozen_dictionary_never_changes_while_f2_learns(dls, tmp_path, capsys):
    snap = _DictionaryAt(); snap.dicts, snap.embeds = [], []
    # min_delta larger than any change: epoch 0 sets the best p_bar, epoch 1 is one epoch without a drop -> frozen
    learn = ccl_learner(dls, tmp_path, cbs=snap, patience=1, min_delta=10.)
    learn.fit(4, 1e-2)
    c = learn.ccl
    assert c.frozen and c.frozen_at == 1 and 'dictionary frozen after epoch 1' in capsys.readouterr().out
    assert not torch.equal(snap.dicts[0], snap.dicts[1])           # it learned before
    for d in snap.dicts[2:]: assert torch.equal(d, snap.dicts[1])   # not after, despite momentum and weight decay
    assert not c.ccl_head.dictionary.requires_grad
    assert all(p is not c.ccl_head.dictionary for g in c.ccl_opt.param_groups for p in g['params'])
    assert any(not torch.equal(snap.embeds[1][k], snap.embeds[3][k]) for k in snap.embeds[1] if 'weight' in k)

# ---------------------------------------------------------------- inference is untouched

def test_inference_identical_to_model_without_ccl(dls, tmp_path):
    learn = ccl_learner(dls, tmp_path)
    learn.fit_one_cycle(2, 1e-2)
    head_state = params_of(learn.ccl.ccl_head)
    plain = Learner(dls, learn.model, loss_func=learn.loss_func, metrics=accuracy, path=tmp_path)
    for a, b in zip(learn.get_preds(with_loss=True, with_decoded=True, with_input=True),
                    plain.get_preds(with_loss=True, with_decoded=True, with_input=True)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert learn.validate() == plain.validate()
    assert learn.recorder.metric_names == plain.recorder.metric_names
    item = dls.valid_ds.items[0]
    p1, p2 = learn.predict(item), plain.predict(item)
    assert p1[0] == p2[0] and torch.equal(p1[2], p2[2])
    assert np.array_equal(ClassificationInterpretation.from_learner(learn).confusion_matrix(),
                          ClassificationInterpretation.from_learner(plain).confusion_matrix())
    assert_same(head_state, params_of(learn.ccl.ccl_head), "validation changed the head (BatchNorm statistics)")
    assert not learn.ccl.ccl_head.training and no_hooks(learn.model)

def test_head_follows_train_and_eval(dls, tmp_path):
    class Modes(Callback):
        order = 52
        def after_batch(self): self.seen.append((self.training, self.learn.ccl.ccl_head.training))
    m = Modes(); m.seen = []
    learn = ccl_learner(dls, tmp_path, cbs=m)
    learn.fit(2, 1e-2)
    assert {t for t, _ in m.seen} == {True, False}
    assert all(t == h for t, h in m.seen)

def test_recorder_columns_match_history(dls, tmp_path):
    learn = ccl_learner(dls, tmp_path)
    learn.fit(2, 1e-2)
    names = list(learn.recorder.metric_names)
    assert names[-6:] == ['ce', 'kl', 'head_ce', 'l_cc', 'p_bar', 'time']
    for row, h in zip(learn.recorder.values, learn.ccl.history):
        assert row[-5:] == [h[c] for c in CCL.columns]
    test_close(learn.ccl.soft_labels.diagonal().mean(), learn.ccl.history[-1]['p_bar'])
    assert len(learn.validate()) == 2   # valid_loss, accuracy: no CCL columns outside training

# ---------------------------------------------------------------- the head's learning rate

class _Lrs(Callback):
    order = 52
    def after_step(self): self.lrs.append((self.opt.hypers[-1]['lr'], self.learn.ccl.ccl_opt.param_groups[0]['lr']))

@pytest.mark.parametrize('how', ['one_cycle', 'flat_cos', 'constant', 'steps'])
def test_head_lr_follows_backbone_schedule(dls, tmp_path, how):
    rec = _Lrs(); rec.lrs = []
    learn = ccl_learner(dls, tmp_path, cbs=rec, lr_ccl=0.05)
    if how == 'one_cycle': learn.fit_one_cycle(2, 1e-2)
    elif how == 'flat_cos': learn.fit_flat_cos(2, 1e-2)
    elif how == 'constant': learn.fit(2, 3e-3)
    else:  # the paper's schedule: x0.1 twice
        sched = combine_scheds([1/3, 1/3, 1/3], [SchedNo(1e-2, 1e-2), SchedNo(1e-3, 1e-3), SchedNo(1e-4, 1e-4)])
        learn.fit(3, 1e-2, cbs=ParamScheduler({'lr': sched}))
    lrs = tensor(rec.lrs)
    peak = 3e-3 if how == 'constant' else 1e-2
    test_close(lrs[:, 1], 0.05*lrs[:, 0]/peak)
    if how == 'steps': test_eq(sorted({round(v, 8) for v in lrs[:, 1].tolist()}), [5e-4, 5e-3, 5e-2])

# ---------------------------------------------------------------- export, save, resume

def test_export_and_load_learner(dls, tmp_path):
    learn = ccl_learner(dls, tmp_path)
    learn.fit(1, 1e-2)
    dl = dls.test_dl(list(range(10)))
    preds = learn.get_preds(dl=dl)[0]
    learn.export('export.pkl')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        loaded = load_learner(tmp_path/'export.pkl')
    assert no_hooks(loaded.model) and loaded.ccl.ccl_opt is None
    assert torch.equal(loaded.ccl.soft_labels, learn.ccl.soft_labels)
    new = item_images(dls, range(10))   # the exported Learner holds no training image: it predicts on new ones
    assert torch.equal(loaded.get_preds(dl=loaded.dls.test_dl(new))[0], preds)
    loaded.remove_cb(loaded.ccl)      # the model alone predicts: the head is not needed
    assert torch.equal(loaded.get_preds(dl=loaded.dls.test_dl(new))[0], preds)
    assert loaded.predict(new[3])[0] == learn.predict(3)[0]

def test_save_load_resume_continues_as_if_uninterrupted(tmp_path):
    kw = dict(patience=2, min_delta=10.)   # the dictionary freezes after epoch 2: the resumed run must get there too
    dls = make_dls(shuffle=False)
    full = ccl_learner(dls, tmp_path, **kw)
    full.fit_one_cycle(4, 1e-2)
    part = ccl_learner(make_dls(shuffle=False), tmp_path, **kw)
    part.fit_one_cycle(4, 1e-2, cbs=StopAfterEpoch(1))
    part.save('ckpt')
    resumed = ccl_learner(make_dls(shuffle=False), tmp_path, seed=123, **kw)
    resumed.load('ckpt')
    assert resumed.ccl.history == part.ccl.history and not resumed.ccl.frozen
    resumed.fit_one_cycle(4, 1e-2, start_epoch=2)
    a, b = full_state(full), full_state(resumed)
    assert full.ccl.frozen_at == resumed.ccl.frozen_at == 2
    for k in ('model', 'head'):
        for n in a[k]: test_close(a[k][n].float(), b[k][n].float(), eps=1e-5)
    test_close(tensor([h['p_bar'] for h in a['history']]), tensor([h['p_bar'] for h in b['history']]), eps=1e-5)

def test_epochs_continue_across_fits_and_fine_tune(tmp_path):
    dls = make_dls(n_per_class=8, size=32, n_classes=3, bs=8)
    learn = vision_learner(dls, 'resnet18', pretrained=False, path=tmp_path, cbs=CCL(widths=(32, 16), patience=2, min_delta=10.))
    learn.fine_tune(2, freeze_epochs=1)   # two fits: 1 epoch frozen, then 2
    test_eq([h['epoch'] for h in learn.ccl.history], [0, 1, 2])
    assert learn.ccl.frozen_at == 2   # the second epoch without a drop counts across the two fits
    learn.fit(1)
    test_eq([h['epoch'] for h in learn.ccl.history], [0, 1, 2, 3])
    ax = learn.ccl.plot_pbar()
    test_eq(list(ax.lines[0].get_xdata()), [0, 1, 2, 3])

def test_an_epoch_without_a_training_batch_is_refused(tmp_path):
    "A training set smaller than the batch size gives no batch (fastai drops the short one): refused, nothing logged"
    dls = make_dls(n_per_class=2, bs=64)   # 7 of the 8 items train (a seeded random split), batch size 64
    assert len(dls.train) == 0
    learn = Learner(dls, tiny_cnn(dls.c), path=tmp_path, metrics=accuracy)
    untouched_after_failed_fit(learn, CCL(widths=(8,)), 'CCL: this training epoch has no batch to train on: the training '
                               'DataLoader has 7 items, fewer than its batch size 64')
    learn = ccl_learner(dls, tmp_path)
    with pytest.raises(ValueError, match='fewer than its batch size 64'): learn.fit_one_cycle(2, 1e-2)
    assert learn.ccl.history == [] and learn.ccl.ccl_head is None

class _Nothing(torch.utils.data.IterableDataset):
    "A dataset that yields nothing"
    def __iter__(self): return iter([])

def test_an_epoch_that_saw_no_batch_is_refused_at_its_end(dls, tmp_path):
    "A loader whose length promises a batch it does not give: refused at the end of the training epoch, no NaN row"
    learn = ccl_learner(dls, tmp_path)
    learn.fit(1, 1e-2)   # the head exists
    hist = [dict(h) for h in learn.ccl.history]
    empty = DataLoader(_Nothing(), bs=8, n=8)
    assert len(empty) == 1 and list(empty) == []
    learn.dls = DataLoaders(empty, dls.valid)
    with pytest.raises(ValueError, match='CCL: this training epoch has no batch to train on: the training DataLoader gave no batch'):
        learn.fit(1, 1e-2)
    assert learn.ccl.history == hist and not set(CCL.columns) & set(learn.recorder.metric_names) and no_hooks(learn.model)

def test_a_training_epoch_cancelled_by_a_callback_is_not_refused(dls, tmp_path):
    class SkipTraining(Callback):
        def before_train(self): raise CancelTrainException
    learn = ccl_learner(dls, tmp_path)
    learn.fit(1, 1e-2)
    learn.fit(1, 1e-2, cbs=SkipTraining())   # before CCL's before_train: the last epoch's sums are not logged again
    assert len(learn.ccl.history) == 1 and len(learn.recorder.values) == 1

def test_two_ccl_callbacks_are_refused(dls, tmp_path):
    with pytest.raises(ValueError, match='This Learner has two CCL callbacks'): Learner(dls, tiny_cnn(dls.c), cbs=[CCL(), CCL()], path=tmp_path)
    learn = ccl_learner(dls, tmp_path)
    untouched_after_failed_fit(learn, CCL(widths=(8,)), 'two CCL callbacks')

@pytest.mark.parametrize('kwargs,match', [(dict(lr_ccl=-1), r'CCL\(lr_ccl=-1\): lr_ccl must be a finite number > 0'),
                                          (dict(alpha_cc=float('nan')), 'alpha_cc'), (dict(patience=0), 'patience'),
                                          (dict(widths=(64, -1)), 'widths'), (dict(widths=(w for w in ())), 'one or more')])
def test_arguments_are_checked_when_ccl_is_built(kwargs, match):
    with pytest.raises(ValueError, match=match): CCL(**kwargs)

def test_a_state_of_other_widths_is_refused_before_loading(dls, tmp_path):
    learn = ccl_learner(dls, tmp_path)   # widths (32, 16)
    learn.fit(1, 1e-2)
    learn.save('w32')
    other = ccl_learner(dls, tmp_path, widths=(64, 32))
    before = params_of(other.model)
    with pytest.raises(ValueError, match=r'head of widths \(32, 16\), but this CCL was built with widths=\(64, 32\)'): other.load('w32')
    assert_same(before, params_of(other.model), 'model loaded anyway')
    assert other.ccl.widths == (64, 32) and other.ccl.ccl_head is None

class _FixedMetric(Metric):
    "A metric whose value per epoch is given: makes the best epoch of `SaveModelCallback` known"
    def __init__(self, values): self.vals,self.i = values,-1
    def reset(self): self.i += 1
    def accumulate(self, learn): pass
    @property
    def value(self): return self.vals[self.i]
    @property
    def name(self): return 'fixed'

def test_save_model_callback_restores_ccl_to_the_best_epoch(dls, tmp_path):
    "Reloading the best epoch restores CCL to that epoch, history included; the Recorder keeps every epoch (documented)"
    learn = ccl_learner(dls, tmp_path, cbs=SaveModelCallback(monitor='fixed', comp=np.less, fname='best'))
    learn.metrics = [_FixedMetric([3., 1., 2.])]   # the best epoch is epoch 1
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit(3, 1e-2)
    assert [h['epoch'] for h in learn.ccl.history] == [0, 1] and len(learn.recorder.values) == 3
    best = torch.load(tmp_path/'models'/'best.callbacks.pth', weights_only=True)['ccl']
    assert_same(best['head'], learn.ccl.ccl_head.state_dict(), 'head not from the best epoch')

def test_heat_map_axis_reads_classes(dls, tmp_path):
    learn = ccl_learner(dls, tmp_path)
    learn.fit(1, 1e-2)
    ax = learn.ccl.plot_soft_labels()
    assert ax.get_xlabel() == 'soft label over classes'
    plt.close(ax.figure)

def test_load_without_saved_state_warns(dls, tmp_path):
    plain = Learner(dls, tiny_cnn(dls.c), path=tmp_path)
    plain.save('plain')
    learn = ccl_learner(dls, tmp_path)
    with pytest.warns(UserWarning, match='no state for callback `ccl`'): learn.load('plain')

# ---------------------------------------------------------------- fastai and timm models, precision

def test_vision_learner_and_timm_models():
    dls = make_dls(n_per_class=8, size=32, n_classes=3, bs=8)
    learn = vision_learner(dls, 'resnet18', pretrained=False, metrics=accuracy, cbs=CCL())
    learn.fit_one_cycle(1, 1e-3)
    # the pooled, flattened body features (concat pooling: 2 x 512), not the head's 512-wide hidden layer ('1.8')
    assert learn.ccl.feature_module == '1.1' and learn.ccl.ccl_head.embed[0].in_features == 1024
    assert learn.ccl.ccl_head.dictionary.shape == (3, 512) and len(learn.ccl.history) == 1
    learn = Learner(dls, timm.create_model('resnet18', pretrained=False, num_classes=3), cbs=CCL(widths=(64, 32)))
    learn.fit_one_cycle(1, 1e-3)
    assert learn.ccl.feature_module == 'global_pool.flatten' and learn.ccl.ccl_head.embed[0].in_features == 512

def test_named_feature_module_reads_its_input(dls, tmp_path):
    model = tiny_cnn(dls.c, c=12, extra=[nn.Dropout(0.)])  # '4' is the Dropout, whose input are the pooled features
    learn = ccl_learner(dls, tmp_path, model=model, features='4')
    learn.fit(1, 1e-2)
    assert learn.ccl.ccl_head.embed[0].in_features == 12 and learn.ccl.feature_module == '4'

def test_head_steps_in_fp32_under_autocast(dls, tmp_path):
    seen = []
    class Feats(Callback):
        order = 50.5
        def after_loss(self):
            if self.training: seen.append(self.learn.ccl._feats[0].dtype)
    learn = ccl_learner(dls, tmp_path, cbs=[CPUAutocast(), Feats(), GradientClip(0.5)])
    learn.fit(1, 1e-2)   # creates the head
    out_dtypes = []
    learn.ccl.ccl_head.embed.register_forward_hook(lambda m, i, o: out_dtypes.append((i[0].dtype, o.dtype)))
    learn.fit(1, 1e-2)
    assert torch.bfloat16 in seen                               # the backbone's features were bf16...
    assert out_dtypes and set(out_dtypes) == {(torch.float32, torch.float32)}   # ...the head ran in fp32
    assert all(p.dtype == torch.float32 for p in learn.ccl.ccl_head.parameters())
    assert all(np.isfinite(h['head_ce']) and np.isfinite(h['kl']) for h in learn.ccl.history)

def test_to_fp16_and_gradient_clip_run(dls, tmp_path):
    learn = ccl_learner(dls, tmp_path, cbs=GradientClip(0.1)).to_fp16()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # without CUDA, fastai's MixedPrecision autocast is disabled (and says so)
        learn.fit_one_cycle(1, 1e-2)
    assert len(learn.ccl.history) == 1 and np.isfinite(learn.ccl.history[0]['ce'])

@pytest.mark.cuda
@pytest.mark.parametrize('amp', ['fp16', 'bf16'])
def test_mixed_precision_on_gpu(amp, tmp_path):
    dls = make_dls(n_per_class=16, size=32, n_classes=4, bs=16, device='cuda')
    learn = Learner(dls, timm.create_model('resnet18', pretrained=False, num_classes=4), path=tmp_path, cbs=[CCL(), GradientClip(1.)])
    learn = learn.to_fp16() if amp == 'fp16' else learn.to_bf16()
    learn.fit_one_cycle(2, 1e-3)
    assert all(p.dtype == torch.float32 and p.is_cuda for p in learn.ccl.ccl_head.parameters())
    assert all(np.isfinite(h['head_ce']) and np.isfinite(h['kl']) for h in learn.ccl.history)

# ---------------------------------------------------------------- bad input

def untouched_after_failed_fit(learn, ccl, match):
    "A fit with `ccl` fails with `match` before any step, and leaves the Learner as it was"
    state, lf, cbs = params_of(learn.model), learn.loss_func, list(learn.cbs)
    with pytest.raises(ValueError, match=match): learn.fit(1, 1e-2, cbs=ccl)
    assert_same(state, params_of(learn.model), 'model changed')
    assert learn.loss_func is lf and list(learn.cbs) == cbs and no_hooks(learn.model)
    assert not set(CCL.columns) & set(getattr(learn.recorder, 'metric_names', []))

@pytest.mark.parametrize('case', ['n_classes', 'model_outputs', 'no_linear', 'unknown_module', 'unpooled_module'])
def test_bad_input_is_refused_before_training(dls, tmp_path, case):
    model = tiny_cnn(dls.c)
    if case == 'n_classes': ccl, match = partial(CCL, n_classes=5), r'n_classes=5\) but the data has 4 classes'
    elif case == 'model_outputs': model, ccl, match = tiny_cnn(3), CCL, 'has 3 outputs but the data has 4 classes'
    elif case == 'no_linear':
        model = nn.Sequential(ConvLayer(3, 8, stride=2), nn.Conv2d(8, dls.c, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        ccl, match = CCL, 'no nn.Linear of this model produces its output'
    elif case == 'unknown_module': ccl, match = partial(CCL, features='44'), "no module named '44'.*Close matches: '4'"
    else: ccl, match = partial(CCL, features='3'), r'shape \(\d+, 16, 1, 1\).*pooled features'
    if case != 'unpooled_module':   # found when the Learner is created...
        with pytest.raises(ValueError, match=match): Learner(dls, model, cbs=ccl(), path=tmp_path)
    learn = Learner(dls, model, path=tmp_path)   # ...and when it is added to a fit
    untouched_after_failed_fit(learn, ccl(), match)

def test_targets_that_are_not_class_indices_are_refused_at_the_first_batch(tmp_path):
    "Data without fastai's transforms passes the Learner checks; the first batch's soft targets are refused"
    x, y = torch.randn(16, 3, 16, 16), F.one_hot(torch.arange(16) % 4, 4).float()
    dls = DataLoaders.from_dsets(list(zip(x, y)), list(zip(x, y)), bs=8, num_workers=0)
    learn = Learner(dls, tiny_cnn(4), loss_func=nn.CrossEntropyLoss(), path=tmp_path)
    untouched_after_failed_fit(learn, CCL(widths=(8,)), r'CCL got targets of shape \(8, 4\) and dtype torch.float32; '
                               'it needs one integer class index per item')

# ---------------------------------------------------------------- label-smoothing baselines in a Learner

@pytest.mark.parametrize('prior', [False, True])
def test_label_smoothing_baseline_trains_and_predicts(dls, tmp_path, prior):
    from fastai_softlabel.losses import LabelSmoothingCE, class_prior
    labels = [int(y) for _, y in dls.train_ds]
    u = class_prior(labels, dls.c) if prior else None
    learn = Learner(dls, tiny_cnn(dls.c), loss_func=LabelSmoothingCE(0.2, u), metrics=accuracy, path=tmp_path)
    learn.fit(1, 1e-2)
    preds, targs, decoded = learn.get_preds(with_decoded=True)
    test_close(preds.sum(1), torch.ones(len(preds)))        # `activation` gives probabilities...
    assert torch.equal(decoded, preds.argmax(1))            # ...and `decodes` the class
    assert learn.predict(0)[0] in dls.vocab

def test_a_state_saved_in_the_earlier_head_layout_loads_as_the_same_head(dls, tmp_path):
    "Saved when f_2's Linear layers before BatchNorm had a bias and the dictionary had an optimizer group of its own: the same head and momentum"
    learn = ccl_learner(dls, tmp_path, widths=(32, 24, 16))
    learn.fit(1, 1e-2)
    sd = learn.ccl.state_dict()
    new_names = [n for n,_ in learn.ccl.ccl_head.embed.named_parameters()] + ['dictionary']
    torch.manual_seed(1)
    head,old_names = {},[]
    for k,v in sd['head'].items():   # a bias after each Linear that BatchNorm follows...
        head[k] = v.clone()
        if k in ('embed.0.weight', 'embed.3.weight'): head[k.replace('weight', 'bias')] = torch.randn(v.shape[0])
    for i in (0, 3): head[f'embed.{i + 1}.running_mean'] += head[f'embed.{i}.bias']   # ...and the running mean shifted by it
    for n,_ in learn.ccl.ccl_head.embed.named_parameters():
        old_names.append(n)
        if n in ('0.weight', '3.weight'): old_names.append(n.replace('weight', 'bias'))
    old_names.append('dictionary')
    state = {i: (sd['opt']['state'][new_names.index(n)] if n in new_names else {'momentum_buffer': torch.randn(3)})
             for i,n in enumerate(old_names)}
    g = sd['opt']['param_groups'][0]
    groups = [{**g, 'params': list(range(len(old_names) - 1))}, {**g, 'params': [len(old_names) - 1]}]
    old = {**sd, 'head': head, 'opt': {'state': state, 'param_groups': groups}}
    assert len(old_names) == len(new_names) + 2 and sd['opt']['state']
    fresh = ccl_learner(dls, tmp_path, widths=(32, 24, 16), seed=5)
    fresh.ccl.load_state_dict(old)
    got = fresh.ccl.ccl_head.state_dict()
    test_eq(set(got), set(sd['head']))
    for k,v in sd['head'].items(): test_close(got[k].float(), v.float(), eps=1e-6)
    assert_nested_equal(fresh.ccl.ccl_opt.state_dict(), sd['opt'])

def test_a_head_pickled_with_biases_before_batchnorm_computes_the_same():
    import pickle
    head = CCLHead(8, 3, (6, 5, 4))
    lins = [m for m in head.embed if isinstance(m, nn.Linear)]
    test_eq([l.bias is None for l in lins], [True, True, False])   # BatchNorm follows the first two
    torch.manual_seed(0)
    for lin,bn in ((head.embed[0], head.embed[1]), (head.embed[3], head.embed[4])):   # the earlier layout
        b = torch.randn(lin.out_features)
        lin.bias = nn.Parameter(b)
        with torch.no_grad(): bn.running_mean += b; bn.running_var.uniform_(0.5, 2)
    x = torch.randn(7, 8)
    head.eval()
    loaded = pickle.loads(pickle.dumps(head))
    test_eq([l.bias is None for l in loaded.embed if isinstance(l, nn.Linear)], [True, True, False])
    test_close(loaded.embed(x), head.embed(x), eps=1e-5)

def _no_decay_on_vectors(groups, lr):
    "A user's head optimizer that regroups CCL's two groups (f_2, dictionary): no weight decay on 1-d parameters"
    groups = list(groups)
    test_eq(len(groups), 2)   # CCL passes f_2's parameters and the dictionary as two groups
    ps = [p for g in groups for p in g['params']]
    return torch.optim.SGD([{'params': [p for p in ps if p.ndim > 1]}, {'params': [p for p in ps if p.ndim == 1], 'weight_decay': 0.}],
                           lr=lr, momentum=0.9, weight_decay=1e-4)

def test_a_head_optimizer_with_its_own_groups_survives_lr_find_and_save_load(dls, tmp_path):
    learn = ccl_learner(dls, tmp_path, head_opt_func=_no_decay_on_vectors)
    learn.fit(1, 1e-2)
    test_eq(len(learn.ccl.ccl_opt.param_groups), 2)
    before = full_state(learn)
    with learn.no_bar(), learn.no_logging(): learn.lr_find(show_plot=False)
    assert_nested_equal(full_state(learn), before)
    learn.save('own_groups')
    other = ccl_learner(dls, tmp_path, seed=3, head_opt_func=_no_decay_on_vectors)
    other.load('own_groups')
    assert_nested_equal(other.ccl.ccl_opt.state_dict(), learn.ccl.ccl_opt.state_dict())
    default = ccl_learner(dls, tmp_path)
    default.fit(1, 1e-2)
    test_eq(len(default.ccl.ccl_opt.param_groups), 1)   # the default SGD takes CCL's two groups as one: one fused step

def test_an_earlier_state_of_an_optimizer_with_its_own_groups_warns_and_starts_afresh(dls, tmp_path):
    learn = ccl_learner(dls, tmp_path, widths=(32, 16), head_opt_func=_no_decay_on_vectors)
    learn.fit(1, 1e-2)
    sd = learn.ccl.state_dict()
    head = dict(sd['head'], **{'embed.0.bias': torch.zeros(32)})   # the earlier head: a bias before BatchNorm
    fresh = ccl_learner(dls, tmp_path, widths=(32, 16), seed=5, head_opt_func=_no_decay_on_vectors)
    with pytest.warns(UserWarning, match="the head's optimizer starts afresh"): fresh.ccl.load_state_dict({**sd, 'head': head})
    assert fresh.ccl.ccl_opt.state_dict()['state'] == {}
    for k,v in sd['head'].items(): test_close(fresh.ccl.ccl_head.state_dict()[k].float(), v.float(), eps=1e-6)
