"""Step time and peak memory of plain training vs CCL, measured in one run.

Each configuration trains a ResNet-18 (timm, no pretrained weights) for `--steps` timed batches after `--warmup`
batches, in a fresh subprocess, alternating plain / CCL `--repeats` times so that drift affects both alike. Step time
is the median over batches of the time from `before_batch` to `after_batch` (CCL's head step included), the median
over repeats reported. Peak memory: on CUDA `torch.cuda.max_memory_allocated`; on the CPU the process's peak resident
set size (`ru_maxrss`) and its growth over the resident size before training.

    python bench/bench_ccl.py                       # CPU, 64 px
    python bench/bench_ccl.py --device cuda --size 224
"""
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from pathlib import Path

def rss_kib():
    with open('/proc/self/statm') as f: return int(f.read().split()[1])*os.sysconf('SC_PAGE_SIZE')//1024

def worker(args):
    import torch, timm
    from fastai.basics import Learner, Callback, CancelFitException, CrossEntropyLossFlat, accuracy
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai_softlabel.ccl import CCL
    torch.manual_seed(0)
    dev = torch.device(args.device)
    n = (args.warmup + args.steps)*args.bs
    x = torch.randn(n, 3, args.size, args.size)
    y = torch.randint(0, args.classes, (n,))
    items = list(zip(x, y))
    dls = DataLoaders(DataLoader(items, bs=args.bs, shuffle=True, drop_last=True, device=dev),
                      DataLoader(items[:args.bs], bs=args.bs, device=dev), device=dev)
    model = timm.create_model('resnet18', pretrained=False, num_classes=args.classes)

    class Timer(Callback):
        order = 100
        def before_fit(self): self.times = []
        def before_batch(self):
            if dev.type == 'cuda': torch.cuda.synchronize()
            self.t0 = time.perf_counter()
        def after_batch(self):
            if not self.training: return
            if dev.type == 'cuda': torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t0)
            if len(self.times) >= args.warmup + args.steps: raise CancelFitException

    timer = Timer()
    cbs = [timer] + ([CCL()] if args.worker == 'ccl' else [])
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, cbs=cbs)
    learn.model.to(dev)
    if args.amp: learn = learn.to_fp16()
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    rss0 = rss_kib()
    learn.fit(1, 1e-3)
    times = timer.times[args.warmup:]
    res = dict(step_s=statistics.median(times), step_s_mean=statistics.fmean(times), n_steps=len(times))
    if dev.type == 'cuda': res['peak_mem_bytes'] = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        res.update(peak_rss_bytes=peak*1024, peak_rss_growth_bytes=max(0, peak - rss0)*1024)
    print(json.dumps(res))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--size', type=int, default=None, help='image size (default 64 on CPU, 224 on CUDA)')
    p.add_argument('--bs', type=int, default=32)
    p.add_argument('--classes', type=int, default=7)
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--amp', action='store_true', help='mixed precision (fp16) for both')
    p.add_argument('--out', default=None, help='JSON file (default bench/results/ccl_<device>.json)')
    p.add_argument('--worker', choices=['plain', 'ccl'], help=argparse.SUPPRESS)
    args = p.parse_args()
    args.size = args.size or (224 if args.device.startswith('cuda') else 64)
    if args.worker: return worker(args)

    runs = {'plain': [], 'ccl': []}
    base = [sys.executable, __file__] + [f'--{k}={v}' for k, v in vars(args).items()
                                         if k not in ('worker', 'out', 'amp') and v is not None] + (['--amp'] if args.amp else [])
    for r in range(args.repeats):
        for mode in ('plain', 'ccl'):
            out = subprocess.run(base + [f'--worker={mode}'], capture_output=True, text=True)
            if out.returncode: sys.exit(f"{mode} run failed:\n{out.stderr[-3000:]}")
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {r} {mode:5s}: {runs[mode][-1]}", flush=True)

    mem_key = 'peak_mem_bytes' if args.device.startswith('cuda') else 'peak_rss_bytes'
    summary = {m: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for m, rs in runs.items()}
    ratios = {'step_time': summary['ccl']['step_s']/summary['plain']['step_s'],
              'peak_memory': summary['ccl'][mem_key]/summary['plain'][mem_key]}
    if 'peak_rss_growth_bytes' in summary['plain'] and summary['plain']['peak_rss_growth_bytes']:
        ratios['peak_rss_growth'] = summary['ccl']['peak_rss_growth_bytes']/summary['plain']['peak_rss_growth_bytes']
    import torch
    result = dict(benchmark='ccl_vs_plain', model='resnet18 (timm, pretrained=False)', config=vars(args) | {'worker': None},
                  machine=dict(python=platform.python_version(), torch=torch.__version__, cpu_threads=torch.get_num_threads(),
                               gpu=torch.cuda.get_device_name() if args.device.startswith('cuda') else None),
                  runs=runs, median=summary, ratios=ratios)
    out = Path(args.out or Path(__file__).parent/'results'/f"ccl_{args.device.split(':')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nstep time  plain {summary['plain']['step_s']*1e3:.1f} ms, CCL {summary['ccl']['step_s']*1e3:.1f} ms: ratio {ratios['step_time']:.3f}")
    print(f"peak memory ratio {ratios['peak_memory']:.3f}" + (f", growth over start {ratios['peak_rss_growth']:.3f}" if 'peak_rss_growth' in ratios else ''))
    print(f"wrote {out}")

if __name__ == '__main__': main()
