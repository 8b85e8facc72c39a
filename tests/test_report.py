"`report.html` of a real (tiny) `softlabel` comparison: written by the command and by `softlabel report`, self-contained, and its images decoded by headless Chromium."
import json, shutil, subprocess, sys
from pathlib import Path
import pandas as pd, pytest

EXE = Path(sys.executable).parent/'softlabel'

@pytest.fixture(scope='module')
def results(tmp_path_factory):
    "2 methods x 2 seeds x 2 corruption rates, 2 epochs each, on the embedded synthetic data"
    cwd = tmp_path_factory.mktemp('report')
    r = subprocess.run([str(EXE), '--epochs', '2', '--n-per-class', '8', '--size', '16', '--backbone', 'resnet10t', '--progress', 'log',
                        '--methods', 'baseline,ccl', '--seeds', '0,1', '--corruption', '0,0.2', '--out', 'res'],
                       cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return cwd/'res', r.stdout

def test_report_and_per_class_tables_are_written(results):
    out, stdout = results
    assert (out/'report.html').exists() and 'report.html' in stdout
    pc = pd.read_csv(out/'per_class.csv')
    assert len(pc) == 8*8 and set(pc.columns) == {'method', 'seed', 'corruption', 'class', 'positives', 'auroc', 'f1'}   # 8 runs x 8 classes
    runs = pd.read_csv(out/'runs.csv')
    for m in ('accuracy', 'f1_score', 'valid_loss'): assert {f'{m}_best', f'{m}_last', f'{m}_early_variance'} <= set(runs.columns)
    # `softlabel report` rebuilds the page from runs/
    (out/'report.html').unlink(); (out/'per_class.csv').unlink()
    r = subprocess.run([str(EXE), 'report', str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out/'report.html').exists() and len(pd.read_csv(out/'per_class.csv')) == 64

def test_report_images_render_in_chromium(results, browser):
    out, _ = results
    page = out.parent/'elsewhere'/'report.html'        # moved away from its folder: the page needs no other file
    page.parent.mkdir(exist_ok=True); shutil.copy(out/'report.html', page)
    browser.get(page.as_uri())
    facts = browser.execute_script("""
        const imgs = [...document.querySelectorAll('img')];
        return {n: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 50 && i.naturalHeight > 50).length,
                external: imgs.filter(i => !i.getAttribute('src').startsWith('data:image/png;base64,')).length,
                rows: document.querySelectorAll('table.results tbody tr').length,
                headings: [...document.querySelectorAll('h2')].map(h => h.innerText)};""")
    browser.save_screenshot(str(out/'report_screenshot.png'))
    # paired differences, accuracy and valid_loss curves, CCL's p_bar, 4 soft-label heat maps (2 seeds x 2 rates), per-class bars
    assert facts['n'] == 9 and facts['decoded'] == 9 and facts['external'] == 0, facts
    assert facts['rows'] == 2*4 and facts['headings'][:4] == ['Comparison', 'Paired differences', 'Curves', 'CCL'], facts
