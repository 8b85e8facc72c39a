"""Golden values: what the library computed before a refactoring, to check that it computes the same after.

`python tests/golden/record.py` (from the repository root) writes, beside this file:
- `fits.json`: seeded 2-epoch fits of CCL, CCL with FlowMixup, FlowMixup, and multi-label CCL, each as its Recorder values,
  CCL's history and SHA-256 digests of every tensor of the model, the head and the head's optimizer (bit-identical or not);
- `names.json`: every name of every module's `__all__`;
- `export.pkl` and `export_check.pt`: an exported Learner (CCL and FlowMixup attached) and the predictions it gave;
- `results/`: a results folder of the `softlabel` command (tables, run folders, no model files), and the command that made it.
Recorded once, with the torch version; `tests/test_golden.py` compares today's code with them. Re-record only on purpose.
"""
import hashlib, importlib, json, pkgutil, shutil, subprocess, sys
from pathlib import Path
import numpy as np, torch
from fastai.vision.all import *

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from conftest import tiny_cnn, make_dls, item_images
from fastai_softlabel.ccl import CCL
from fastai_softlabel.flowmixup import FlowMixup
from fastai_softlabel.data import synthetic_class_images, array_image_dls

# the results folder: a short comparison of two methods, one of them CCL, with the epoch chosen on a held-out share
RESULTS_ARGS = ['--epochs', '2', '--n-per-class', '8', '--size', '16', '--bs', '16', '--backbone', 'resnet10t', '--progress', 'log',
                '--methods', 'baseline,ccl', '--seeds', '0,1', '--select', '0.25', '--save-model', 'none']

def digests(state:dict)->dict:
    "SHA-256 (first 16 hex digits) of each tensor of a (nested) state dict, by its path"
    out = {}
    def walk(o, path):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            out[path] = f"{t.dtype}{tuple(t.shape)}:" + hashlib.sha256(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'').hexdigest()[:16]
        elif isinstance(o, dict):
            for k,v in o.items(): walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(o, (list, tuple)):
            for i,v in enumerate(o): walk(v, f"{path}[{i}]")
    walk(state, '')
    return out

def exact(v):
    "A float as its exact hex form (bit-identical comparison), other values as they are"
    if isinstance(v, (float, np.floating)): return float(v).hex()
    if isinstance(v, torch.Tensor) and v.numel() == 1: return float(v).hex()
    return v

def fingerprint(learn:Learner)->dict:
    "What a fit left: the Recorder's values and losses, CCL's history and freeze, every tensor's digest"
    out = dict(values=[[exact(v) for v in row] for row in learn.recorder.values], losses=[exact(l) for l in learn.recorder.losses],
               metric_names=list(learn.recorder.metric_names), model=digests(learn.model.state_dict()))
    ccl = getattr(learn, 'ccl', None)
    if ccl is not None:
        out.update(history=[{k: exact(v) for k,v in h.items()} for h in ccl.history], frozen_at=ccl.frozen_at,
                   head=digests(ccl.ccl_head.state_dict()), head_opt=digests(ccl.ccl_opt.state_dict()))
    return out

def multi_label_dls(bs=16):
    "Images of 4 classes; odd classes also carry the previous class's label"
    d = synthetic_class_images(n_per_class=16, size=16, n_classes=4, seed=0)
    k = d['labels']
    y = (np.eye(4)[k] + (k % 2 == 1)[:, None]*np.eye(4)[np.maximum(k - 1, 0)]).clip(0, 1)
    return array_image_dls(d['images'], y.astype(np.uint8), d['class_names'], bs=bs, num_workers=0, shuffle=False)

FITS = {   # name: (data, callbacks), each made afresh
    'ccl': lambda: (make_dls(), [CCL()]),
    'ccl+flowmixup': lambda: (make_dls(), [CCL(patience=1), FlowMixup(['1', '2'])]),   # patience 1: the dictionary freezes
    'flowmixup': lambda: (make_dls(), [FlowMixup(['1', '2'])]),
    'multi-label ccl': lambda: (multi_label_dls(), [CCL()]),
}

def golden_fit(name:str, path)->Learner:
    "The seeded 2-epoch one-cycle fit `name` of `FITS`"
    set_seed(0)
    dls,cbs = FITS[name]()
    multi = 'multi' in name
    learn = Learner(dls, tiny_cnn(dls.c), path=path, cbs=cbs, metrics=[] if multi else [accuracy],
                    loss_func=BCEWithLogitsLossFlat() if multi else CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 1e-2)
    return learn

def all_names()->dict:
    "`{module: sorted __all__}` of every module of the package"
    import fastai_softlabel
    out = {}
    for m in pkgutil.iter_modules(fastai_softlabel.__path__):
        if m.name.startswith('_'): continue
        mod = importlib.import_module(f'fastai_softlabel.{m.name}')
        out[m.name] = sorted(getattr(mod, '__all__', []))
    return out

def export_learner(path)->Learner:
    "A Learner trained for one epoch with CCL and FlowMixup attached, to export"
    set_seed(0)
    dls = make_dls()
    learn = Learner(dls, tiny_cnn(dls.c), path=path, cbs=[CCL(widths=(32, 16)), FlowMixup(['1'])], loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    return learn

def exported_predictions(learn:Learner, images:list)->Tensor:
    "Probabilities for `images` (uint8 H×W×C arrays) through `test_dl`, as a user of the exported Learner gets them"
    with learn.no_bar(): return learn.get_preds(dl=learn.dls.test_dl(images))[0]

def record():
    import tempfile
    (HERE/'fits.json').write_text(json.dumps(dict(torch=torch.__version__,
        fits={n: fingerprint(golden_fit(n, Path(tempfile.mkdtemp()))) for n in FITS}), indent=1) + '\n')
    (HERE/'names.json').write_text(json.dumps(all_names(), indent=1) + '\n')
    learn = export_learner(Path(tempfile.mkdtemp()))
    learn.export(HERE/'export.pkl')
    images = item_images(learn.dls, range(8))
    torch.save(dict(torch=torch.__version__, images=images, preds=exported_predictions(learn, images),
                    soft_labels=learn.ccl.soft_labels), HERE/'export_check.pt')
    out = HERE/'results'
    shutil.rmtree(out, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp())
    r = subprocess.run([str(Path(sys.executable).parent/'softlabel'), *RESULTS_ARGS, '--out', 'res'], cwd=tmp, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.copytree(tmp/'res', out, ignore=shutil.ignore_patterns('.softlabel-lock', '*.pkl', '*.pth', 'report.html', '*.png'))
    (HERE/'results_args.json').write_text(json.dumps(dict(torch=torch.__version__, args=RESULTS_ARGS)) + '\n')

if __name__ == '__main__': record()
