"""One rank of a 2-process CPU/gloo DDP run through fastai's own `learn.distrib_ctx()` (DistributedTrainer + accelerate).

Started by `tests/test_ddp.py` with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set.
Ranks are seeded differently on purpose: whatever must agree has to be made to agree by the library.
Writes `<out>/rank<r>.pt` with everything the test compares.
"""
import argparse, os, sys, warnings
import torch, torch.distributed as dist
from fastai.vision.all import *
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_cnn, make_dls
from ddp_launch import use_cpu_broadcast
from fastai_softlabel.core import all_gather_rows
from fastai_softlabel.lockstep import Lockstep
from fastai_softlabel.ccl import CCL
from fastai_softlabel.flowmixup import FlowMixup, Mixup, ManifoldMixup
use_cpu_broadcast()

p = argparse.ArgumentParser()
p.add_argument('--out', required=True)
p.add_argument('--setup', default='ccl', choices=['ccl', 'ccl_named', 'flowmixup', 'ccl+flowmixup', 'ccl+mixup', 'ccl+manifold', 'ccl_drift', 'ccl_multilabel', 'gather', 'agree'])
p.add_argument('--epochs', type=int, default=3)
a = p.parse_args()
rank = int(os.environ['RANK'])
torch.set_num_threads(1)
set_seed(100 + rank)                              # different on every rank
first_draw = torch.rand(1)

if a.setup == 'gather':   # core.all_gather_rows with a different number of rows on each rank, and none on one
    dist.init_process_group('gloo')
    mine = torch.arange(6.).view(3, 2)[:2*rank] + 10*rank     # rank 0: no rows, rank 1: two rows
    torch.save(dict(gathered=all_gather_rows(mine), ints=all_gather_rows(torch.tensor([rank]*(rank+1))),
                    padded=all_gather_rows(mine, rows=2)), Path(a.out)/f'rank{rank}.pt')
    dist.destroy_process_group()
    sys.exit(0)

if a.setup == 'agree':   # experiments.check_ranks_agree on models that agree, then on models one bit apart on rank 1
    from fastai_softlabel.experiments import check_ranks_agree
    dist.init_process_group('gloo')
    torch.manual_seed(0); m = nn.Linear(3, 2)
    check_ranks_agree(m)
    if rank == 1:
        with torch.no_grad(): m.weight.view(-1)[0] = torch.nextafter(m.weight.view(-1)[0], torch.tensor(1.))
    try: check_ranks_agree(m); error = None
    except RuntimeError as e: error = str(e)
    torch.save(dict(error=error), Path(a.out)/f'rank{rank}.pt')
    dist.destroy_process_group()
    sys.exit(0)

FIRST_GATHER = {}
def _recording(gather):
    "CCL's gather (its head's `Lockstep`), recording its first call: this rank's rows and the gathered batch"
    def f(self, feats, target, keep, **kwargs):
        out = gather(self, feats, target, keep, **kwargs)
        if not FIRST_GATHER: FIRST_GATHER.update(feats=feats.clone(), target=target.clone(), keep=keep.clone(), all_feats=out[0].clone(),
                                                 all_target=out[1].clone(), all_keep=out[2].clone())
        return out
    return f
Lockstep.gather = _recording(Lockstep.gather)

class Drift(Callback):
    "On rank 1 only, nudge CCL's head after one step of epoch 0: what a kernel that is not bitwise reproducible could do"
    order = 60
    def after_step(self):
        if rank == 1 and self.epoch == 0 and self.iter == 1:
            with torch.no_grad(): self.learn.ccl.ccl_head.dictionary.add_(1e-3)

dls = make_dls(n_per_class=24, size=16, n_classes=4, bs=8, device='cpu')
if a.setup == 'ccl_multilabel':   # odd classes also carry the previous class's label; the gathered targets are distributions
    from fastai_softlabel.data import synthetic_class_images, array_image_dls
    d = synthetic_class_images(n_per_class=24, size=16, n_classes=4, seed=0)
    k = d['labels']
    y = (np.eye(4)[k] + (k % 2 == 1)[:, None]*np.eye(4)[k - 1]).clip(0, 1).astype(np.uint8)
    dls = array_image_dls(d['images'], y, d['class_names'], bs=8, num_workers=0, device='cpu')
head = dict(widths=(32, 16), lr_ccl=0.05, patience=1, min_delta=1.)   # the tests freeze after epoch 1
cbs = {'ccl': lambda: [CCL(**head)],
       'ccl_named': lambda: [CCL(features='4', **head)],
       'flowmixup': lambda: [FlowMixup(['1', '2'])],
       'ccl+flowmixup': lambda: [CCL(**head), FlowMixup(['1', '2'])],
       'ccl+mixup': lambda: [CCL(**head), Mixup()],     # every row mixed: the head learns from mixed one-hot targets
       'ccl+manifold': lambda: [CCL(**head), ManifoldMixup(['1', '4'])],   # '4' mixes after the features ('3'), '1' before: ranks differ
       'ccl_drift': lambda: [CCL(**head, head_opt_func=torch.optim.AdamW), Drift()],   # Adam: 'step' state on the CPU
       'ccl_multilabel': lambda: [CCL(**head)]}[a.setup]()
multi = a.setup == 'ccl_multilabel'
learn = Learner(dls, tiny_cnn(dls.c), metrics=[] if multi else accuracy, loss_func=BCEWithLogitsLossFlat() if multi else None,
                path=Path(a.out)/f'rank{rank}', cbs=cbs)

with learn.distrib_ctx(sync_bn=False, cpu=True), warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    learn.fit_one_cycle(a.epochs, 1e-2)
    saved = learn.save('final')
    dist.barrier()

c = getattr(learn, 'ccl', None)
state = dict(first_draw=first_draw, model=learn.model.state_dict(), values=[list(map(float, v)) for v in learn.recorder.values],
             warnings=[str(w.message) for w in caught if 'CCL' in str(w.message)])
if c is not None:
    state.update(head=c.ccl_head.state_dict(), head_opt=c.ccl_opt.state_dict(), history=c.history, frozen_at=c.frozen_at,
                 soft_labels=c.soft_labels, module_name=c.feature_module, first_gather=FIRST_GATHER)
state['files'] = sorted(str(f.relative_to(Path(a.out)/f'rank{rank}')) for f in (Path(a.out)/f'rank{rank}').rglob('*') if f.is_file())
torch.save(state, Path(a.out)/f'rank{rank}.pt')
dist.destroy_process_group()   # a process group left open can abort the process at exit
