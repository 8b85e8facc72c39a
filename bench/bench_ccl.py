"""Step time and peak memory of plain training vs CCL, measured in one run (ResNet-18 from timm, no pretrained weights).

    python bench/bench_ccl.py                        # CPU, 64 px
    python bench/bench_ccl.py --device cuda          # GPU, 224 px
    python bench/bench_ccl.py --task multi           # multi-label targets with a BCE loss (multi-label CCL)

The step-time ratio is the ratio of the two configurations' median step times, and also the median over repeats of the
ratio of each repeat's back-to-back runs. Each JSON in bench/results/ records the settings it was taken with.
"""
import argparse, json, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import harness

CONFIGS = ('plain', 'ccl')

def worker(args):
    import timm
    from fastai.basics import Learner, CrossEntropyLossFlat, BCEWithLogitsLossFlat
    from fastai_softlabel.ccl import CCL
    multi = args.task == 'multi'
    model = timm.create_model('resnet18', pretrained=False, num_classes=args.classes)
    learn = Learner(harness.random_dls(args, multi_label=multi), model, loss_func=BCEWithLogitsLossFlat() if multi else CrossEntropyLossFlat(),
                    cbs=[CCL()] if args.worker == 'ccl' else [])
    print(json.dumps(harness.time_fit(learn, args)))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_args(p)
    p.add_argument('--task', choices=['single', 'multi'], default='single', help="class indices with cross entropy, or multi-hot targets with BCE")
    args = harness.finish_args(p.parse_args())
    if args.worker: return worker(args)
    runs, med = harness.run_workers(__file__, CONFIGS, args)
    mk = harness.mem_key(args)
    ratios = {'step_time': med['ccl']['step_s']/med['plain']['step_s'], 'step_time_paired': harness.paired_ratio(runs, 'plain', 'ccl'),
              'peak_memory': med['ccl'][mk]/med['plain'][mk]}
    if med['plain'].get('peak_rss_growth_bytes'):
        ratios['peak_rss_growth'] = med['ccl']['peak_rss_growth_bytes']/med['plain']['peak_rss_growth_bytes']
    print(f"\nstep time plain {med['plain']['step_s']*1e3:.1f} ms, CCL {med['ccl']['step_s']*1e3:.1f} ms: ratio {ratios['step_time']:.3f}"
          f" (median of the {args.repeats} back-to-back ratios: {ratios['step_time_paired']:.3f})")
    print('peak memory ratio ' + ', '.join(f'{k} {v:.3f}' for k, v in ratios.items() if not k.startswith('step_time')))
    harness.write_json('ccl' if args.task == 'single' else 'ccl_multi', args, dict(model='resnet18 (timm, pretrained=False)', task=args.task, runs=runs, median=med, ratios=ratios))

if __name__ == '__main__': main()
