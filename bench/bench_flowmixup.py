"""Step time and peak memory of ERM, fastai's MixUp, Manifold Mixup mode and FlowMixup (1 and 2 modules, op True/False),
each against its FLOP ratio to ERM, in one run (ResNet-18 from timm, no pretrained weights, mixing at the input of
the 3rd and 5th residual blocks, `layer2.0` and `layer3.0`, as in the paper).

The FLOP ratio of a configuration is counted with `torch.utils.flop_counter.FlopCounterMode` over one training forward
pass with the mixing active, divided by ERM's (the backward pass scales the same way layer by layer). Targets: step
time within 1.05x of the FLOP ratio; Manifold Mixup mode within 1.05x of fastai's MixUp.

    python bench/bench_flowmixup.py                  # CPU, 64 px
    python bench/bench_flowmixup.py --device cuda    # GPU, 224 px
"""
import argparse, json, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import harness

POINTS = ['layer2.0', 'layer3.0']
CONFIGS = ('erm', 'fastai_mixup', 'manifold_mixup', 'flow1_op', 'flow1_noop', 'flow2_op', 'flow2_noop')

def callbacks(name):
    from fastai.callback.mixup import MixUp
    from fastai_softlabel.flowmixup import FlowMixup, ManifoldMixup
    return {'erm': [], 'fastai_mixup': [MixUp()], 'manifold_mixup': [ManifoldMixup(POINTS)],
            'flow1_op': [FlowMixup(POINTS[:1])], 'flow1_noop': [FlowMixup(POINTS[:1], op=False)],
            'flow2_op': [FlowMixup(POINTS)], 'flow2_noop': [FlowMixup(POINTS, op=False)]}[name]

def learner(args, name):
    import timm
    from fastai.basics import Learner, CrossEntropyLossFlat
    model = timm.create_model('resnet18', pretrained=False, num_classes=args.classes)
    return Learner(harness.random_dls(args), model, loss_func=CrossEntropyLossFlat(), cbs=callbacks(name))

def forward_flops(args, name):
    "FLOPs of one training forward pass with the configuration's mixing active"
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from fastai.basics import Callback, CancelFitException
    counted = {}
    class Count(Callback):
        order = -5
        def before_batch(self):
            self.mode = FlopCounterMode(display=False); self.mode.__enter__()
        def after_pred(self):
            self.mode.__exit__(None, None, None); counted['flops'] = self.mode.get_total_flops(); raise CancelFitException
    args_cpu = argparse.Namespace(**{**vars(args), 'device': 'cpu', 'steps': 1, 'warmup': 0, 'bs': 4})
    learn = learner(args_cpu, name)
    learn.add_cb(Count())
    learn.fit(1, 1e-3)
    return counted['flops']

def worker(args):
    learn = learner(args, args.worker)
    res = harness.time_fit(learn, args)
    res['forward_flops'] = forward_flops(args, args.worker)
    print(json.dumps(res))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_args(p)
    p.add_argument('--configs', default=','.join(CONFIGS), help='comma-separated subset of ' + ', '.join(CONFIGS) + ' (erm always runs)')
    args = harness.finish_args(p.parse_args())
    if args.worker: return worker(args)
    configs = ['erm'] + [c for c in args.configs.split(',') if c in CONFIGS and c != 'erm']
    runs, med = harness.run_workers(__file__, configs, args)
    mk = harness.mem_key(args)
    erm = med['erm']
    table = {}
    for c in configs:
        flop = med[c]['forward_flops']/erm['forward_flops']
        time_ratio = med[c]['step_s']/erm['step_s']
        table[c] = dict(flop_ratio=flop, step_time_ratio=time_ratio, time_over_flop=time_ratio/flop,
                        peak_memory_ratio=med[c][mk]/erm[mk])
    manifold_vs_mixup = med['manifold_mixup']['step_s']/med['fastai_mixup']['step_s'] if {'manifold_mixup', 'fastai_mixup'} <= set(med) else None
    print(f"\n{'config':16s} {'FLOP ratio':>10s} {'time ratio':>10s} {'time/FLOP':>10s} {'memory':>8s}")
    for c, r in table.items():
        print(f"{c:16s} {r['flop_ratio']:10.3f} {r['step_time_ratio']:10.3f} {r['time_over_flop']:10.3f} {r['peak_memory_ratio']:8.3f}")
    if manifold_vs_mixup: print(f"Manifold Mixup mode / fastai MixUp step time: {manifold_vs_mixup:.3f}")
    harness.write_json('flowmixup', args, dict(model='resnet18 (timm, pretrained=False)', points=POINTS, runs=runs,
                                               median=med, ratios=table, manifold_over_fastai_mixup=manifold_vs_mixup))

if __name__ == '__main__': main()
