"""What one training step gains from each method at PyTorch's dispatcher (`step_cost.StepCost`): no host synchronisation
inside the step, and CCL's step within its aten-op budget. On the CPU, with the device pinned; `test_no_sync_on_gpu` does
the same with CUDA's own sync check."""
from collections import Counter
import subprocess, sys
import numpy as np, pytest, torch
from fastai.vision.all import *
from conftest import tiny_cnn, make_dls
from step_cost import StepCost, CountStep
from fastai_softlabel.ccl import CCL
from fastai_softlabel.flowmixup import FlowMixup, Mixup, ManifoldMixup
from fastai_softlabel.ols import OnlineLabelSmoothing
from fastai_softlabel.losses import LabelSmoothingCE, LabelSmoothingCEFlat
from fastai_softlabel.robust_losses import GCELoss, SCELoss, BootstrapLoss, BootstrapBCELoss
from fastai_softlabel.elr import ELR
from fastai_softlabel.coteaching import CoTeaching
from fastai_softlabel.data import synthetic_class_images, array_image_dls

def multilabel_dls(device='cpu'):
    "Odd classes also labelled with the previous class; class 3's images with no label at all (rows the head leaves out)"
    d = synthetic_class_images(n_per_class=16, size=16, n_classes=4, seed=0)
    k = d['labels']
    y = (np.eye(4)[k] + (k % 2 == 1)[:, None]*np.eye(4)[np.maximum(k - 1, 0)]).clip(0, 1)
    y[k == 3] = 0
    return array_image_dls(d['images'], y.astype(np.uint8), d['class_names'], bs=16, num_workers=0, device=device)

def step_cost(cbs=(), multi=False, loss_func=None, at=3, device='cpu')->StepCost:
    "The aten ops of the `at`-th training batch of a tiny CNN, from the first `before_batch` to the last `after_batch`"
    dls = multilabel_dls(device) if multi else make_dls(device=device)
    set_seed(0)
    learn = Learner(dls, tiny_cnn(4), loss_func=loss_func or (BCEWithLogitsLossFlat() if multi else CrossEntropyLossFlat()), cbs=list(cbs))
    learn.fit(1, 1e-3, cbs=(counter := CountStep(at)))
    assert counter.cost is not None, "the fit ended before the counted batch"
    return counter.cost

METHODS = {
    'CCL': (lambda: [CCL()], False), 'CCL multi-label': (lambda: [CCL()], True),
    'FlowMixup': (lambda: [FlowMixup(['0', '2'])], False), 'FlowMixup multi-label': (lambda: [FlowMixup(['0', '2'], class_weights='inverse_prevalence')], True),
    'Mixup': (lambda: [Mixup()], False), 'ManifoldMixup': (lambda: [ManifoldMixup(['0', '1'], per_sample=True)], False),
    'CCL + FlowMixup': (lambda: [CCL(), FlowMixup(['0', '2'])], False), 'CCL + FlowMixup multi-label': (lambda: [CCL(), FlowMixup(['0', '2'])], True),
    'CCL + Mixup (op=False)': (lambda: [CCL(), Mixup()], False),
    'OnlineLabelSmoothing': (lambda: [OnlineLabelSmoothing()], False),
    'ELR': (lambda: [ELR()], False), 'ELR multi-label': (lambda: [ELR()], True),
    'CoTeaching': (lambda: [CoTeaching(0.3)], False), 'CoTeaching multi-label': (lambda: [CoTeaching(0.3)], True),
}
LOSSES = {'LabelSmoothingCE': lambda: LabelSmoothingCE(), 'LabelSmoothingCE(prior)': lambda: LabelSmoothingCE(prior=torch.tensor([.1, .2, .3, .4])),
          'LabelSmoothingCEFlat': lambda: LabelSmoothingCEFlat(), 'GCELoss': lambda: GCELoss(), 'SCELoss': lambda: SCELoss(),
          'BootstrapLoss': lambda: BootstrapLoss(), 'BootstrapLoss(hard)': lambda: BootstrapLoss(hard=True),
          'BootstrapBCELoss': lambda: BootstrapBCELoss(), 'BootstrapBCELoss(hard)': lambda: BootstrapBCELoss(hard=True)}

