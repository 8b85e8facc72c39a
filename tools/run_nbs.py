"""Run notebooks in place so that they store their outputs: the docs site shows the stored outputs.

    .venv/bin/python tools/run_nbs.py nbs/03_ccl.ipynb ...     # given notebooks (default: all of nbs/)
    .venv/bin/python tools/run_nbs.py --flags slow nbs/04_tutorial_ccl.ipynb   # also run `slow` cells

Cells tagged with a flag that is not asked for (`#| slow`, `#| cuda`) are not run and keep the outputs stored in the
notebook (e.g. long training runs on real data). The run stops at the first error, leaving the notebook unchanged.
Afterwards run `nbdev-clean`."""
import argparse, os
from pathlib import Path
from fastcore.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from build_docs import split_directives   # the `#|` directives, parsed as the docs build parses them

FLAGS = ('slow', 'cuda')

def cell_flags(source:str)->set:
    "The test flags among the `#|` directives at the top of a cell"
    return set(split_directives(source)[0]) & set(FLAGS)

def run_notebook(path:Path, flags=()):
    "Execute `path` in its folder and write it back with outputs; cells flagged with other flags keep theirs"
    path = Path(path).resolve()
    nb = read_nb(path)
    shell = CaptureShell()
    shell.set_path(path.parent)
    skip = lambda cell: cell.cell_type != 'code' or bool(cell_flags(cell.source) - set(flags))
    cwd = os.getcwd()
    os.chdir(path.parent)          # relative paths in a notebook start from its folder, as in Jupyter
    try: shell.run_all(nb, exc_stop=True, preproc=skip)
    finally: os.chdir(cwd)
    write_nb(nb, path)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='*', help="notebooks to run (default: every nbs/*.ipynb)")
    p.add_argument('--flags', default='', help="comma-separated flags whose cells run too, e.g. slow")
    a = p.parse_args()
    nbs = [Path(n) for n in a.notebooks] or sorted(Path(__file__).parent.parent.glob('nbs/*.ipynb'))
    for nb in nbs:
        print(f"running {nb}", flush=True)
        run_notebook(nb, [f for f in a.flags.split(',') if f])
