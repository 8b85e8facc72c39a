"""One rank of a 2-process CPU/gloo DDP run through fastai's own `learn.distrib_ctx()` (DistributedTrainer + accelerate).

Started by `tests/test_ddp.py` (and `bench/bench_ccl_ddp.py`) with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set.
Ranks are seeded differently on purpose: whatever must agree has to be made to agree by the library.
Writes `<out>/rank<r>.pt` with everything the test compares.
"""
import argparse, os, sys, time
import torch, torch.distributed as dist
from fastai.vision.all import *
import fastai.distributed as fdist
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_cnn, make_dls
from fastai_softlabel.ccl import CCL
from fastai_softlabel.flowmixup import FlowMixup

def _cpu_broadcast(self, t, rank):
    "fastai's DistributedDL broadcasts the sample order with `.cuda()` (NCCL); gloo takes CPU tensors"
    t = LongTensor(t); dist.broadcast(t, rank); return t.tolist()
fdist.DistributedDL._broadcast = _cpu_broadcast

p = argparse.ArgumentParser()
p.add_argument('--out', required=True)
p.add_argument('--setup', default='ccl', choices=['ccl', 'ccl_named', 'flowmixup', 'ccl+flowmixup', 'plain'])
p.add_argument('--epochs', type=int, default=3)
p.add_argument('--bench', type=int, default=0, help='time this many training steps after 3 warm-up steps instead')
p.add_argument('--size', type=int, default=16)
p.add_argument('--arch', default='tiny', choices=['tiny', 'resnet18'], help='resnet18: timm, no pretrained weights, CCL with the default head')
a = p.parse_args()
rank = int(os.environ['RANK'])
torch.set_num_threads(1)
set_seed(100 + rank)                              # different on every rank
first_draw = torch.rand(1)

dls = make_dls(n_per_class=24, size=a.size, n_classes=4, bs=8, device='cpu')
if a.arch == 'resnet18':
    import timm
    model = timm.create_model('resnet18', pretrained=False, num_classes=dls.c)
else: model = tiny_cnn(dls.c)
head = {} if a.arch == 'resnet18' else dict(widths=(32, 16), lr_ccl=0.05)
freeze = {} if a.bench else dict(patience=1, min_delta=1.)   # the tests freeze after epoch 1; the benchmark never
cbs = {'ccl': lambda: [CCL(**head, **freeze)],
       'ccl_named': lambda: [CCL(features='4', widths=(32, 16), lr_ccl=0.05, patience=1, min_delta=1.)],
       'flowmixup': lambda: [FlowMixup(['1', '2'])],
       'ccl+flowmixup': lambda: [CCL(widths=(32, 16), lr_ccl=0.05, patience=1, min_delta=1.), FlowMixup(['1', '2'])],
       'plain': lambda: []}[a.setup]()
learn = Learner(dls, model, metrics=accuracy, path=Path(a.out)/f'rank{rank}', cbs=cbs)
if a.bench: learn.remove_cb(ProgressCallback)

class StepTimer(Callback):
    "Wall time of training steps after warm-up, ended after `n` timed steps"
    order = 99
    def __init__(self, n, warmup=3): self.n, self.warmup, self.times = n, warmup, []
    def before_fit(self): self.seen = 0
    def before_batch(self): self.t0 = time.perf_counter()
    def after_batch(self):
        if not self.training: return
        self.seen += 1
        if self.seen > self.warmup: self.times.append(time.perf_counter() - self.t0)
        if len(self.times) >= self.n: raise CancelFitException

with learn.distrib_ctx(sync_bn=False, cpu=True):
    if a.bench:
        learn.fit(1000, 1e-3, cbs=(timer := StepTimer(a.bench)))
        torch.save(dict(times=timer.times), Path(a.out)/f'rank{rank}.pt')
        dist.destroy_process_group()
        sys.exit(0)
    learn.fit_one_cycle(a.epochs, 1e-2)
    saved = learn.save('final')
    dist.barrier()

c = getattr(learn, 'ccl', None)
state = dict(first_draw=first_draw, model=learn.model.state_dict(), values=[list(map(float, v)) for v in learn.recorder.values])
if c is not None:
    state.update(head=c.ccl_head.state_dict(), head_opt=c.ccl_opt.state_dict(), history=c.history, frozen_at=c.frozen_at,
                 soft_labels=c.soft_labels, module_name=c._module_name)
state['files'] = sorted(str(f.relative_to(Path(a.out)/f'rank{rank}')) for f in (Path(a.out)/f'rank{rank}').rglob('*') if f.is_file())
torch.save(state, Path(a.out)/f'rank{rank}.pt')
dist.destroy_process_group()   # a process group left open can abort the process at exit
