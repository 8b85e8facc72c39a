"Shared fixtures: tiny synthetic image data and models that train in well under a second on a CPU."
import inspect, os
import pytest, torch
from fastai.vision.all import *
from fastai_softlabel.data import synthetic_class_images, array_image_dls

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available(): return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if 'cuda' in item.keywords: item.add_marker(skip)

_GPU_ENV = os.environ.get('CUDA_VISIBLE_DEVICES')   # as the machine has it, for the `cuda` tests

@pytest.fixture(scope='session', autouse=True)
def cpu_session():
    """The whole session runs on the CPU, also on a machine with a GPU (`cuda` tests excepted, see `pinned_device`).
    fastai's DataLoaders, `to_device` and the `softlabel` command otherwise train on the GPU when there is one, while a
    test compares with tensors it made on the CPU. In this process fastai's `defaults.use_cuda=False` pins them; the
    subprocesses the tests and their module fixtures start (the command, DDP workers, the docs build) see no GPU."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(defaults, 'use_cuda', False)
        mp.setenv('CUDA_VISIBLE_DEVICES', '')
        yield

@pytest.fixture(autouse=True)
def pinned_device(request, monkeypatch):
    "A `cuda` test gets the GPU back, for itself and the processes it starts"
    if 'cuda' not in request.keywords: return
    monkeypatch.setattr(defaults, 'use_cuda', None)
    if _GPU_ENV is None: monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
    else: monkeypatch.setenv('CUDA_VISIBLE_DEVICES', _GPU_ENV)

def pytest_pycollect_makeitem(collector, name, obj):
    "Collect only tests defined in the test module, not fastcore's `test_eq`, `test_close`... brought in by star imports"
    if inspect.isfunction(obj) and name.startswith('test') and obj.__module__ != getattr(collector, 'module', collector).__name__:
        return []

def tiny_cnn(n_out, c=16, extra=()):
    "Conv-BN-ReLU ×2, pooling, then the classifier Linear (whose input are the pooled features)"
    return nn.Sequential(ConvLayer(3, c, stride=2), ConvLayer(c, c, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         *extra, nn.Linear(c, n_out))

def make_dls(n_per_class=16, size=16, n_classes=4, bs=16, seed=0, device='cpu', **kwargs):
    d = synthetic_class_images(n_per_class=n_per_class, size=size, n_classes=n_classes, seed=seed)
    return array_image_dls(d['images'], d['labels'], d['class_names'], bs=bs, num_workers=0, device=device, **kwargs)

@pytest.fixture
def dls(): return make_dls()

def wfdb_folder(d, n=12, corrupt=False):
    "A folder of `n` two-lead WFDB records R000, R001, ... (1000 Hz, 2 s) with Dx codes; `corrupt`: R000's header cut short"
    wfdb = pytest.importorskip('wfdb')
    import numpy as np
    d.mkdir()
    t = np.arange(2000)/1000
    for i in range(n):
        x = np.stack([np.sin(2*np.pi*(3 + i % 3)*t + i), np.cos(2*np.pi*2*t)])   # each record its own (a copy would be refused as leakage)
        wfdb.wrsamp(f'R{i:03d}', fs=1000, units=['mV']*2, sig_name=['I', 'II'], p_signal=x.T, fmt=['16']*2,
                    comments=[f"Dx: {'164889003' if i % 2 else '59118001'}"], write_dir=str(d))
    if corrupt: (d/'R000.hea').write_text('R000 2\n')
    return d

def item_images(dls, items):
    "The images of row numbers `items` of `array_image_dls`'s data, as new (H, W, C) uint8 arrays (an exported Learner takes no row number)"
    rows = dls.train_ds.tls[0].tfms.fs[0].images
    return [rows[i].permute(1, 2, 0).numpy() for i in items]

def params_of(module):
    "Detached copies of all parameters and buffers, by name"
    return {k: v.detach().clone() for k, v in module.state_dict().items()}

def assert_same(a, b, msg=''):
    assert a.keys() == b.keys(), msg
    for k in a: assert torch.equal(a[k], b[k]), f"{msg}: {k} differs"

def snapshot(o):
    "Deep copy of nested dicts/lists/tuples of tensors and plain values"
    if isinstance(o, Tensor): return o.detach().clone()
    if isinstance(o, dict): return {k: snapshot(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, L)): return [snapshot(v) for v in o]
    return o

def assert_nested_equal(a, b, path='state'):
    "Bitwise equality of two `snapshot`s"
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {list(a)} vs {list(b)}"
        for k in a: assert_nested_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)): assert_nested_equal(x, y, f"{path}[{i}]")
    else: assert a == b or (a != a and b != b), f"{path}: {a!r} vs {b!r}"

def no_hooks(model):
    "No forward (pre-)hook left on any module of `model`"
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())

class StopAfterBatches(Callback):
    "End the fit after `n` training batches"
    order = 99
    def __init__(self, n): self.n = n
    def after_batch(self):
        if self.training and self.train_iter >= self.n: raise CancelFitException

class CPUAutocast(Callback):
    "bf16 autocast on the CPU, the way fastai's MixedPrecision does it on a GPU"
    order = 10
    def before_batch(self): self.ac = torch.autocast('cpu', dtype=torch.bfloat16); self.ac.__enter__()
    def after_pred(self): self.learn.pred = self.pred.float()
    def after_loss(self): self.ac.__exit__(None, None, None)


import shutil
CHROMIUM, CHROMEDRIVER = shutil.which('chromium'), shutil.which('chromedriver')

@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    "Headless Chromium through Selenium, one per test module (skipped when Chromium is not installed)"
    if not (CHROMIUM and CHROMEDRIVER): pytest.skip("Chromium is not installed (Debian packages chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--no-first-run', '--disable-sync', '--window-size=1300,1600',
                 f'--user-data-dir={tmp_path_factory.mktemp("chromium-profile")}'):
        opts.add_argument(flag)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()

def softlabel_here(*args):
    "`softlabel args` in this process (`cli.main`, as the console script calls it), in the current folder; a non-zero exit fails the test"
    from fastai_softlabel.cli import main
    try: main(list(args))
    except SystemExit as e: assert not e.code, e
