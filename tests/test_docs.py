"""The documentation: every public name documented with an example, README.md generated from nbs/index.ipynb, the
offline build's checks, and the built site opened in headless Chromium (skipped when Chromium is not installed)."""
import ast, functools, http.server, importlib, importlib.util, inspect, shutil, subprocess, sys, threading
from pathlib import Path
import nbformat, pytest, yaml

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_'))

def _build_docs_module():
    spec = importlib.util.spec_from_file_location('build_docs', ROOT/'tools'/'build_docs.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

bd = _build_docs_module()

# ------------------------------------------------------------------------------------------- the API is documented
def _modules():
    return [importlib.import_module(f'fastai_softlabel.{p.stem}') for p in sorted((ROOT/'fastai_softlabel').glob('*.py'))
            if not p.stem.startswith('_')]

def _public_names():
    return [(m, n) for m in _modules() for n in getattr(m, '__all__', [])]

def _cells(nb_path):
    "(directives, source) of the code cells"
    return [bd.split_directives(c.source) for c in nbformat.read(nb_path, as_version=4).cells if c.cell_type == 'code']

def _names_used(src):
    try: tree = ast.parse(src)
    except SyntaxError: return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}

@functools.cache
def _visible_examples():
    "Names used in code cells that appear on a page: not exported definitions, not hidden cells"
    used = set()
    for nb in NBS:
        for opts,src in _cells(nb):
            if {'export', 'exports', 'exporti', 'hide', 'include'} & set(opts) or opts.get('echo') == 'false': continue
            used |= _names_used(src)
    return used

@pytest.mark.parametrize('mod,name', _public_names(), ids=[f'{m.__name__.split(".")[-1]}.{n}' for m,n in _public_names()])
def test_public_name_is_documented_with_an_example(mod, name):
    "Each name in a module's __all__ has its own docstring (and so do its public methods) and a visible example"
    obj = getattr(mod, name)
    if inspect.isfunction(obj) or inspect.isclass(obj):
        assert inspect.getdoc(obj) and obj.__doc__, f"{mod.__name__}.{name} has no docstring"
        if inspect.isclass(obj):
            for k,v in vars(obj).items():
                f = v.fget if isinstance(v, property) else getattr(v, '__func__', v)
                if not k.startswith('_') and inspect.isfunction(f):
                    assert f.__doc__, f"{mod.__name__}.{name}.{k} has no docstring"
    assert name in _visible_examples(), f"{mod.__name__}.{name} is not used in any shown notebook cell: add an example"

def test_every_notebook_is_in_the_sidebar():
    side = yaml.safe_load((ROOT/'nbs'/'sidebar.yml').read_text())['website']['sidebar']['contents']
    listed = [f for i in side for f in (i['contents'] if isinstance(i, dict) else [i])]
    assert sorted(listed) == sorted(p.name for p in NBS), "nbs/sidebar.yml must list every notebook exactly once"

def test_readme_is_generated_from_the_index_notebook():
    "README.md is what tools/build_docs.py writes from nbs/index.ipynb (edit the notebook, then build the docs)"
    assert (ROOT/'README.md').read_text() == bd.readme_from_index(ROOT/'nbs'/'index.ipynb')

def test_readme_relative_links_exist():
    "Links in README.md that are not URLs name files of the repository (the index links notebooks, not built pages)"
    import re
    links = [l for l in re.findall(r'\]\(([^)\s]+)\)', (ROOT/'README.md').read_text()) if not re.match(r'[a-z]+:|#', l)]
    assert links, "the README links the tutorials"
    missing = [l for l in links if not (ROOT/l.split('#')[0]).exists()]
    assert not missing, f"README.md links to {missing}, which are not in the repository"

# ------------------------------------------------------------------------------------------- the build's own checks
def test_directives_and_quarto_ids():
    test = bd.split_directives('#| echo: false\n#| output: asis\nshow_doc(CCL)')
    assert test == ({'echo': 'false', 'output': 'asis'}, 'show_doc(CCL)')
    assert bd.split_directives('#| hide\nx = 1\n#| not a directive')[0] == {'hide': 'true'}
    for text,want in [('CCL', 'ccl'), ('CCL.after_step', 'ccl.after_step'), ('The head', 'the-head'),
                      ('Quick start: CCL', 'quick-start-ccl'), ('1-D data', 'd-data'), ('soft_label_kl', 'soft_label_kl')]:
        assert bd.quarto_id(text) == want, text

def _nb(*cells):
    return nbformat.v4.new_notebook(cells=list(cells))

def test_stored_error_output_fails_the_build():
    bad = nbformat.v4.new_code_cell('1/0', outputs=[nbformat.v4.new_output('error', ename='ZeroDivisionError', evalue='division by zero', traceback=[])])
    with pytest.raises(bd.DocsError, match='ZeroDivisionError'): bd.prepare_cells(_nb(nbformat.v4.new_markdown_cell('x'), bad), 'x.ipynb')

