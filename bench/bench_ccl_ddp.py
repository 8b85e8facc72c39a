"""CCL's step time under 2-rank CPU DDP (fastai's `learn.distrib_ctx()`, gloo) against plain DDP, in the same run.

Each launch (`--repeats`) starts `bench/ccl_ddp_worker.py` on 2 ranks (1 thread each): a plain Learner and a CCL
Learner (timm ResNet-18 from scratch, `--size` px images, 8 per rank and batch, CCL's default head) live in the same
two processes and, after one unrecorded fit of each, are fitted in alternation, ABBA, `--rounds` times each, `--steps` timed steps per fit. Step time:
rank 0's wall time from `before_batch` to `after_batch`, CCL's head gather, backward and step included.
Reported: the ratio of the median step times over all launches, the median of the per-round ratios (each round's two
fits back to back), and the time spent inside CCL's own events per step. Writes `bench/results/ccl_ddp_cpu.json`.
    .venv/bin/python bench/bench_ccl_ddp.py [--steps 20] [--rounds 8] [--repeats 2] [--size 64]"""
import argparse, json, platform, statistics, sys, tempfile
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'tests'))
from ddp_launch import run_ranks

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=20); p.add_argument('--rounds', type=int, default=8)
    p.add_argument('--repeats', type=int, default=2); p.add_argument('--size', type=int, default=64)
    p.add_argument('--out', default=str(ROOT/'bench/results/ccl_ddp_cpu.json'))
    args = p.parse_args()
    import torch
    from fastai_softlabel.ccl import CCL
    med = statistics.median
    steps = {'plain': [], 'ccl': []}; round_ratios, event_ms = [], []
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            run_ranks(ROOT/'bench/ccl_ddp_worker.py', world_size=2, timeout=900,
                      args=['--out', d, '--steps', args.steps, '--rounds', args.rounds, '--size', args.size])
            res = torch.load(Path(d)/'times.pt')
        for k in steps: steps[k] += [t for rnd in res['times'][k] for t in rnd]
        ratios = [med(c)/med(p) for p, c in zip(res['times']['plain'], res['times']['ccl'])]
        round_ratios += ratios
        event_ms.append(res['ccl_event_ms'])
        print(f"launch {rep}: per-round ratios {', '.join(f'{r:.3f}' for r in ratios)}; inside CCL's events "
              f"{sum(res['ccl_event_ms'].values()):.1f} ms/step", flush=True)
    step_ms = {k: med(v)*1e3 for k, v in steps.items()}
    events = {e: med(m[e] for m in event_ms) for e in event_ms[0]}
    out = dict(benchmark='ccl_ddp', config={k: v for k, v in vars(args).items() if k != 'out'}, world_size=2, backend='gloo', threads_per_rank=1,
               machine=dict(python=platform.python_version(), torch=torch.__version__),
               model=f'resnet18 (timm, pretrained=False), 8 images per rank and batch; CCL() default head {CCL().widths}',
               step_ms_median=step_ms, ratio_ccl_to_plain=step_ms['ccl']/step_ms['plain'],
               ratio_per_round=round_ratios, ratio_per_round_median=med(round_ratios),
               ccl_event_ms_per_step=events, ccl_event_ms_total=sum(events.values()),
               ccl_event_share_of_plain_step=sum(events.values())/step_ms['plain'])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"plain DDP {step_ms['plain']:.1f} ms/step, CCL under DDP {step_ms['ccl']:.1f} ms/step: ratio "
          f"{out['ratio_ccl_to_plain']:.3f}; median per-round ratio {out['ratio_per_round_median']:.3f}; inside CCL's events "
          f"{out['ccl_event_ms_total']:.1f} ms/step ({100*out['ccl_event_share_of_plain_step']:.1f}% of a plain step)")

if __name__ == '__main__': main()
