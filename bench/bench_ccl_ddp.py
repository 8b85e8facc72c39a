"""CCL's step time under 2-rank CPU DDP (fastai's `learn.distrib_ctx()`, gloo) against plain DDP, in the same run.

Each configuration runs `tests/ddp_worker.py --bench N` on 2 ranks (timm ResNet-18 from scratch, `--size` px images,
8 per rank and batch, 1 thread per rank); the configurations alternate over `--repeats` fresh launches. Step time is
the median over timed steps of rank 0, the median over repeats reported, and the ratio of the back-to-back pair of each repeat; CCL's head
all-reduce and its step are included. Writes `bench/results/ccl_ddp_cpu.json`.
    .venv/bin/python bench/bench_ccl_ddp.py [--steps 20] [--repeats 3] [--size 64]"""
import argparse, json, platform, statistics, sys, tempfile, time
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'tests'))
from ddp_launch import run_ranks

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=20); p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--out', default=str(ROOT/'bench/results/ccl_ddp_cpu.json'))
    args = p.parse_args()
    import torch
    runs = {'plain': [], 'ccl': []}
    for rep in range(args.repeats):
        for setup in runs:
            with tempfile.TemporaryDirectory() as d:
                run_ranks(ROOT/'tests/ddp_worker.py', world_size=2, timeout=600,
                          args=['--out', d, '--setup', setup, '--arch', 'resnet18', '--size', args.size, '--bench', args.steps])
                times = torch.load(Path(d)/'rank0.pt')['times']
            runs[setup].append(dict(step_s=statistics.median(times), n_steps=len(times)))
            print(f"repeat {rep}: {setup:5s} {runs[setup][-1]['step_s']*1e3:.1f} ms/step", flush=True)
    med = {k: statistics.median(r['step_s'] for r in v) for k, v in runs.items()}
    res = dict(benchmark='ccl_ddp', config=vars(args), world_size=2, backend='gloo',
               machine=dict(python=platform.python_version(), torch=torch.__version__),
               model='resnet18 (timm, pretrained=False), CCL() default head (1024, 512)',
               runs=runs, step_s_median=med, ratio_ccl_to_plain=med['ccl']/med['plain'],
               # each repeat runs plain then CCL back to back: their ratio is robust to the machine's drift between repeats
               ratio_per_repeat=[c['step_s']/p['step_s'] for p, c in zip(runs['plain'], runs['ccl'])])
    res['ratio_paired_median'] = statistics.median(res['ratio_per_repeat'])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"plain DDP {med['plain']*1e3:.1f} ms/step, CCL under DDP {med['ccl']*1e3:.1f} ms/step: ratio {res['ratio_ccl_to_plain']:.3f}; "
          f"per repeat {', '.join(f'{r:.3f}' for r in res['ratio_per_repeat'])} (median {res['ratio_paired_median']:.3f})")

if __name__ == '__main__': main()
