"""Step time and peak memory of plain training vs CCL, measured in one run (ResNet-18 from timm, no pretrained weights).

    python bench/bench_ccl.py                        # CPU, 64 px
    python bench/bench_ccl.py --device cuda          # GPU, 224 px
    python bench/bench_ccl.py --task multi           # multi-label targets with a BCE loss (multi-label CCL)

Step time is measured twice. Each configuration in fresh processes, repeats in alternation (also peak memory): the
ratio of the medians, and the median of each repeat's back-to-back ratio. Then both Learners in one process taking
turns, 5 batches each per round (`--rounds`), which puts the machine's drift on both alike: the ratio of the medians
over all timed batches, and the median of the rounds' ratios. Each JSON in bench/results/ records its settings.
"""
import argparse, json, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import harness

CONFIGS = ('plain', 'ccl')

def make_learner(args, with_ccl:bool):
    import timm, torch
    from fastai.basics import Learner, CrossEntropyLossFlat, BCEWithLogitsLossFlat
    from fastai_softlabel.ccl import CCL
    multi = args.task == 'multi'
    torch.manual_seed(0)
    model = timm.create_model('resnet18', pretrained=False, num_classes=args.classes)
    return Learner(harness.random_dls(args, multi_label=multi), model, loss_func=BCEWithLogitsLossFlat() if multi else CrossEntropyLossFlat(),
                   cbs=[CCL()] if with_ccl else [])

def worker(args):
    if args.worker == 'interleaved':   # both Learners in one process, taking turns
        learners = {'plain': make_learner(args, False), 'ccl': make_learner(args, True)}
        per_round = harness.time_interleaved(learners, args, rounds=args.rounds)
        return print(json.dumps(dict(per_round=per_round, **harness.interleaved_ratio(per_round, 'plain', 'ccl'))))
    print(json.dumps(harness.time_fit(make_learner(args, args.worker == 'ccl'), args)))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_args(p)
    p.add_argument('--task', choices=['single', 'multi'], default='single', help="class indices with cross entropy, or multi-hot targets with BCE")
    p.add_argument('--rounds', type=int, default=20, help="rounds of the interleaved measurement (5 batches per Learner per round)")
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
    inter = harness.run_worker(__file__, 'interleaved', args)
    ratios['step_time_interleaved'] = inter['ratio']
    print(f"interleaved in one process ({inter['rounds']} rounds of {inter['batches_per_round']} batches each): plain {inter['base_step_s']*1e3:.1f} ms, "
          f"CCL {inter['other_step_s']*1e3:.1f} ms: ratio {inter['ratio']:.3f} (median of the rounds' ratios: {inter['ratio_per_round_median']:.3f})")
    harness.write_json('ccl' if args.task == 'single' else 'ccl_multi', args, dict(model='resnet18 (timm, pretrained=False)', task=args.task, runs=runs, median=med,
                                                                                  interleaved=inter, ratios=ratios))

if __name__ == '__main__': main()
