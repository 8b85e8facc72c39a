"""One rank of `bench/bench_ccl_ddp.py`: plain DDP and CCL under DDP, timed in the same two processes, in alternation.

Started with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (`tests/ddp_launch.py`). Both Learners train a timm
ResNet-18 (no pretrained weights, the same initial weights) through fastai's `learn.distrib_ctx(cpu=True)` on gloo.
After one unrecorded fit of each, each round fits each Learner for `--steps` timed steps after `--warmup` steps, in
the order plain, CCL, CCL, plain, ... (ABBA: a slow drift of the machine weighs on both alike). Besides whole steps, the time spent inside CCL's own
events is measured. Rank 0 writes `<out>/times.pt`."""
import argparse, os, sys, time
from collections import defaultdict
from pathlib import Path
import torch, torch.distributed as dist, timm
from fastai.vision.all import *
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'tests'))
from conftest import make_dls
from ddp_launch import use_cpu_broadcast
from fastai_softlabel.ccl import CCL

p = argparse.ArgumentParser()
p.add_argument('--out', required=True)
p.add_argument('--steps', type=int, default=20); p.add_argument('--warmup', type=int, default=3)
p.add_argument('--rounds', type=int, default=4); p.add_argument('--size', type=int, default=64)
p.add_argument('--bs', type=int, default=8, help='items per rank and batch')
a = p.parse_args()
rank = int(os.environ['RANK'])
torch.set_num_threads(1)
use_cpu_broadcast()

EVENTS = ('before_batch', 'after_loss', 'after_backward', 'after_step')
class TimedCCL(CCL):
    "CCL that adds up the wall time of its per-batch events"
    def __init__(self, *args, **kwargs): super().__init__(*args, **kwargs); self.event_s = defaultdict(float)
def _timed(name):
    def f(self):
        t = time.perf_counter(); getattr(CCL, name)(self); self.event_s[name] += time.perf_counter() - t
    f.__name__ = name; return f
for e in EVENTS: setattr(TimedCCL, e, _timed(e))

class StepTimer(Callback):
    "Wall time of training steps after warm-up; ends the fit after `n` timed steps"
    order = 99
    def __init__(self, n, warmup): self.n, self.warmup, self.times = n, warmup, []
    def before_fit(self): self.seen = 0
    def before_batch(self): self.t0 = time.perf_counter()
    def after_batch(self):
        if not self.training: return
        self.seen += 1
        if self.seen > self.warmup: self.times.append(time.perf_counter() - self.t0)
        if len(self.times) >= self.n: raise CancelFitException

dls = make_dls(n_per_class=a.bs*(a.steps + a.warmup),   # 4 classes, 2 ranks: one epoch holds every step
                size=a.size, n_classes=4, bs=a.bs, device='cpu')
def learner(cbs):
    set_seed(0)   # the same initial weights for both
    model = timm.create_model('resnet18', pretrained=False, num_classes=dls.c)
    set_seed(100 + rank)
    learn = Learner(dls, model, cbs=cbs)
    learn.remove_cb(ProgressCallback)
    return learn
ccl = TimedCCL()
learners = {'plain': learner([]), 'ccl': learner([ccl])}
times = {k: [] for k in learners}   # per round: the timed steps of that fit
ccl_event_s, ccl_steps = defaultdict(float), 0
for r in range(-1, a.rounds):   # round -1: a fit of each, not recorded (a process's first fits run slower)
    for name in (('plain', 'ccl') if r % 2 == 0 else ('ccl', 'plain')):
        learn = learners[name]
        timer = StepTimer(a.steps, a.warmup)
        if name == 'ccl': ccl.event_s.clear()
        with learn.distrib_ctx(sync_bn=False, cpu=True): learn.fit(1, 1e-3, cbs=timer)
        if r < 0: continue
        times[name].append(timer.times)
        if name == 'ccl':   # events of the timed steps only: the warm-up steps' share removed in proportion
            n_all = a.steps + a.warmup
            for e, s in ccl.event_s.items(): ccl_event_s[e] += s*a.steps/n_all
            ccl_steps += a.steps
if rank == 0: torch.save(dict(times=times, ccl_event_ms={e: s/ccl_steps*1e3 for e, s in ccl_event_s.items()}), Path(a.out)/'times.pt')
dist.barrier()
dist.destroy_process_group()