def test_cell_options_applied():
    shown = nbformat.v4.new_code_cell('#| echo: false\nshow_doc(f)', outputs=[nbformat.v4.new_output('display_data', data={'text/markdown': 'sig [source](/blob/main/x.py#L1){target="_blank"} [`f`](/a.html#f){.x}'})])
    gone = nbformat.v4.new_code_cell('#| include: false\nx = 1')
    silent = nbformat.v4.new_code_cell('#| output: false\nprint(1)', outputs=[nbformat.v4.new_output('stream', text='1')])
    nb = bd.prepare_cells(_nb(nbformat.v4.new_raw_cell('---\ntitle: T\n---'), shown, gone, silent), 'x.ipynb')
    assert [c.source for c in nb.cells] == ['show_doc(f)', 'print(1)']
    assert nb.cells[0].metadata['docs_hide_input'] and nb.cells[1].outputs == []
    assert nb.cells[0].outputs[0].data['text/markdown'] == 'sig  [`f`](/a.html#f)'

def test_streams_shown_as_a_terminal_would():
    bar = '\u2588\repoch  train_loss\n\rEpoch 1/2 : |--| 0% [0/9]\rEpoch 1/2 : |##| 100% [9/9]\r0      1.23\n'
    assert bd.terminal_text(bar) == 'epoch  train_loss\n0      1.23\n'
    warn = nbformat.v4.new_output('stream', name='stderr', text='x.py:1: FutureWarning: deprecated\n  warnings.warn(\n')
    log = nbformat.v4.new_output('stream', name='stdout', text='\u2588\r\r')
    cell = nbformat.v4.new_code_cell('fit()', outputs=[warn, log, nbformat.v4.new_output('stream', text='done')])
    assert [o.text for o in bd.prepare_cells(_nb(cell), 'x.ipynb').cells[0].outputs] == ['done']

def test_broken_internal_links_fail_the_build(tmp_path):
    (tmp_path/'a.html').write_text('<main><h2 id="here">x</h2><a href="b.html">b</a><a href="#here">ok</a><a href="https://x.org/y.html">ext</a></main>')
    (tmp_path/'b.html').write_text('<main><a href="a.html#here">ok</a></main>')
    bd.check_links(tmp_path)
    (tmp_path/'b.html').write_text('<main><a href="a.html#nowhere">x</a><a href="c.html">y</a></main>')
    with pytest.raises(bd.DocsError) as e: bd.check_links(tmp_path)
    assert 'a.html#nowhere (no such anchor)' in str(e.value) and 'c.html (no such page)' in str(e.value)

def test_formulas_become_mathml():
    html = bd.make_exporter().environment.filters['markdown2html']('softness $\\bar p$ and $$L = CE + KL$$')
    assert html.count('<math') == 2 and '$' not in html

# ------------------------------------------------------------------------------------------- the built site, in Chromium
@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site built by the README's docs command into a temporary folder, served on localhost"
    out = tmp_path_factory.mktemp('site')/'_docs'
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), '--out', str(out), '--no-readme'],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, f"the docs build failed:\n{r.stdout}\n{r.stderr[-3000:]}"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f'http://127.0.0.1:{server.server_address[1]}/'
    server.shutdown()

def _load(browser, url):
    "Open `url` and wait for its load event (Selenium's default page-load strategy)"
    browser.get(url)

def _page_facts(browser):
    "What a reader sees: the title, show_doc entries and signatures, code cells, decoded plots, the sidebar, formulas"
    return browser.execute_script("""
        const vis = e => e.offsetWidth > 0 && e.offsetHeight > 0;
        return {
          title: document.querySelector('h1.docs-title')?.innerText,
          signatures: [...document.querySelectorAll('[data-mime-type="text/markdown"] h3')].filter(vis).map(h => h.id),
          signature_code: [...document.querySelectorAll('[data-mime-type="text/markdown"] pre')].filter(vis).map(p => p.innerText),
          code_cells: [...document.querySelectorAll('.jp-CodeCell .jp-InputArea pre')].filter(vis).length,
          plots: [...document.querySelectorAll('.jp-OutputArea img')].filter(i => vis(i) && i.complete && i.naturalWidth > 100).length,
          nav: [...document.querySelectorAll('nav.docs-sidebar a')].map(a => a.getAttribute('href')),
          math: document.querySelectorAll('math').length,
        };""")

def _severe_console(browser):
    return [m for m in browser.get_log('browser') if m['level'] == 'SEVERE']

def _shot(browser, site, name):
    "Keep a screenshot of the page beside the site (for a look by eye)"
    browser.save_screenshot(str(site[0].parent/f'{name}.png'))

