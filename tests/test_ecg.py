"The WFDB loader (`fastai_softlabel.ecg`) on the 50 real CinC 2021 records of ../shared/data/ecg-cinc2021 (skipped without them)."
from pathlib import Path
import numpy as np, pandas as pd, pytest
pytest.importorskip('wfdb')
from fastai_softlabel.ecg import read_wfdb_folder, wfdb_dls

CINC = Path(__file__).resolve().parent.parent.parent/'shared'/'data'/'ecg-cinc2021'
pytestmark = pytest.mark.skipif(not CINC.exists(), reason=f'{CINC} is not here')

def header_codes(record):
    "The Dx codes read straight from the header text, without wfdb"
    line = next(l for l in (CINC/f'{record}.hea').read_text().splitlines() if l.startswith('# Dx:'))
    return set(line.split(':', 1)[1].strip().split(','))

@pytest.fixture(scope='module')
def cinc(): return read_wfdb_folder(CINC)

def test_every_record_with_its_header_diagnoses(cinc):
    assert cinc['signals'].shape == (50, 12, 5000) and cinc['signals'].dtype == np.float32
    assert list(cinc['leads']) == ['I', 'II', 'III', 'aVR', 'aVL', 'aVF', 'V1', 'V2', 'V3', 'V4', 'V5', 'V6']
    assert len(cinc['label_names']) == 25            # the 25 distinct codes of the 50 records
    for rec, row in zip(cinc['records'], cinc['labels']):
        assert set(cinc['label_names'][row == 1]) == header_codes(rec), rec
    counts = cinc['labels'].sum(0).astype(int)
    assert (np.diff(counts) <= 0).all()              # most frequent diagnosis first

def test_samples_are_millivolts_of_the_raw_file(cinc):
    from scipy.io import loadmat
    i = list(cinc['records']).index('E07500')
    raw = loadmat(CINC/'E07500.mat')['val']          # int16, gain 1000 per mV and baseline 0 in the header
    np.testing.assert_allclose(cinc['signals'][i], raw/1000, atol=1e-6)

def test_mapping_names_scored_codes_and_min_count():
    table = pd.read_csv(CINC/'dx_mapping_scored.csv', dtype=str)
    abbrev = dict(zip(table.SNOMEDCTCode, table.Abbreviation))
    d = read_wfdb_folder(CINC, fs=250, mapping=CINC/'dx_mapping_scored.csv', min_count=3)
    assert d['signals'].shape == (50, 12, 2500)
    assert (d['labels'].sum(0) >= 3).all()
    for rec, row in zip(d['records'], d['labels']):   # exactly the header's scored codes seen in >= 3 records, by name
        expected = {abbrev[c] for c in header_codes(rec) if c in abbrev} & set(d['label_names'])
        assert set(d['label_names'][row == 1]) == expected, rec

def test_dataloaders_normalised_per_lead():
    dls = wfdb_dls(CINC, fs=250, mapping=CINC/'dx_mapping_scored.csv', bs=8, num_workers=0, device='cpu')
    assert dls.vocab and all(type(v) is str for v in dls.vocab)    # plain str, not np.str_
    x = np.concatenate([xb.numpy() for xb, _ in dls.train])
    assert x.shape[1:] == (12, 2500)
    np.testing.assert_allclose(x.mean(axis=(0, 2)), 0, atol=0.05)   # the training records' per-lead statistics
    np.testing.assert_allclose(x.std(axis=(0, 2)), 1, atol=0.05)

def test_errors_name_what_to_fix(tmp_path):
    with pytest.raises(ValueError, match='holds no WFDB records'): read_wfdb_folder(tmp_path)
    with pytest.raises(FileNotFoundError): read_wfdb_folder(tmp_path/'nope')
    (tmp_path/'map.csv').write_text('Dx,Code\nx,1\n')
    with pytest.raises(ValueError, match='lacks the column'): read_wfdb_folder(CINC, mapping=tmp_path/'map.csv')
