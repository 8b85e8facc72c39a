"""What one training step costs at PyTorch's dispatcher: the aten ops it runs and the host synchronisations among them.

On a GPU a host synchronisation stops the CPU until the GPU has finished the work queued so far; on the CPU the same
requests are visible at the dispatcher as the ops that hand a tensor's value to Python (`_local_scalar_dense` behind
`.item()`, `bool(t)`, `float(t)`), the ops whose output size depends on the data (`nonzero`, boolean-mask indexing,
`masked_select`, `unique`), and copies to the host (`.cpu()`, `.tolist()`, `.numpy()`, which on a CPU tensor never
reach the dispatcher and are therefore counted where Python calls them)."""
from collections import Counter
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from fastai.basics import Callback

aten = torch.ops.aten
_VALUE_OPS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default, aten.nonzero.default,
              aten.nonzero_static.default, aten.masked_select.default, aten.argwhere.default, aten._unique2.default,
              aten.unique_consecutive.default, aten.unique_dim.default, aten.allclose.default}

def _bool_index(func, args)->bool:
    "An `index`/`index_put` with a boolean mask among its indices (its output or work size depends on the data)"
    if func not in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default): return False
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in (args[1] or []))

# ops that only make a new view of a tensor, allocate it or mark the profiler: no kernel runs on a GPU for them
METADATA_OPS = {'detach', 't', 'view', '_unsafe_view', 'permute', 'expand', 'slice', 'select', 'unsqueeze', 'squeeze',
                'alias', 'as_strided', 'transpose', '_reshape_alias', 'split', 'split_with_sizes', 'unbind', 'lift_fresh',
                'empty', 'empty_like', 'empty_strided', 'new_empty', '_record_function_enter_new', '_record_function_exit'}

class StepCost(TorchDispatchMode):
    "Counts the aten ops that run while it is active, and the host synchronisations among them (`syncs`)"
    def __init__(self):
        super().__init__()
        self.ops,self.syncs = Counter(),Counter()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket.__name__)
        self.ops[name] += 1
        if func in _VALUE_OPS or _bool_index(func, args): self.syncs[name] += 1
        return func(*args, **(kwargs or {}))
    def __enter__(self):
        self._patched = {}
        for meth in ('cpu', 'tolist', 'numpy'):   # host copies that a CPU tensor serves without the dispatcher
            orig = getattr(torch.Tensor, meth)
            def counted(t, *a, _orig=orig, _meth=meth, **k):
                self.syncs[f'Tensor.{_meth}'] += 1
                return _orig(t, *a, **k)
            self._patched[meth] = orig
            setattr(torch.Tensor, meth, counted)
        return super().__enter__()
    def __exit__(self, *exc):
        for meth,orig in self._patched.items(): setattr(torch.Tensor, meth, orig)
        return super().__exit__(*exc)
    @property
    def n_ops(self)->int: return sum(self.ops.values())
    @property
    def n_syncs(self)->int: return sum(self.syncs.values())
    @property
    def n_kernels(self)->int:
        "The ops among `ops` that do arithmetic or copy data (on a GPU: launch a kernel)"
        return sum(n for op,n in self.ops.items() if op not in METADATA_OPS)

class CountStep(Callback):
    "Counts one training batch, the `at`-th of the fit, from the first `before_batch` to the last `after_batch` callback, then ends the fit"
    order = -1000
    def __init__(self, at:int=2): self.at,self.cost = at,None
    def before_fit(self): self.seen = 0
    def before_batch(self):
        if not self.training: return
        self.seen += 1
        if self.seen == self.at:
            self.mode = StepCost(); self.mode.__enter__()
            self.learn.add_cb(_EndCount(self))

class _EndCount(Callback):
    order = 1000
    def __init__(self, counter): self.counter = counter
    def after_batch(self):
        c = self.counter
        c.mode.__exit__(None, None, None)
        c.cost = c.mode
        self.learn.remove_cb(self)
        from fastai.basics import CancelFitException
        raise CancelFitException