def test_every_public_name_has_an_entry_in_the_built_site(site):
    "Functions and classes get a show_doc entry (an anchor named after them); constants are named on their page"
    from bs4 import BeautifulSoup
    pages = {p.name: BeautifulSoup(p.read_text(), 'html.parser') for p in site[0].glob('*.html')}
    ids = {i['id'] for soup in pages.values() for i in soup.find_all(id=True)}
    text = ' '.join(soup.get_text() for soup in pages.values())
    for mod,name in _public_names():
        obj = getattr(mod, name)
        if inspect.isfunction(obj) or inspect.isclass(obj): assert bd.quarto_id(name) in ids, f"no entry for {mod.__name__}.{name}"
        else: assert name in text, f"{mod.__name__}.{name} is not named on any page"

def test_no_entry_shown_twice(site):
    "nbdev adds a show_doc entry after each exported definition; a second, explicit one would repeat it"
    from bs4 import BeautifulSoup
    import collections
    for p in site[0].glob('*.html'):
        entries = [h.get_text().strip() for h in BeautifulSoup(p.read_text(), 'html.parser').select('[data-mime-type="text/markdown"] h3')]
        twice = [e for e,n in collections.Counter(entries).items() if n > 1]
        assert not twice, f"{p.name} shows {twice} twice"

def test_index_page_renders(site, browser):
    _load(browser, site[1] + 'index.html')
    f = _page_facts(browser)
    assert f['title'] == 'fastai_softlabel'
    assert {'ccl', 'flowmixup', 'mixup', 'manifoldmixup'} <= set(f['signatures'])   # the arguments tables' headings
    rows = browser.execute_script(
        "return [...document.querySelectorAll('[data-mime-type=\"text/markdown\"] tr')].map(r => [...r.cells].map(c => c.innerText.trim()))")
    assert next(r for r in rows if r and r[0] == 'lr_ccl')[:3] == ['lr_ccl', 'float', '1.0']   # argument, type, default
    assert f['code_cells'] >= 4 and f['plots'] >= 1
    assert {'tutorial_ccl.html', 'ccl.html', 'flowmixup.html', 'cli.html'} <= set(f['nav'])
    assert not _severe_console(browser)
    _shot(browser, site, 'index')

def test_ccl_page_renders(site, browser):
    _load(browser, site[1] + 'ccl.html')
    f = _page_facts(browser)
    assert f['title'].startswith('CCL')
    assert {'ccl', 'ccl.freeze_dictionary', 'ccl.plot_soft_labels', 'ccl.plot_pbar'} <= set(f['signatures'])
    sig = next(s for s in f['signature_code'] if s.startswith('def CCL('))
    for arg in ('features', 'lr_ccl', 'alpha_cc', 'margin', 'patience'): assert arg in sig
    assert f['code_cells'] >= 5 and f['plots'] >= 1 and f['math'] >= 5
    assert not _severe_console(browser)
    _shot(browser, site, 'ccl')
    _load(browser, site[1] + 'ccl_head.html')   # the head has a page of its own
    assert 'cclhead' in set(_page_facts(browser)['signatures'])

def test_internal_links_resolve_in_the_browser(site, browser):
    "Every page is reachable from the index, and every link between pages reaches a page and an element with its #anchor"
    base = site[1]
    todo,ids,links = ['index.html'],{},{}
    while todo:
        page = todo.pop()
        if page in ids: continue
        _load(browser, base + page)
        assert browser.execute_script("return document.querySelector('h1.docs-title') !== null"), f"{page} did not load"
        ids[page] = set(browser.execute_script("return [...document.querySelectorAll('[id]')].map(e => e.id)"))
        links[page] = [h[len(base):] for h in browser.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)")
                       if h.startswith(base)]
        todo += [h.partition('#')[0] for h in links[page] if h.partition('#')[0] not in ids]
    assert set(ids) == {p.name for p in site[0].glob('*.html')}, "some pages are not reachable from the index"
    anchors = 0
    for page,hrefs in links.items():
        for h in hrefs:
            target,_,frag = h.partition('#')
            assert target in ids, f"{page}: link to {h}, no such page"
            if frag: assert frag in ids[target], f"{page}: link to {h}, no such anchor"; anchors += 1
    assert anchors > 20, "too few links between API entries: are `backticked` names linked?"

def test_two_notebooks_of_one_page_are_refused(tmp_path):
    "`21_results.ipynb` and `32_results.ipynb` would both write results.html, one page hiding the other: the build refuses them"
    for n in ('21_results.ipynb', '32_results.ipynb'): nbformat.write(_nb(nbformat.v4.new_markdown_cell('# R')), tmp_path/n)
    with pytest.raises(bd.DocsError, match=r'21_results.ipynb and 32_results.ipynb -> results.html'): bd.render_site(tmp_path, tmp_path/'out')
