"""A saved model predicts on new data: `load_learner` in a fresh Python process (which imports nothing of this library
itself) reads an exported Learner of `array_image_dls`, of `signal_dls` and of the `softlabel` command, and predicts on
a new array and on a file -- what the Learner predicted before it was exported."""
import json, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from fastai.vision.all import *
from fastai_softlabel.data import array_image_dls, synthetic_class_images
from fastai_softlabel.signals import signal_dls, synthetic_ecg
from conftest import tiny_cnn, wfdb_folder

EXE = Path(sys.executable).parent/'softlabel'
PREDICT = """
import json, sys, numpy as np
from fastai.learner import load_learner
export, array, file, out = sys.argv[1:5]
learn = load_learner(export)
with learn.no_bar(): by_array,by_file = learn.predict(np.load(array)),learn.predict(file)
json.dump(dict(array=by_array[2].tolist(), file=by_file[2].tolist(), label=str(by_array[0]), vocab=[str(v) for v in learn.dls.vocab]), open(out, 'w'))
"""

def predict_in_a_fresh_process(export:Path, array:np.ndarray, file:Path)->dict:
    np.save(export.parent/'new.npy', array)
    r = subprocess.run([sys.executable, '-c', PREDICT, str(export), str(export.parent/'new.npy'), str(file), str(export.parent/'out.json')],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((export.parent/'out.json').read_text())

@pytest.mark.parametrize('path', ['tensor', 'pil'])
def test_array_image_dls(tmp_path, path):
    d = synthetic_class_images(n_per_class=10, size=16, n_classes=3, seed=0)
    kw = dict(item_tfms=Resize(16)) if path == 'pil' else dict(size=16)
    dls = array_image_dls(d['images'], d['labels'], d['class_names'], bs=8, num_workers=0, device='cpu', **kw)
    learn = Learner(dls, tiny_cnn(dls.c), path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    new = synthetic_class_images(n_per_class=1, size=16, n_classes=3, seed=5)['images'][2]   # an image the model never saw
    PILImage.create(new).save(tmp_path/'new.png')
    with learn.no_bar(): expected = learn.predict(new)
    learn.export('export.pkl')
    got = predict_in_a_fresh_process(tmp_path/'export.pkl', new, tmp_path/'new.png')
    assert np.allclose(got['array'], expected[2], atol=1e-6) and np.allclose(got['file'], expected[2], atol=1e-6)
    assert got['label'] == expected[0] and got['vocab'] == ['class0', 'class1', 'class2']

def test_signal_dls(tmp_path):
    e = synthetic_ecg(n=40, length=100)
    dls = signal_dls(e['signals'], e['labels'], e['label_names'], bs=8, num_workers=0, device='cpu')
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(12*100, dls.c)), loss_func=BCEWithLogitsLossFlat(), path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    new = synthetic_ecg(n=1, length=100, seed=7)['signals'][0]
    np.save(tmp_path/'recording.npy', new)
    with learn.no_bar(): expected = learn.predict(new)
    learn.export('export.pkl')
    got = predict_in_a_fresh_process(tmp_path/'export.pkl', new, tmp_path/'recording.npy')
    assert np.allclose(got['array'], expected[2], atol=1e-6) and np.allclose(got['file'], expected[2], atol=1e-6)

def test_the_commands_exported_learners(tmp_path):
    "`softlabel --export`: a run's Learner gives on a new image (array or file) and on a new WFDB record (array or header file) what the training pipeline gives"
    from fastai_softlabel.experiments import synthetic_dataset, signal_dataset
    from fastai_softlabel.signals import lead_stats
    r = subprocess.run([str(EXE), '--epochs', '1', '--n-per-class', '8', '--size', '16', '--bs', '16', '--backbone', 'resnet10t',
                        '--methods', 'baseline', '--export', '--progress', 'log', '--out', 'images'], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    export = tmp_path/'images'/'runs'/'baseline_seed0_c0'/'export.pkl'
    d = synthetic_dataset('single', 8)   # the command's data: 32 px images, trained at --size 16
    PILImage.create(d['images'][5]).save(tmp_path/'new.png')
    got = predict_in_a_fresh_process(export, d['images'][5], tmp_path/'new.png')
    # what the run's own pipeline gives item 5: resized once, normalised with ImageNet's statistics, through the trained model
    dls = array_image_dls(d['images'], d['labels'], d['names'], size=16, batch_tfms=[Normalize.from_stats(*imagenet_stats)], bs=2,
                          num_workers=0, device='cpu')
    loaded = load_learner(export)
    assert loaded.path == Path('.')   # fastai's default, not the run's temporary folder (a save there would look like a run in progress)
    model = loaded.model.eval()
    with torch.no_grad(): expected = model(dls.test_dl([5]).one_batch()[0]).softmax(-1)[0]
    assert np.allclose(got['array'], expected, atol=1e-5) and np.allclose(got['file'], expected, atol=1e-5), (got, expected)
    from fastai_softlabel.ecg import read_record
    wfdb_folder(tmp_path/'ecg', n=12)
    r = subprocess.run([str(EXE), '--data', 'ecg', '--fs', '100', '--seconds', '2', '--methods', 'erm', '--epochs', '1', '--bs', '4',
                        '--export', '--progress', 'log', '--out', 'signals'], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    export = tmp_path/'signals'/'runs'/'erm_seed0_c0'/'export.pkl'
    sd = signal_dataset(tmp_path/'ecg', fs=100, seconds=2)   # the run's records (sorted: item 5 is R005) and split
    got = predict_in_a_fresh_process(export, sd['signals'][5], tmp_path/'ecg'/'R005.hea')
    mean,std = lead_stats(sd['signals'][sd['split'] == 'train'])   # per-lead statistics of the training records
    x = torch.as_tensor((sd['signals'][5] - mean[:, None])/std[:, None], dtype=torch.float32)[None]
    with torch.no_grad(): expected = torch.sigmoid(load_learner(export).model.eval()(x))[0]
    assert np.allclose(got['array'], expected, atol=1e-5) and np.allclose(got['file'], expected, atol=1e-5), (got, expected)

def test_the_papers_protocol_end_to_end(tmp_path):
    "`--aug paper` on a HAM10000-style table of 30 x 20 images: read at a short side of 256/224 x --size keeping their aspect ratio; the exported Learner predicts on a new image file, in a fresh process, what the trained model gives its centre crop"
    from PIL import Image
    from fastai_softlabel.data import resize_short_side
    rng = np.random.default_rng(0)
    (tmp_path/'img').mkdir()
    ids = [f'ISIC_{i:04d}' for i in range(24)]
    for i in ids: Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path/'img'/f'{i}.jpg')
    import pandas as pd
    pd.DataFrame(dict(image_id=ids, dx=np.repeat(['nv', 'mel', 'bkl'], 8))).to_csv(tmp_path/'ham.csv', index=False)
    r = subprocess.run([str(EXE), '--data', 'ham.csv', '--images', 'img', '--size', '14', '--recipe', 'paper', '--bs', '8', '--epochs', '1',
                        '--backbone', 'resnet10t', '--methods', 'baseline', '--save-model', 'last', '--progress', 'log', '--out', 'res'],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path/'res'/'config.json').read_text())
    assert cfg['settings']['arguments']['aug'] == 'paper' and cfg['settings']['arguments']['size'] == 14   # --recipe paper turns it on
    new = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)   # a new image, larger than the training ones
    Image.fromarray(new).save(tmp_path/'new.png')
    export = tmp_path/'res'/'runs'/'baseline_seed0_c0'/'export.pkl'
    got = predict_in_a_fresh_process(export, new, tmp_path/'new.png')
    small = resize_short_side(new[None], 16)[0]   # round(14*256/224) = 16: 16 x 24
    crop = small[1:15, 5:19]                        # the centre 14 x 14
    x = (torch.from_numpy(crop.transpose(2, 0, 1)).float()/255 - tensor(imagenet_stats[0])[:, None, None])/tensor(imagenet_stats[1])[:, None, None]
    with torch.no_grad(): expected = load_learner(export).model.eval()(x[None]).softmax(-1)[0]
    assert np.allclose(got['array'], expected, atol=1e-5) and np.allclose(got['file'], expected, atol=1e-5), (got, expected)
