"""How well multi-label CCL recovers a known label similarity: synthetic multi-label images, Spearman correlation of
the learned soft-label matrix's off-diagonal entries with the labels' true similarity, per seed.

    python bench/bench_ccl_multilabel_recovery.py [--seeds 0,1,2] [--epochs 15]
"""
import argparse, json, sys, time
from pathlib import Path

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seeds', default='0,1,2'); p.add_argument('--epochs', type=int, default=15)
    p.add_argument('--n-items', type=int, default=400); p.add_argument('--noise', type=float, default=1.5)
    p.add_argument('--width', type=float, default=1.5); p.add_argument('--p-second', type=float, default=0.3)
    p.add_argument('--lr-ccl', type=float, default=1.0); p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'ccl_multilabel_recovery_cpu.json'))
    a = p.parse_args()
    import numpy as np, torch
    from scipy.stats import spearmanr
    from fastai.vision.all import Learner, BCEWithLogitsLossFlat, ConvLayer, nn, set_seed
    from fastai_softlabel.ccl import CCL
    from fastai_softlabel.data import synthetic_multilabel_images, array_image_dls
    torch.set_num_threads(a.threads)
    runs = []
    for seed in map(int, a.seeds.split(',')):
        t = time.time()
        d = synthetic_multilabel_images(n_items=a.n_items, size=16, n_labels=6, noise=a.noise, width=a.width, p_second=a.p_second,
                                        together=((0, 5),), seed=seed)
        dls = array_image_dls(d['images'], d['labels'], d['class_names'], bs=32, num_workers=0)
        set_seed(seed)
        model = nn.Sequential(ConvLayer(3, 16, stride=2), ConvLayer(16, 16, stride=2), ConvLayer(16, 16), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(16, 6))
        learn = Learner(dls, model, loss_func=BCEWithLogitsLossFlat(), cbs=CCL(widths=(32, 16), lr_ccl=a.lr_ccl, patience=100))
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(a.epochs, 1e-2)
        P = learn.ccl.soft_labels.numpy(); off = ~np.eye(6, dtype=bool)
        Q = P.copy(); np.fill_diagonal(Q, -1)
        runs.append(dict(seed=seed, spearman=float(spearmanr(P[off], d['similarity'][off]).correlation),
                         pair_closest=bool(Q[0].argmax() == 5 and Q[5].argmax() == 0), seconds=time.time() - t,
                         soft_labels=P.round(4).tolist(), similarity=d['similarity'].round(4).tolist()))
        print(f"seed {seed}: Spearman {runs[-1]['spearman']:.3f}, labels 0 and 5 each other's closest: {runs[-1]['pair_closest']}")
    mean = float(np.mean([r['spearman'] for r in runs]))
    print(f"mean Spearman over {len(runs)} seeds: {mean:.3f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(dict(benchmark='ccl_multilabel_recovery', config=vars(a), mean_spearman=mean, runs=runs), indent=2))
    print(f"wrote {a.out}")

if __name__ == '__main__': main()
