"""Shared benchmark plumbing: random-image data, a per-batch timer, fresh-process workers run in alternation, JSON.

Step time is the median over timed batches of `before_batch` → `after_batch` (everything a callback adds included),
the median over repeats reported. Peak memory: on CUDA `torch.cuda.max_memory_allocated`; on the CPU the worker
process's peak resident set size (`ru_maxrss`) and its growth over the resident size before training."""
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from pathlib import Path

def add_args(p):
    p.add_argument('--device', default='cpu')
    p.add_argument('--size', type=int, default=None, help='image size (default 64 on CPU, 224 on CUDA)')
    p.add_argument('--bs', type=int, default=32)
    p.add_argument('--classes', type=int, default=7)
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--amp', action='store_true', help='mixed precision (fp16) for every configuration')
    p.add_argument('--out', default=None, help='JSON file (default bench/results/<name>_<device>.json)')
    p.add_argument('--worker', help=argparse.SUPPRESS)

def finish_args(args):
    args.size = args.size or (224 if args.device.startswith('cuda') else 64)
    return args

def rss_kib():
    with open('/proc/self/statm') as f: return int(f.read().split()[1])*os.sysconf('SC_PAGE_SIZE')//1024

def random_dls(args, multi_label=False):
    "Random images and labels on `args.device`, enough for warm-up plus timed steps"
    import torch
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    torch.manual_seed(0)
    n = (args.warmup + args.steps)*args.bs
    x = torch.randn(n, 3, args.size, args.size)
    y = (torch.rand(n, args.classes) < 0.3).float() if multi_label else torch.randint(0, args.classes, (n,))
    items = list(zip(x, y))
    dev = torch.device(args.device)
    return DataLoaders(DataLoader(items, bs=args.bs, shuffle=True, drop_last=True, device=dev),
                       DataLoader(items[:args.bs], bs=args.bs, device=dev), device=dev)

def batch_timer(dev, stop_after:int):
    "A callback timing each training batch, `before_batch` to `after_batch` (synchronised on CUDA), that ends the fit after `stop_after` of them"
    import torch
    from fastai.basics import Callback, CancelFitException
    class BatchTimer(Callback):
        order = 100
        def before_fit(self): self.times = []
        def before_batch(self):
            if dev.type == 'cuda': torch.cuda.synchronize()
            self.t0 = time.perf_counter()
        def after_batch(self):
            if not self.training: return
            if dev.type == 'cuda': torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t0)
            if len(self.times) >= stop_after: raise CancelFitException
    return BatchTimer()

def time_fit(learn, args):
    "Fit until `warmup + steps` training batches are timed; return the worker's result dict"
    import torch
    dev = torch.device(args.device)
    timer = batch_timer(dev, args.warmup + args.steps)
    learn.add_cb(timer)
    learn.model.to(dev)
    if args.amp: learn.to_fp16()
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    rss0 = rss_kib()
    learn.fit(1, 1e-3)
    times = timer.times[args.warmup:]
    res = dict(step_s=statistics.median(times), step_s_mean=statistics.fmean(times), n_steps=len(times))
    if dev.type == 'cuda': res['peak_mem_bytes'] = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        res.update(peak_rss_bytes=peak*1024, peak_rss_growth_bytes=max(0, peak - rss0)*1024)
    return res

def time_interleaved(learners:dict, args, rounds:int=20, batches:int=5)->dict:
    """Step times of several Learners in one process, taking turns: `batches` training batches each per round, the
    order reversed every other round, the first round left out (warm-up), without progress bars (`time_fit` keeps
    them). The machine's drift over seconds, which separate processes see at different moments, falls on every
    configuration alike."""
    import torch
    dev = torch.device(args.device)
    timers = {}
    for name, learn in learners.items():
        timers[name] = batch_timer(dev, batches); learn.add_cb(timers[name]); learn.model.to(dev)
        if args.amp: learn.to_fp16()
    per_round = {name: [] for name in learners}
    for r in range(rounds + 1):
        for name in (list(learners) if r % 2 == 0 else list(learners)[::-1]):
            with learners[name].no_bar(), learners[name].no_logging(): learners[name].fit(1, 1e-3)
            if r: per_round[name].append(list(timers[name].times))
    return per_round

def interleaved_ratio(per_round:dict, base:str, other:str)->dict:
    "Ratio of the median step times over all timed batches, and the median over rounds of each round's ratio of medians"
    med = statistics.median
    allb = {k: [t for rnd in v for t in rnd] for k, v in per_round.items()}
    return dict(base_step_s=med(allb[base]), other_step_s=med(allb[other]), ratio=med(allb[other])/med(allb[base]),
                ratio_per_round_median=med(med(o)/med(b) for b, o in zip(per_round[base], per_round[other])),
                rounds=len(per_round[base]), batches_per_round=len(per_round[base][0]))

def run_worker(script, config, args)->dict:
    "Run `script --worker=config` with the same arguments in a fresh process; its last line of output, as JSON"
    cmd = [sys.executable, script] + [f'--{k}={v}' for k, v in vars(args).items()
                                      if k not in ('worker', 'out', 'amp') and v is not None] + (['--amp'] if args.amp else [])
    out = subprocess.run(cmd + [f'--worker={config}'], capture_output=True, text=True)
    if out.returncode: sys.exit(f"{config} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

def run_workers(script, configs, args):
    "Run each configuration in a fresh process, `args.repeats` rounds in alternation; medians per configuration"
    runs = {c: [] for c in configs}
    for r in range(args.repeats):
        for c in configs:
            runs[c].append(run_worker(script, c, args))
            print(f"repeat {r} {c:24s} {runs[c][-1]['step_s']*1e3:8.1f} ms/step", flush=True)
    median = {c: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for c, rs in runs.items()}
    return runs, median

def paired_ratio(runs, base, other, key='step_s'):
    "Median over repeats of `other/base`, each repeat's two runs back to back (less sensitive to the machine's drift than the ratio of medians)"
    return statistics.median(o[key]/b[key] for b, o in zip(runs[base], runs[other]))

def mem_key(args): return 'peak_mem_bytes' if args.device.startswith('cuda') else 'peak_rss_bytes'

def write_json(name, args, payload):
    import torch
    result = dict(benchmark=name, config={k: v for k, v in vars(args).items() if k != 'worker'},
                  machine=dict(python=platform.python_version(), torch=torch.__version__, cpu_threads=torch.get_num_threads(),
                               gpu=torch.cuda.get_device_name() if args.device.startswith('cuda') else None), **payload)
    out = Path(args.out or Path(__file__).parent/'results'/f"{name}_{args.device.split(':')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
