"""The shape of the code base: no import circle among the package's modules, no module doing several jobs (by its length),
CCL's events in its class body, one registry of methods (a method added in a test reaches the parser, the checks and the
runs), `--config` reproducing a results folder, and the private torch functions the library relies on."""
import ast, functools, json, re, shutil, subprocess, sys
from pathlib import Path
import pandas as pd, pytest, torch

PKG = Path(__file__).parent.parent/'fastai_softlabel'
MODULES = {p.stem: p for p in PKG.glob('*.py') if p.stem not in ('__init__', '_modidx')}
EXE = Path(sys.executable).parent/'softlabel'

def package_imports(path:Path)->set:
    "The package's modules that `path` imports, at the top or inside a function (a lazy import closes a circle too)"
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            mod = n.module or ''
            if n.level == 1 and mod: out.add(mod.split('.')[0])
            elif n.level == 1: out |= {a.name for a in n.names if a.name in MODULES}   # from . import x
            elif mod.startswith('fastai_softlabel.'): out.add(mod.split('.')[1])
            elif mod == 'fastai_softlabel': out |= {a.name for a in n.names if a.name in MODULES}
        elif isinstance(n, ast.Import):
            out |= {a.name.split('.')[1] for a in n.names if a.name.startswith('fastai_softlabel.')}
    return out & set(MODULES)

def import_cycle(graph:dict)->list|None:
    "One circle of imports in `graph` (`{module: imported modules}`), as the modules along it, or None"
    state,path = {},[]
    def visit(m):
        state[m] = 'open'; path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 'open': return path[path.index(n):] + [n]
            if n not in state and (c := visit(n)): return c
        state[m] = 'done'; path.pop()
    for m in sorted(graph):
        if m not in state and (c := visit(m)): return c
    return None

def test_the_cycle_finder_finds_a_circle_and_only_one():
    assert import_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert import_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None

def test_no_import_circle_among_the_package_modules():
    graph = {m: package_imports(p) - {m} for m,p in MODULES.items()}
    assert graph['experiments'] >= {'methods', 'arguments'} and 'cli' not in graph['experiments']   # the walk sees imports
    cycle = import_cycle(graph)
    assert cycle is None, "import circle: " + ' → '.join(cycle)

def test_no_module_does_several_jobs():
    long = {m: n for m,p in MODULES.items() if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"
    assert len((PKG/'ccl.py').read_text().splitlines()) <= 450

def test_ccl_events_are_in_its_class_body():
    "No event of CCL is patched in from outside its class (fastai calls `CCL.<event>`; one class shows the whole method)"
    from fastai.callback.core import _events
    tree = ast.parse((PKG/'ccl.py').read_text())
    patched = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and any(getattr(d, 'id', None) == 'patch' for d in n.decorator_list)]
    assert not patched, f"@patch in ccl.py: {patched}"
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == 'CCL')
    body = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    from fastai_softlabel.ccl import CCL
    defined = {e for e in _events if callable(getattr(CCL, e, None)) and getattr(CCL, e).__qualname__.startswith('CCL.')}
    assert defined and defined <= body, f"events defined outside the class body: {defined - body}"

def test_private_torch_functions_are_listed_and_present():
    "Each private torch function the library uses is in `core.PRIVATE_TORCH`, and this torch still has it"
    from fastai_softlabel.core import PRIVATE_TORCH
    missing = [f for f in PRIVATE_TORCH['functions'] if not callable(functools.reduce(lambda o, a: getattr(o, a, None), f.split('.')[1:], torch))]
    assert not missing, f"torch {torch.__version__} no longer has {missing}: the library needs a replacement for them"
    used = set()
    for p in MODULES.values():
        text = p.read_text()
        used |= set(re.findall(r'\btorch(?:\.[A-Za-z]\w*)*\.(?:_\w+|native_\w+)', text))
        used |= {f'_{a}' for a in re.findall(r"\b(?:opt|optimizer)\._(\w+)", text)}           # attributes of a torch optimizer
        used |= set(re.findall(r"'(_step_supports_amp_scaling|_need_device_dtype_check_for_fused|_\w*fused\w*)'", text))
    listed = set(PRIVATE_TORCH['functions']) | set(PRIVATE_TORCH['optimizer_attributes'])
    assert used <= listed, f"private torch names used but not listed in core.PRIVATE_TORCH: {sorted(used - listed)}"
    p = torch.nn.Parameter(torch.zeros(2))
    try: fused = torch.optim.SGD([p], lr=0.1, fused=True)
    except RuntimeError: pytest.skip("this torch has no fused SGD on the CPU")
    for a in PRIVATE_TORCH['optimizer_attributes']:
        assert getattr(fused, a, None) is True, f"torch {torch.__version__}'s fused SGD no longer sets {a}: Lockstep marks its fused optimizers so"