@pytest.fixture(scope='module')
def plain(): return {m: step_cost(multi=m) for m in (False, True)}

@pytest.mark.parametrize('name', list(METHODS) + list(LOSSES))
def test_no_method_adds_a_host_synchronisation(name, plain):
    if name in METHODS:
        make, multi = METHODS[name]
        cost = step_cost(make(), multi=multi)
    else:
        multi = name.startswith('BootstrapBCE')
        cost = step_cost(loss_func=LOSSES[name](), multi=multi)
    added = cost.syncs - plain[multi].syncs
    print(f"{name}: +{cost.n_ops - plain[multi].n_ops} aten ops (+{cost.n_kernels - plain[multi].n_kernels} that do arithmetic or copy), "
          f"+{sum(added.values())} host syncs {dict(added)}")
    assert not added, f"{name} asks the host for a value inside the training step: {dict(added)}"

# The paper's head alone (3 Linear, 2 BatchNorm, the normalised distances, CE + l_CC) costs about 100 aten ops
# forward and backward; the soft-label KL of the backbone, the finiteness check, the head's step and the epoch sums
# come on top. Issue 20's target: at most 150 (329 before it).
CCL_OP_BUDGET = 150

def test_ccl_step_stays_within_its_op_budget(plain):
    cost = step_cost([CCL()])
    added = cost.n_ops - plain[False].n_ops
    print(f"CCL adds {added} aten ops to a training step (budget {CCL_OP_BUDGET}), {cost.n_kernels - plain[False].n_kernels} of them "
          "doing arithmetic or copying")
    assert added <= CCL_OP_BUDGET

class _Reads(Callback):
    "Asks the host for a value in `after_loss`, in one of the ways a training step must not"
    def __init__(self, how): self.how = how
    def after_loss(self):
        if not self.training: return
        l = self.learn.loss
        if self.how == 'item': l.item()
        elif self.how == 'bool': bool(l > 0)
        elif self.how == 'mask': self.learn.pred[self.learn.pred > 0]
        elif self.how == 'cpu': l.cpu()
        elif self.how == 'tolist': self.learn.pred.tolist()

@pytest.mark.parametrize('how', ['item', 'bool', 'mask', 'cpu', 'tolist'])
def test_the_count_sees_each_kind_of_host_read(how, plain):
    "The counter itself: each way of reading a value on the host shows up as an added synchronisation"
    assert step_cost([_Reads(how)]).syncs - plain[False].syncs

def test_tests_run_on_the_cpu():
    "conftest pins every test but the `cuda` ones to the CPU (a GPU machine gives the same results), and the processes they start see no GPU"
    assert defaults.use_cuda is False and default_device().type == 'cpu'
    r = subprocess.run([sys.executable, '-c', "import os; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))"], capture_output=True, text=True)
    assert r.stdout.strip() == "''"

@pytest.mark.cuda
@pytest.mark.parametrize('name', list(METHODS))
def test_no_sync_on_gpu(name):
    "On a GPU, the second training batch of each method under `torch.cuda.set_sync_debug_mode('error')`: a sync raises"
    make, multi = METHODS[name]
    class Strict(Callback):
        order = -1000   # before every other callback's before_batch...
        def before_fit(self): self.checked = False
        def before_batch(self):
            if self.training and self.train_iter == 1: torch.cuda.set_sync_debug_mode('error'); self.on = True
    class Relax(Callback):
        order = 1000    # ...until after every other callback's after_batch
        def after_batch(self):
            if getattr(strict, 'on', False):
                torch.cuda.set_sync_debug_mode(0); strict.on, strict.checked = False, True
                raise CancelFitException
        def after_cancel_fit(self): torch.cuda.set_sync_debug_mode(0)
    strict = Strict()
    dls = multilabel_dls('cuda') if multi else make_dls(device='cuda')
    learn = Learner(dls, tiny_cnn(4), loss_func=BCEWithLogitsLossFlat() if multi else CrossEntropyLossFlat(), cbs=make())
    try:
        with learn.no_bar(), learn.no_logging():   # the Recorder's and progress bar's reads are fastai's, in plain training too
            learn.fit(1, 1e-3, cbs=[strict, Relax()])
    finally: torch.cuda.set_sync_debug_mode(0)
    assert strict.checked, "the strict batch never ran"
