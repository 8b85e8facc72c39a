"""Build the documentation site from the notebooks, offline, into `_docs/` (and write `README.md` from `nbs/index.ipynb`).

    .venv/bin/python tools/build_docs.py [--out DIR] [--no-readme]

nbdev's `nbdev-docs` renders the site with Quarto, which cannot be installed everywhere. This builds the same pages
without it, in two steps:

1. nbdev's own processing, as `nbdev-proc-nbs` does it (`nbdev.serve.proc_nbs`): notebooks go to `_proc/` with
   front matter, `show_doc` cells executed (signatures as Markdown), `#| hide` cells dropped and `backticked` names
   linked to their pages. An error in a `show_doc` or import cell stops the build.
2. nbconvert (Jupyter's converter, from PyPI) renders every processed notebook with its stored outputs to HTML,
   through `tools/docs_template/`: a sidebar from `nbs/sidebar.yml`, formulas as MathML (latex2mathml), headings
   with the ids Quarto gives them, and links made relative. Nothing on the pages is loaded from the network.

The build fails on a notebook that stored an error output, a page missing from `nbs/sidebar.yml`, or a link to a
page or anchor of the site that does not exist. Quarto's own settings (`nbs/_quarto.yml`, `nbs/nbdev.yml`,
`nbs/sidebar.yml`, `nbs/styles.css`) are kept so that `nbdev-docs` works where Quarto is installed.
"""
import argparse, base64, html, re, shutil, sys
from pathlib import Path
from urllib.parse import urlsplit

import nbformat, yaml
from bs4 import BeautifulSoup
from latex2mathml.converter import convert as latex_to_mathml
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent/'docs_template'

class DocsError(Exception):
    "A problem in the notebooks that makes the site wrong"

# ---------------------------------------------------------------------------------------------------------- step 1
def process_notebooks()->Path:
    "nbdev's processing of `nbs/` into `_proc/` (what `nbdev-proc-nbs` does, without installing Quarto)"
    from nbdev.config import get_config
    from nbdev.quarto import refresh_quarto_yml
    from nbdev.serve import proc_nbs
    cfg = get_config(ROOT)
    refresh_quarto_yml()          # nbs/nbdev.yml from pyproject.toml, as nbdev-docs does
    return proc_nbs(str(cfg.nbs_path), force=True, n_workers=2)