def test_a_method_added_to_the_registry_reaches_the_parser_the_checks_and_the_runs(tmp_path, monkeypatch, capsys):
    "One `register` call and a builder: `--methods` lists it, its options apply, `method_setup` builds it and a comparison runs it"
    from fastai_softlabel import methods
    from fastai_softlabel.methods import Method, METHODS, register
    from fastai_softlabel.arguments import command_parser
    from fastai_softlabel.experiments import method_setup
    from fastai_softlabel.cli import main
    from fastai.losses import CrossEntropyLossFlat
    built = []
    def gce_like(c):   # a loss of its own, with the mixing methods' --alpha as its parameter
        built.append(c.alpha)
        return CrossEntropyLossFlat(label_smoothing=0.0 if c.alpha is None else c.alpha/10),[]
    register(Method('test-ce', ('single',), gce_like, options=('alpha',)))
    try:
        assert 'test-ce' in command_parser().format_help() and methods.default_methods('single')[-1] == 'test-ce'
        assert 'test-ce' in methods.methods_taking('alpha')
        loss,cbs = method_setup('test-ce', None, [0, 1], 2, alpha=0.5)
        assert isinstance(loss, CrossEntropyLossFlat) and cbs == [] and built == [0.5]
        monkeypatch.chdir(tmp_path)
        main(['--methods', 'baseline,test-ce', '--alpha', '0.5', '--epochs', '1', '--n-per-class', '8', '--size', '16', '--bs', '16',
              '--backbone', 'resnet10t', '--progress', 'log', '--out', 'res'])
        runs = pd.read_csv(tmp_path/'res'/'runs.csv')
        assert list(runs.method) == ['baseline', 'test-ce'] and runs.diverged_epoch.isna().all()
        assert json.loads((tmp_path/'res'/'runs'/'test-ce_seed0_c0'/'config.json').read_text())['alpha'] == 0.5
    finally: METHODS.pop('test-ce')

GOLDEN = Path(__file__).parent/'golden'

def test_config_of_a_results_folder_reproduces_its_tables(tmp_path):
    "`softlabel --config <folder>/config.json --out new`: the same runs, the same numbers (seeded), as the recorded folder"
    recorded = json.loads((GOLDEN/'results_args.json').read_text())
    r = subprocess.run([str(EXE), '--config', str(GOLDEN/'results'/'config.json'), '--progress', 'log', '--out', 'new'],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    old,new = pd.read_csv(GOLDEN/'results'/'runs.csv'),pd.read_csv(tmp_path/'new'/'runs.csv')
    # every recorded column, in its order; measures added since (calibration, AUPRC) beside them
    assert [c for c in new.columns if c in old.columns] == list(old.columns) and len(old) == len(new) == 4
    assert set(new.columns) - set(old.columns) <= {'ece', 'auprc', 'mean_auprc'}, set(new.columns) - set(old.columns)
    numbers = [c for c in old.columns if c != 'seconds' and pd.api.types.is_numeric_dtype(old[c])]
    if torch.__version__ == recorded['torch']: pd.testing.assert_frame_equal(old[numbers], new[numbers], check_exact=True)
    else: pd.testing.assert_frame_equal(old[numbers], new[numbers], rtol=1e-4)
    old_cfg,new_cfg = (json.loads(p.read_text())['settings']['arguments'] for p in (GOLDEN/'results'/'config.json', tmp_path/'new'/'config.json'))
    assert {k: v for k,v in new_cfg.items() if k in old_cfg} == old_cfg
    assert {k: v for k,v in new_cfg.items() if k not in old_cfg} == {'noise': 'symmetric'}   # options added since, at what the folder's runs had

def test_print_config_prints_what_config_reads(tmp_path, monkeypatch, capsys):
    "`--print-config` checks everything, writes nothing, and prints the resolved settings; read back, they are the same settings"
    from fastai_softlabel.cli import main
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    main(['--methods', 'baseline,ccl', '--epochs', '1', '--n-per-class', '8', '--size', '16', '--backbone', 'resnet10t', '--bs', '16', '--print-config'])
    printed = json.loads(capsys.readouterr().out)
    assert printed['lr_ccl'] == 5e-3 and printed['ccl_patience'] == 2 and printed['methods'] == 'baseline,ccl'   # the recipe, resolved
    assert list(tmp_path.iterdir()) == []
    (tmp_path/'c.json').write_text(json.dumps(printed))
    main(['--config', 'c.json', '--print-config'])
    assert json.loads(capsys.readouterr().out) == printed
