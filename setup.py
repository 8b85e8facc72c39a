"Package set-up: all metadata comes from settings.ini (setuptools >= 81 has no pkg_resources, so none is imported)."
from configparser import ConfigParser
from pathlib import Path
import setuptools

here = Path(__file__).parent
cfg = ConfigParser(delimiters=['='])
cfg.read(here/'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

def _split(key): return cfg.get(key, '').split()

licenses = {'apache2': 'Apache-2.0'}   # SPDX expression (setuptools >= 77 deprecates license classifiers)
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable']
readme = here/'README.md'

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else '',
    long_description_content_type='text/markdown',
    author=cfg['author'], author_email=cfg['author_email'],
    license=licenses[cfg['license']],
    keywords=cfg['keywords'],
    classifiers=[f"Development Status :: {statuses[int(cfg['status'])]}",
                 'Intended Audience :: Science/Research',
                 'Natural Language :: English',
                 'Programming Language :: Python :: 3',
                 f"Programming Language :: Python :: {cfg['min_python']}",
                 'Topic :: Scientific/Engineering :: Medical Science Apps.'],
    python_requires=f">={cfg['min_python']}",
    packages=setuptools.find_packages(include=[cfg['lib_name'], f"{cfg['lib_name']}.*"]),
    include_package_data=True,
    install_requires=_split('requirements'),
    extras_require={'dev': _split('dev_requirements'), 'distributed': _split('distributed_requirements'),
                    'ecg': _split('ecg_requirements'), 'cl': _split('cl_requirements')},
    entry_points={'console_scripts': _split('console_scripts'),
                  'nbdev': [f"{cfg['lib_name']}={cfg['lib_name']}._modidx:d"]},
    zip_safe=False,
)
