"""Training throughput (items/s over a whole training epoch, data loading included) of every method of `softlabel`
against the reference method (erm or baseline) in the same run, and of the two data paths of `array_image_dls`:
uint8 tensors (the default) and a PIL image per item (fastai's `ImageBlock`, taken when `item_tfms` are given).

One process; the configurations alternate round by round after one unrecorded round, each a fresh Learner fitting one
epoch (validation skipped); medians over rounds. Data: random uint8 images with a fixed seed, timm ResNet-18 without
pretrained weights, the same pipeline as `softlabel` (`array_image_dls`, ImageNet normalisation, `method_setup`).

    python bench/bench_throughput.py                   # multi-label methods against erm, CPU, 64 px
    python bench/bench_throughput.py --task single     # single-label methods against baseline
    python bench/bench_throughput.py --device cuda --size 224
"""
import argparse, json, platform, statistics, sys, time
from pathlib import Path

def loader_items_per_s(dls):
    "Items/s of one pass over the training loader alone"
    t = time.perf_counter(); n = 0
    for xb, yb in dls.train: n += len(xb)
    return n/(time.perf_counter() - t)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--task', choices=['single', 'multi'], default='multi')
    p.add_argument('--device', default='cpu')
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--bs', type=int, default=32)
    p.add_argument('--n', type=int, default=512, help='training items per epoch')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--out', default=None, help='JSON file (default bench/results/throughput_<task>_<device>.json)')
    args = p.parse_args()
    import numpy as np, torch
    from fastai.vision.all import Learner, Normalize, imagenet_stats, IndexSplitter, Resize, Callback, CancelValidException
    from fastai_softlabel.cli import SINGLE_METHODS, MULTI_METHODS
    from fastai_softlabel.data import array_image_dls
    from fastai_softlabel.experiments import method_setup
    from fastai_softlabel.models import create_backbone
    if args.threads: torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n, k = args.n + args.bs, 7
    images = rng.integers(0, 256, (n, args.size, args.size, 3), dtype=np.uint8)
    labels = (rng.random((n, k)) < 0.3).astype(np.uint8) if args.task == 'multi' else rng.integers(0, k, n)
    names = [f'c{i}' for i in range(k)]
    methods = list(MULTI_METHODS if args.task == 'multi' else SINGLE_METHODS)
    ref = methods[0]
    def dls_for(pil):
        kw = dict(item_tfms=[]) if pil else {}   # item_tfms (even none) take the PIL path
        return array_image_dls(images, labels, names, splitter=IndexSplitter(range(args.n, n)), bs=args.bs, num_workers=0,
                               device=torch.device(args.device), batch_tfms=[Normalize.from_stats(*imagenet_stats)], **kw)
    dls = {'tensor': dls_for(False), 'pil': dls_for(True)}
    class TrainOnly(Callback):
        def before_train(self): self.t0 = time.perf_counter()
        def after_train(self):
            if args.device.startswith('cuda'): torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.t0
        def before_validate(self): raise CancelValidException
    configs = methods + [f'{ref} (PIL path)']
    def run(config):
        method = config.split(' ')[0]
        torch.manual_seed(0)
        model = create_backbone('resnet18', k)
        loss, cbs = method_setup(method, model, labels[:args.n] if args.task == 'single' else None, k)
        timer = TrainOnly()
        learn = Learner(dls['pil' if 'PIL' in config else 'tensor'], model, loss_func=loss, cbs=cbs + [timer])
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
        return len(learn.dls.train)*args.bs/timer.seconds
    runs = {c: [] for c in configs}
    loader = {'tensor': [], 'pil': []}
    for r in range(args.rounds + 1):
        for path in loader:
            v = loader_items_per_s(dls[path])
            if r: loader[path].append(v)
        for c in configs:
            v = run(c)
            if r: runs[c].append(v)
            print(f"round {r}{' (unrecorded)' if not r else ''} {c:22s} {v:8.1f} items/s", flush=True)
    med = {c: statistics.median(v) for c, v in runs.items()}
    table = {c: dict(items_per_s=med[c], ratio_to_reference=med[c]/med[ref]) for c in configs}
    lmed = {k: statistics.median(v) for k, v in loader.items()}
    print(f"\n{'method':22s} {'items/s':>9s} {'vs ' + ref:>12s}")
    for c, t in table.items(): print(f"{c:22s} {t['items_per_s']:9.1f} {t['ratio_to_reference']:12.3f}")
    print(f"\ndata loading alone: tensor path {lmed['tensor']:.0f} items/s, PIL path {lmed['pil']:.0f} items/s "
          f"(x{lmed['tensor']/lmed['pil']:.2f})")
    out = Path(args.out or Path(__file__).parent/'results'/f"throughput_{args.task}_{args.device.split(':')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(benchmark='throughput', config=vars(args), reference=ref,
        machine=dict(python=platform.python_version(), torch=torch.__version__, cpu_threads=torch.get_num_threads(),
                     gpu=torch.cuda.get_device_name() if args.device.startswith('cuda') else None),
        runs=runs, median=table, loader_items_per_s=dict(runs=loader, median=lmed)), indent=2))
    print(f"wrote {out}")

if __name__ == '__main__': main()