# ---------------------------------------------------------------------------------------------------------- step 2
_directive = re.compile(r'^#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def split_directives(source:str)->tuple:
    "`({directive: value}, source without the leading `#|` lines)`"
    lines,d = source.splitlines(),{}
    while lines and (m := _directive.match(lines[0])): d[m.group(1)] = m.group(2) or 'true'; lines.pop(0)
    return d,'\n'.join(lines)

def front_matter(nb)->dict:
    "The YAML front matter nbdev put in the first raw cell (title, description, output-file)"
    if nb.cells and nb.cells[0].cell_type == 'raw' and nb.cells[0].source.lstrip().startswith('---'):
        return yaml.safe_load(nb.cells[0].source.strip().strip('-')) or {}
    return {}

def page_name(nb_path:Path, fm:dict)->str:
    "The page's file name, as nbdev/Quarto name it (`03_ccl.ipynb` -> `ccl.html`)"
    return fm.get('output-file') or re.sub(r'^\d+[a-z]?_', '', nb_path.stem) + '.html'

def clean_show_doc_md(md:str)->str:
    "show_doc's Markdown without Pandoc attributes, and without its [source] link while no repository URL is set"
    md = re.sub(r'\[source\]\(/?blob/[^)]*\)(\{[^}]*\})?', '', md)
    return re.sub(r'(\]\([^)]*\))\{[^}]*\}', r'\1', md)

def terminal_text(text:str)->str:
    "What a terminal would show: each line from its last carriage return on (progress bars keep their final state)"
    return '\n'.join(l.rsplit('\r', 1)[-1] for l in text.split('\n'))

def _is_warning(o)->bool:
    "A stderr stream of Python warnings (library deprecation notices), which the pages leave out"
    return o.output_type == 'stream' and o.name == 'stderr' and bool(re.search(r'\w+Warning: ', o.text))

def png_width(png_b64:str)->int:
    "Width in pixels of a base64-encoded PNG (from its IHDR chunk)"
    return int.from_bytes(base64.b64decode(png_b64[:44])[16:20], 'big')

def clean_outputs(outputs)->list:
    "Outputs as the page shows them: show_doc's Markdown cleaned, streams as a terminal shows them, no warnings, figures at their size"
    shown = []
    for o in outputs:
        if 'text/markdown' in o.get('data', {}): o.data['text/markdown'] = clean_show_doc_md(o.data['text/markdown'])
        if 'image/png' in o.get('data', {}) and not o.get('metadata', {}).get('image/png', {}).get('width'):
            # execnb (tools/run_nbs.py, nbdev-test) stores retina figures: twice the pixels of the figure's size, which
            # Jupyter shows at half their pixel width; so does the page (nbdev-clean drops the width Jupyter records)
            o.setdefault('metadata', {})['image/png'] = {'width': png_width(o.data['image/png']) // 2}
        if o.output_type == 'stream':
            if _is_warning(o): continue
            o.text = terminal_text(o.text)
            if not o.text.strip(): continue
        shown.append(o)
    return shown

_cell_keys = {'cell_type', 'execution_count', 'id', 'metadata', 'outputs', 'source', 'attachments'}

def prepare_cells(nb, name:str):
    "Apply the Quarto cell options the notebooks use, drop the front matter, and refuse stored errors"
    cells = []
    for i,cell in enumerate(nb.cells):
        if i == 0 and cell.cell_type == 'raw': continue
        for k in set(cell) - _cell_keys: del cell[k]      # nbdev's processing adds its own keys (e.g. `has_sd`)
        cell.metadata.pop('execution', None)              # and timings nbformat's schema does not allow
        if cell.cell_type != 'code': cells.append(cell); continue
        opts,cell.source = split_directives(cell.source)
        for o in cell.get('outputs', []):
            if o.output_type == 'error': raise DocsError(f"{name}: cell {i} stored an error ({o.ename}: {o.evalue}); re-run the notebook")
        cell.outputs = clean_outputs(cell.get('outputs', []))
        if opts.get('include') == 'false': continue
        if opts.get('output') == 'false': cell.outputs = []
        if opts.get('echo') == 'false': cell.metadata['docs_hide_input'] = True
        if not cell.source.strip() and not cell.get('outputs'): continue
        cells.append(cell)
    nb.cells = cells
    return nb

def _math(body:str, display:bool)->str:
    try: return latex_to_mathml(body, display='block' if display else 'inline')
    except Exception as e: raise DocsError(f"cannot convert the formula ${body}$ to MathML: {e}") from e

class MathMLRenderer(IPythonRenderer):
    "nbconvert's Markdown renderer with formulas as MathML instead of MathJax input"
    def inline_math(self, body): return _math(body, False)
    def block_math(self, body): return _math(body, True)
    def latex_environment(self, name, body): return _math(f"\\begin{{{name}}}{body}\\end{{{name}}}", True)

def make_exporter()->HTMLExporter:
    "nbconvert's HTML exporter with the site's template and Markdown renderer"
    ex = HTMLExporter(template_name='docs_template', extra_template_basedirs=[str(TEMPLATE.parent)],
                      exclude_anchor_links=True)
    def markdown2html(source): return MarkdownWithMath(renderer=MathMLRenderer(escape=False, exclude_anchor_links=True)).render(source)
    ex.register_filter('markdown2html', markdown2html)
    ex.register_filter('inline_code', lambda t: re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(str(t))))
    return ex

def quarto_id(text:str)->str:
    "The id Pandoc/Quarto give a heading: lower case, spaces to hyphens, only letters, digits, `_-.`"
    s = re.sub(r'[^\w\s.-]', '', text.strip().lower())
    s = re.sub(r'\s+', '-', s)
    return re.sub(r'^[^a-z]+', '', s) or 'section'

def tidy_html(text:str, pages:dict)->str:
    "Heading ids as Quarto makes them, links relative and to pages instead of notebooks"
    soup = BeautifulSoup(text, 'html.parser')
    seen = {}
    for h in soup.select('main h1, main h2, main h3, main h4, main h5, main h6'):
        if 'docs-title' in (h.get('class') or []): continue
        base = quarto_id(h.get_text())
        n = seen.get(base, 0); seen[base] = n + 1
        h['id'] = base if n == 0 else f'{base}-{n}'
    for a in soup.find_all('a', href=True):
        u = urlsplit(a['href'])
        if u.scheme or u.netloc: continue
        path = u.path.lstrip('/')
        if path.endswith('.ipynb'): path = pages.get(Path(path).name, path)
        a['href'] = path + (f'#{u.fragment}' if u.fragment else '')
    return str(soup)

def read_nav(proc:Path, pages:dict)->list:
    "The sidebar from `sidebar.yml`: `{'section', 'pages'}` or `{'title', 'href'}` entries"
    contents = yaml.safe_load((proc/'sidebar.yml').read_text())['website']['sidebar']['contents']
    def entry(f):
        if f not in pages: raise DocsError(f"nbs/sidebar.yml lists {f}, which is not a notebook in nbs/")
        return dict(href=pages[f]['href'], title=pages[f]['title'])
    nav = []
    for item in contents:
        if isinstance(item, dict): nav.append(dict(section=item['section'], pages=[entry(f) for f in item['contents']]))
        else: nav.append(entry(item))
    listed = {p['href'] for i in nav for p in (i['pages'] if 'section' in i else [i])}
    missing = sorted(f for f,p in pages.items() if p['href'] not in listed)
    if missing: raise DocsError(f"nbs/sidebar.yml does not list {', '.join(missing)}: add them so the site links to them")
    return nav

def check_links(out:Path):
    "Every relative link of the site must reach an existing page, and its anchor an element of that page"
    soups = {p.name: BeautifulSoup(p.read_text(), 'html.parser') for p in sorted(out.glob('*.html'))}
    ids = {name: {t['id'] for t in soup.find_all(id=True)} for name,soup in soups.items()}
    bad = []
    for name,soup in soups.items():
        for a in soup.find_all('a', href=True):
            u = urlsplit(a['href'])
            if u.scheme or u.netloc or a['href'].startswith('mailto:'): continue
            target = u.path or name
            if target not in ids: bad.append(f"{name}: {a['href']} (no such page)")
            elif u.fragment and u.fragment not in ids[target]: bad.append(f"{name}: {a['href']} (no such anchor)")
    if bad: raise DocsError("broken links:\n  " + '\n  '.join(bad))

def render_site(proc:Path, out:Path)->list:
    "Render every processed notebook into `out`; return the pages written"
    nbs = {f.name: nbformat.read(f, as_version=4) for f in sorted(proc.glob('*.ipynb'))}
    pages = {}
    for f,nb in nbs.items():
        fm = front_matter(nb)
        pages[f] = dict(href=page_name(Path(f), fm), title=fm.get('title', Path(f).stem), description=fm.get('description', ''))
    same = {h: [f for f,p in pages.items() if p['href'] == h] for h in {p['href'] for p in pages.values()}}
    same = {h: fs for h,fs in same.items() if len(fs) > 1}
    if same: raise DocsError("notebooks that would write one page (rename one): " + '; '.join(f"{' and '.join(fs)} -> {h}" for h,fs in same.items()))
    site_cfg = yaml.safe_load((proc/'nbdev.yml').read_text())['website']
    site = dict(title=site_cfg.get('title') or 'Documentation', nav=read_nav(proc, pages))
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(TEMPLATE/'site.css', out/'site.css')
    ex = make_exporter()
    hrefs = {f: p['href'] for f,p in pages.items()}
    for f,nb in nbs.items():
        nb = prepare_cells(nb, f)
        nb.metadata['title'] = f"{pages[f]['title'].replace('`', '')} – {site['title']}"
        body,_ = ex.from_notebook_node(nb, resources=dict(page=pages[f], site=site))
        (out/pages[f]['href']).write_text(tidy_html(body, hrefs))
    check_links(out)
    return [p['href'] for p in pages.values()]

# ---------------------------------------------------------------------------------------------------------- README
def readme_from_index(index:Path)->str:
    "README.md from `nbs/index.ipynb`: its Markdown, the code of its shown cells (their outputs are on the site), and the Markdown output of cells whose code is hidden (e.g. the arguments tables)"
    nb,parts = nbformat.read(index, as_version=4),[]
    for cell in nb.cells:
        if cell.cell_type == 'markdown': parts.append(cell.source.strip())
        elif cell.cell_type == 'code':
            opts,src = split_directives(cell.source)
            if {'hide', 'include'} & set(opts) or not src.strip(): continue
            if opts.get('echo') == 'false':
                parts += [clean_show_doc_md(o.data['text/markdown']).strip() for o in cell.get('outputs', []) if 'text/markdown' in o.get('data', {})]
            else: parts.append(f"```python\n{src.strip()}\n```")
    text = '\n\n'.join(parts) + '\n'
    # links to notebooks resolve from the repository root
    return re.sub(r'\]\((?!https?:|#|nbs/)([^)\s]+\.ipynb)\)', r'](nbs/\1)', text)

def main(argv=None):
    p = argparse.ArgumentParser(description="Build the docs site from nbs/ into _docs/, offline.")
    p.add_argument('--out', default=str(ROOT/'_docs'), help="output folder (default _docs/; replaced)")
    p.add_argument('--no-readme', action='store_true', help="do not write README.md from nbs/index.ipynb")
    a = p.parse_args(argv)
    try:
        proc = process_notebooks()
        written = render_site(proc, Path(a.out))
    except DocsError as e: sys.exit(f"build_docs: error: {e}")
    if not a.no_readme:
        readme = readme_from_index(ROOT/'nbs'/'index.ipynb')
        if (ROOT/'README.md').read_text() != readme: (ROOT/'README.md').write_text(readme); print("wrote README.md")
    print(f"built {len(written)} pages in {a.out}: {', '.join(sorted(written))}")

if __name__ == '__main__': main()
