"`report.html` of a real (tiny) `softlabel` comparison: written by the command and by `softlabel report`, self-contained, laid out for a 1300 px window, one colour per method, the user's class names everywhere; its images decoded by headless Chromium."
import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest

EXE = Path(sys.executable).parent/'softlabel'
NAMES = ['naevus', 'actinic keratosis', 'NA']   # long names must not widen the page; not sorted, and one pandas would read as missing

@pytest.fixture(scope='module')
def results(tmp_path_factory):
    "2 methods (not in alphabetical order) x 2 seeds x 2 corruption rates, 2 epochs each, on a MedMNIST-layout file without class names, named with --class-names"
    cwd = tmp_path_factory.mktemp('report')
    rng = np.random.default_rng(0)
    split = lambda n: dict(images=rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8), labels=(np.arange(n) % 3)[:, None])
    tr,va = split(36),split(12)
    np.savez(cwd/'dermamnist.npz', train_images=tr['images'], train_labels=tr['labels'], val_images=va['images'], val_labels=va['labels'])
    (cwd/'names.txt').write_text('\n'.join(NAMES) + '\n')
    r = subprocess.run([str(EXE), '--data', 'dermamnist.npz', '--class-names', 'names.txt', '--epochs', '2', '--bs', '12',
                        '--backbone', 'resnet10t', '--progress', 'log', '--methods', 'ccl,baseline', '--seeds', '0,1',
                        '--corruption', '0,0.2', '--out', 'res'], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return cwd/'res', r.stdout

def test_report_and_per_class_tables_are_written(results):
    out, stdout = results
    assert (out/'report.html').exists() and 'report.html' in stdout
    pc = pd.read_csv(out/'per_class.csv', keep_default_na=False, dtype={'class': str})
    assert len(pc) == 8*3 and set(pc.columns) == {'method', 'seed', 'corruption', 'epoch', 'class', 'positives', 'auroc', 'auprc', 'f1', 'sensitivity', 'specificity'}
    assert list(pc['class'][:3]) == NAMES
    conf = pd.read_csv(out/'confusion.csv', keep_default_na=False, dtype={'true': str, 'predicted': str})   # 8 runs x 3 x 3 cells, each run's counts adding up to the evaluated items
    assert len(conf) == 8*9 and set(conf['true']) == set(conf['predicted']) == set(NAMES)
    assert (conf.groupby(['method', 'seed', 'corruption'])['count'].sum() == 12).all()
    # the diagonal's share of each true class is its sensitivity
    c = conf[(conf.method == 'ccl') & (conf.seed == 1) & (conf.corruption == 0.2)]
    sens = (c[c['true'] == c.predicted].set_index('true')['count']/c.groupby('true')['count'].sum())
    row = pc[(pc.method == 'ccl') & (pc.seed == 1) & (pc.corruption == 0.2)].set_index('class')
    assert np.allclose(sens.loc[NAMES].values, row.loc[NAMES, 'sensitivity'].values)
    runs = pd.read_csv(out/'runs.csv')
    for m in ('accuracy', 'auroc', 'f1_score', 'valid_loss'): assert {f'{m}_best_on_eval', f'{m}_last', f'{m}_early_variance'} <= set(runs.columns)
    assert (pc.epoch == 1).all() and (runs.described == 'last').all()   # 2 epochs, no selection split: each run's last epoch is described
    assert json.loads((out/'config.json').read_text())['classes'] == NAMES
    # `softlabel report` rebuilds the page from runs/
    (out/'report.html').unlink(); (out/'per_class.csv').unlink(); (out/'confusion.csv').unlink()
    r = subprocess.run([str(EXE), 'report', str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out/'report.html').exists() and len(pd.read_csv(out/'per_class.csv')) == 24 and len(pd.read_csv(out/'confusion.csv')) == 72

def test_report_in_chromium(results, browser):
    out, _ = results
    page = out.parent/'elsewhere'/'report.html'        # moved away from its folder: the page needs no other file
    page.parent.mkdir(exist_ok=True); shutil.copy(out/'report.html', page)
    browser.set_window_size(1300, 1600)
    browser.get(page.as_uri())
    facts = browser.execute_script("""
        const imgs = [...document.querySelectorAll('img')];
        const inScroll = e => e.closest('div.scroll') !== null && e.tagName !== 'DIV';
        const W = document.documentElement.clientWidth;
        return {n: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 50 && i.naturalHeight > 50).length,
                external: imgs.filter(i => !i.getAttribute('src').startsWith('data:image/png;base64,')).length,
                rows: document.querySelectorAll('table.results tbody tr').length,
                headings: [...document.querySelectorAll('h2')].map(h => h.innerText),
                title: document.querySelector('h1').innerText, width: W, inner: window.innerWidth,
                scrollWidth: document.documentElement.scrollWidth,
                wide: [...document.body.querySelectorAll('*')].filter(e => !inScroll(e) && e.getBoundingClientRect().right > W + 0.5)
                          .map(e => e.tagName + '.' + e.className),
                legend: Object.fromEntries([...document.querySelectorAll('span.swatch')].map(s => [s.dataset.method, s.dataset.colour])),
                figures: [...document.querySelectorAll('figure')].map(f => ({kind: f.dataset.figure,
                          colours: JSON.parse(f.dataset.methodColours), texts: JSON.parse(f.dataset.texts)})),
                tables: [...document.querySelectorAll('table.results')].map(t => t.innerText)};""")
    browser.save_screenshot(str(out/'report_screenshot.png'))
    # per-class dots, confusion matrices at 2 rates, paired differences, accuracy and valid_loss curves, CCL's p_bar,
    # 4 soft-label heat maps (2 seeds x 2 rates), reliability diagrams at 2 rates, the realised noise of the corrupted rate
    assert facts['n'] == 14 and facts['decoded'] == 14 and facts['external'] == 0, facts
    assert facts['headings'] == ['Comparison', 'Per class', 'Confusion matrices', 'Calibration and label noise', 'Figures', 'Configuration'], facts['headings']
    assert facts['title'].startswith('dermamnist.npz: ccl, baseline') and '2 seeds' in facts['title'], facts['title']
    # nothing wider than a 1300 px window: the page does not scroll sideways; wide tables scroll inside their box
    assert facts['inner'] == 1300 and facts['scrollWidth'] <= facts['width'] and not facts['wide'], facts
    # one colour per method, the legend's, in every figure that draws methods
    assert facts['legend'] == {'ccl': '#1f77b4', 'baseline': '#ff7f0e'}   # the comparison's order
    kinds = {f['kind'] for f in facts['figures'] if f['colours']}
    assert kinds == {'per-class', 'confusion', 'differences', 'curves', 'p_bar', 'reliability'}, kinds
    for f in facts['figures']:
        for m,cs in f['colours'].items(): assert cs == [facts['legend'][m]], (f['kind'], m, cs)
    # the class names of --class-names in the per-class tables and in every figure about classes
    assert all(n in facts['tables'][2] for n in NAMES), facts['tables'][2]   # sensitivity and specificity per class
    about = [f for f in facts['figures'] if f['kind'] in ('per-class', 'confusion', 'soft-labels', 'realised-noise')]
    assert len(about) == 1 + 2 + 4 + 1 and all(set(NAMES) <= set(f['texts']) for f in about), about
