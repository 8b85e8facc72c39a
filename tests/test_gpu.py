"""The callbacks on a GPU (`cuda` tests: skipped without CUDA; `bench/gpu.sh` runs them on a GPU machine): mixed
precision with CCL and FlowMixup together, multi-label CCL, save/load/export/predict, `torch.compile`, and the
`softlabel` command. Every other test pins the CPU (`conftest.pinned_device`), so the suite gives the same result with
and without CUDA."""
import json, subprocess, sys, warnings
from pathlib import Path
import numpy as np, pytest, torch
from fastai.vision.all import *
from conftest import tiny_cnn, make_dls, no_hooks, item_images
from fastai_softlabel.ccl import CCL
from fastai_softlabel.flowmixup import FlowMixup
from fastai_softlabel.data import synthetic_class_images, array_image_dls

pytestmark = pytest.mark.cuda

def gpu_learner(path, cbs, multi=False, model=None):
    d = synthetic_class_images(n_per_class=16, size=32, n_classes=4, seed=0)
    k = d['labels']
    y = (np.eye(4)[k] + (k % 2 == 1)[:, None]*np.eye(4)[np.maximum(k - 1, 0)]).clip(0, 1).astype(np.uint8) if multi else k
    dls = array_image_dls(d['images'], y, d['class_names'], bs=16, num_workers=0, device='cuda')
    return Learner(dls, model or tiny_cnn(4), path=path, loss_func=BCEWithLogitsLossFlat() if multi else CrossEntropyLossFlat(), cbs=cbs)

@pytest.mark.parametrize('multi', [False, True], ids=['single', 'multi'])
@pytest.mark.parametrize('amp', ['fp16', 'bf16'])
def test_ccl_and_flowmixup_under_mixed_precision(amp, multi, tmp_path):
    learn = gpu_learner(tmp_path, [CCL(widths=(32, 16)), FlowMixup(['0', '2']), GradientClip(1.)], multi=multi)
    learn = learn.to_fp16() if amp == 'fp16' else learn.to_bf16()
    learn.fit_one_cycle(2, 1e-3)
    c = learn.ccl
    assert all(p.dtype == torch.float32 and p.is_cuda for p in c.ccl_head.parameters())
    assert len(c.history) == 2 and all(np.isfinite(v) for h in c.history for v in h.values())
    assert c.ccl_opt.param_groups[0]['fused']    # the head's SGD is fused on the GPU and skips steps there
    assert no_hooks(learn.model)

def test_save_load_export_predict(tmp_path):
    learn = gpu_learner(tmp_path, [CCL(widths=(32, 16))])
    learn.fit(1, 1e-2)
    learn.save('g')
    other = gpu_learner(tmp_path, [CCL(widths=(32, 16))])
    other.load('g')
    assert torch.equal(other.ccl.soft_labels, learn.ccl.soft_labels) and other.ccl.history == learn.ccl.history
    other.fit(1, 1e-2)                          # resumes on the GPU: head and optimizer state there
    assert all(v.is_cuda for st in other.ccl.ccl_opt.state.values() for v in st.values() if isinstance(v, Tensor))
    learn.export(tmp_path/'g.pkl')
    loaded = load_learner(tmp_path/'g.pkl', cpu=False)
    img = item_images(learn.dls, [0])[0]
    assert loaded.predict(img)[0] == learn.predict(img)[0]

@pytest.mark.parametrize('which', ['flowmixup', 'ccl'])
def test_torch_compile(which, tmp_path):
    "A compiled model trains with each callback on the GPU (Inductor), mixing in training only"
    model = torch.compile(tiny_cnn(4))
    rows = []
    class Rows(Callback):
        order = 1
        def after_pred(self):
            if self.training and which == 'flowmixup': rows.append((self.flow_mixup.flow.pred.shape[0], self.xb[0].shape[0]))
    cbs = [FlowMixup(['_orig_mod.0', '_orig_mod.2'])] if which == 'flowmixup' else [CCL(widths=(32, 16))]
    learn = gpu_learner(tmp_path, [*cbs, Rows()], model=model)
    learn.fit(1, 1e-3)
    assert np.isfinite(learn.recorder.values[-1][0]) and no_hooks(model)
    if which == 'flowmixup': assert rows and all(r == 4*n for r, n in rows)   # two modules mixed: 4 rows per item
    else: assert len(learn.ccl.history) == 1 and np.isfinite(learn.ccl.history[0]['head_ce'])

def test_softlabel_command_runs_on_the_gpu(tmp_path):
    exe = Path(sys.executable).parent/'softlabel'
    r = subprocess.run([str(exe), '--epochs', '1', '--n-per-class', '8', '--size', '32', '--backbone', 'resnet10t', '--progress', 'log',
                        '--methods', 'baseline,ccl', '--out', 'res'], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path/'res'/'config.json').read_text())['device'] == torch.cuda.get_device_name()
