"""CCL's label softness p̄ per epoch for a grid of lr_CCL under both recipes, on the synthetic data and HAM10000 at 28 px.

Each configuration is one run of the `softlabel` command (`--methods ccl`, seed 0, patience larger than the epochs, so
that the whole trajectory is seen). The epoch a patience of p would have frozen the dictionary is read off the
trajectory with `epochs_without_drop` (the trajectory up to that epoch is the same with or without the freeze).
Writes bench/results/pbar_study.json; `--data` skips HAM10000 cleanly when its file is absent.

    python bench/pbar_study.py --ham ../shared/data/ham10000/ham10000_isic2018_28.npz
"""
import argparse, json, subprocess, sys, tempfile, time
from pathlib import Path

def trajectory(data_args, recipe, lr_ccl, epochs, threads):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)/'r'
        cmd = [str(Path(sys.executable).parent/'softlabel'), *data_args, '--methods', 'ccl', '--recipe', recipe,
               '--lr-ccl', str(lr_ccl), '--epochs', str(epochs), '--ccl-patience', str(epochs + 1), '--progress', 'log',
               '--threads', str(threads), '--out', str(out)]
        t = time.time()
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        run = next((out/'runs').iterdir())
        h = json.loads((run/'ccl_history.json').read_text())['history']
        row = json.loads((run/'row.json').read_text())
        return dict(p_bar=[r['p_bar'] for r in h], head_ce=[r['head_ce'] for r in h], accuracy=row.get('accuracy'),
                    seconds=round(time.time() - t, 1))

def freeze_epoch(pbars, patience):
    from fastai_softlabel.ccl import epochs_without_drop
    for e in range(len(pbars)):
        if epochs_without_drop(pbars[:e + 1]) >= patience: return e
    return None

def first_steps(lrs=(1.0, 5e-3), epochs=2):
    "p̄ after every step of a short fast-recipe fit on the synthetic default data: where the epoch-end values do not look"
    import torch
    from types import SimpleNamespace
    from fastai.callback.core import Callback
    from fastai_softlabel.experiments import synthetic_dataset, run_learner, EpochLog
    d = synthetic_dataset('single', 100)
    class Probe(Callback):
        order = 60
        def before_fit(self): self.p = []
        def after_step(self): self.p.append(float(self.learn.ccl.ccl_head.soft_labels().diagonal().mean()))
    out = {}
    for lr in lrs:
        args = SimpleNamespace(bs=32, size=None, backbone='resnet18', lr_ccl=lr, in_chans=3, aug='none', epochs=epochs, lr=2e-3,
                               recipe='fast', opt='adam', wd=0.01, ccl_patience=100, progress='log')
        learn,_ = run_learner(d, 'ccl', 0, 0., args)
        learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, EpochLog)])
        probe = Probe(); learn.add_cb(probe)
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 2e-3, wd=0.01)
        out[str(lr)] = dict(p_bar=probe.p, steps_per_epoch=len(learn.dls.train))
    return out

def start_pbar(k, width=512, seeds=range(5)):
    "p̄ of a freshly created head (the dictionary before any step), mean over seeds"
    import torch
    from fastai_softlabel.ccl import CCLHead
    vals = []
    for s in seeds:
        torch.manual_seed(s)
        vals.append(float(CCLHead(8, k, (width,)).soft_labels().diagonal().mean()))
    return sum(vals)/len(vals)

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--ham', default='../shared/data/ham10000/ham10000_isic2018_28.npz')
    p.add_argument('--lrs', default='5e-4,5e-3,5e-2,0.5,1.0')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out', default='bench/results/pbar_study.json')
    p.add_argument('--first-steps-only', action='store_true', help='add the per-step p̄ of the first epochs to an existing --out')
    args = p.parse_args()
    if args.first_steps_only:
        res = json.loads(Path(args.out).read_text())
        res['first_steps_synthetic_fast'] = first_steps()
        Path(args.out).write_text(json.dumps(res, indent=1))
        sys.exit(0)
    lrs = [float(x) for x in args.lrs.split(',')]
    datasets = [('synthetic', [], 8, dict(fast=10, paper=30))]
    if Path(args.ham).exists(): datasets.append(('ham10000_28', ['--data', args.ham, '--valid', 'test'], 7, dict(fast=10, paper=15)))
    else: print(f'{args.ham} not found: HAM10000 skipped')
    res = dict(command=' '.join(sys.argv), started=time.strftime('%Y-%m-%d %H:%M:%S'), runs=[])
    for name,data_args,k,epochs in datasets:
        res[f'start_p_bar_{name}'] = start_pbar(k)
        for recipe in ('fast', 'paper'):
            for lr in lrs:
                r = trajectory(data_args, recipe, lr, epochs[recipe], args.threads)
                r.update(data=name, recipe=recipe, lr_ccl=lr, epochs=epochs[recipe],
                         freeze_epoch={pt: freeze_epoch(r['p_bar'], pt) for pt in (2, 3, 5, 10)})
                res['runs'].append(r)
                print(name, recipe, lr, 'p_bar', ' '.join(f'{x:.3f}' for x in r['p_bar']), 'acc', r['accuracy'], f"{r['seconds']} s", flush=True)
                Path(args.out).write_text(json.dumps(res, indent=1))
