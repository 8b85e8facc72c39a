"""Every option and input format of `softlabel`, with bad values: exit status 2, one `softlabel: error:` line that names
what is wrong, no traceback, nothing written (and a results folder under `--resume` left as it was).

The table below goes through the options one by one; `test_every_option_is_in_the_table` fails when an option is
added to the command without a bad value here."""
import contextlib, fcntl, hashlib, json, os, re
from pathlib import Path
import numpy as np, pandas as pd, pytest
from conftest import wfdb_folder

def _results_folder(d:Path, **settings):
    "A results folder as softlabel makes it, with no run yet"
    from fastai_softlabel.cli import LOCK_FILE
    d.mkdir(); (d/LOCK_FILE).touch()
    (d/'config.json').write_text(json.dumps(dict(settings=dict(arguments=settings), methods=['baseline'], corruption=[0.], seeds=[0],
                                                 multi_label=False, classes=['a', 'b'])))
    return d

@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    "Every bad (and some good) input file and folder the table refers to, made once"
    d = tmp_path_factory.mktemp('inputs')
    from fastai_softlabel.signals import synthetic_ecg
    from PIL import Image
    rng = np.random.default_rng(0)
    e = synthetic_ecg(n=40, length=100)
    np.savez(d/'ecg.npz', signals=e['signals'], labels=e['labels'], label_names=e['label_names'])
    np.savez(d/'one.npz', signals=e['signals'], labels=e['labels'][:, 0].astype(np.int64))
    nan = e['signals'].copy(); nan[7, 2, 10] = np.nan
    np.savez(d/'nan.npz', signals=nan, labels=e['labels'])
    np.savez(d/'swapped.npz', signals=e['signals'].transpose(0, 2, 1), labels=e['labels'])
    np.savez(d/'bad.npz', images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.zeros((4, 2, 2)))
    np.savez(d/'nokey.npz', pictures=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(2))
    np.savez(d/'twochan.npz', images=np.zeros((4, 8, 8, 2), np.uint8), labels=np.array([0, 1, 0, 1]))
    np.savez(d/'chw.npz', images=np.zeros((4, 3, 8, 8), np.uint8), labels=np.array([0, 1, 0, 1]))
    np.savez(d/'split.npz', images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 0, 1]), split=np.array(['train', 'train', 'test', 'test']))
    np.savez(d/'nosplit.npz', images=rng.integers(0, 255, (60, 8, 8), dtype=np.uint8), labels=np.arange(60) % 2)
    np.savez(d/'notrain.npz', images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 0, 1]), split=np.array(['fit', 'fit', 'valid', 'valid']))
    np.savez(d/'outside.npz', images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0, 1, 7]), class_names=np.array(['a', 'b']))
    np.savez(d/'onecls.npz', images=np.zeros((60, 8, 8), np.uint8), labels=np.zeros(60, np.int64))
    np.savez(d/'named.npz', images=np.zeros((60, 8, 8), np.uint8), labels=np.arange(60) % 2, class_names=np.array(['benign', 'malignant']))
    np.savez(d/'dupnames.npz', images=np.zeros((60, 8, 8), np.uint8), labels=np.arange(60) % 3, class_names=np.array(['a', 'a', 'b']))
    np.savez(d/'empty_images.npz', images=np.zeros((60, 0, 0, 3), np.uint8), labels=np.arange(60) % 2)
    np.savez(d/'small.npz', images=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), labels=np.arange(40) % 2,
             split=np.array(['train']*30 + ['valid']*10))   # 30 training items: less than the default batch of 32
    np.savez(d/'obj.npz', images=np.zeros((2, 8, 8), np.uint8), labels=np.array([0, 1]), class_names=np.array(['a', None]))
    (d/'text.npz').write_text('not an archive')
    import torch; torch.save({'conv.weight': torch.zeros(1)}, d/'wrong.pth')   # the weights of no timm model
    (d/'cut.npz').write_bytes((d/'split.npz').read_bytes()[:300])
    (d/'data.txt').write_text('x')
    (d/'typo.yaml').write_text('epoch: 3\n')
    (d/'choice.json').write_text('{"opt": "adamw"}')
    (d/'list.json').write_text('{"epochs": [5]}')
    (d/'binary.json').write_bytes(b'\xff\xfe\x00\x81')
    (d/'folder.json').write_text(json.dumps({'settings': {'arguments': {'epochs': 1, 'bs': 16, 'n_per_class': 8, 'size': 16, 'backbone': 'resnet10t'},
                                                          'data': {'kind': 'file', 'name': 'ham.npz', 'bytes': 3, 'sha256': 'ab'*32}}}))
    (d/'emptydir').mkdir()
    (d/'img').mkdir()
    df = pd.DataFrame(dict(image_id=[f'ISIC_{i:04d}' for i in range(24)], dx=np.repeat(['nv', 'mel', 'bkl'], 8),
                           lesion_id=[f'HAM_{i//2}' for i in range(24)]))
    for i in df.image_id: Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(d/'img'/f'{i}.jpg')
    df.to_csv(d/'ham.csv', index=False)
    pd.concat([df, pd.DataFrame(dict(image_id=['ISIC_9999'], dx=['nv'], lesion_id=['HAM_99']))]).to_csv(d/'ham_missing.csv', index=False)
    (d/'empty.csv').write_text('')
    (d/'bin.csv').write_bytes(bytes(range(256))*4)
    wfdb_folder(d/'wfdb')
    wfdb_folder(d/'badwfdb', n=3, corrupt=True)
    pd.DataFrame(dict(record=[f'R{i:03d}' for i in range(11)], split=['train']*8 + ['test']*3)).to_csv(d/'splits.csv', index=False)
    pd.DataFrame(dict(record=['R000'], fold=['1'])).to_csv(d/'badsplits.csv', index=False)
    (d/'existing').mkdir()
    _results_folder(d/'other', epochs=99)
    _results_folder(d/'locked')
    _results_folder(d/'norun')
    (d/'corrupt').mkdir(); (d/'corrupt'/'config.json').write_text('{"settings": ')
    # what a reviewer would reject: copies across the split, labels a clinician would question, weights of another network
    pd.concat([df.drop(columns='lesion_id')]*2).to_csv(d/'ham_twice.csv', index=False)        # every image listed twice, no lesion_id
    pd.DataFrame(dict(image_id=df.image_id, dx=np.repeat([' nv', 'nv', 'bkl'], 8))).to_csv(d/'ham_padded.csv', index=False)
    (d/'ham_dupcol.csv').write_text('image_id,dx,dx\n' + ''.join(f'{i},nv,mel\n' for i in df.image_id))
    im = rng.integers(0, 255, (60, 8, 8), dtype=np.uint8)
    leak = dict(train_images=im[:40], train_labels=(np.arange(40) % 2)[:, None], val_images=im[40:50], val_labels=(np.arange(10) % 2)[:, None],
                test_images=im[50:].copy(), test_labels=(np.arange(10) % 2)[:, None])
    leak['test_images'][3] = im[5]; leak['test_labels'][3] = 1
    np.savez(d/'mm_leak.npz', **leak)
    np.savez(d/'gap.npz', images=im, labels=np.array([0, 1, 2, 7]*15))
    np.savez(d/'evalonly.npz', images=im, labels=np.arange(60) % 3, split=np.where(np.arange(60) % 3 == 2, 'test', np.array(['train', 'test'])[np.arange(60) % 2]))
    np.savez(d/'noclass.npz', images=im, labels=np.arange(60) % 2, class_names=np.array(['a', 'b', 'c']))
    np.savez(d/'emptyname.npz', images=im, labels=np.arange(60) % 2, class_names=np.array(['a', '']))
    multi = np.stack([np.arange(60) % 2, 1 - np.arange(60) % 2, (np.arange(60) >= 50).astype(int)], 1)
    np.savez(d/'multi_rare.npz', images=im, labels=multi, label_names=np.array(['Effusion', 'Mass', 'Hernia']), split=np.where(np.arange(60) < 50, 'train', 'valid'))
    os.symlink(d/'nowhere'/'res', d/'dangling')
    pd.DataFrame([[.9, .2], [0, 1]], index=['benign', 'malignant'], columns=['benign', 'malignant']).to_csv(d/'M_rows.csv')   # a row sums to 1.1
    # soft targets: readers' shares per class; per-finding probabilities, one with a blank and one with CheXpert's −1
    dist = (np.full((60, 3), .1) + .7*np.eye(3)[np.arange(60) % 3]).astype(np.float32)
    np.savez(d/'soft.npz', images=im, label_distributions=dist)
    np.savez(d/'soft_both.npz', images=im, label_distributions=dist, labels=np.arange(60) % 3)
    np.savez(d/'soft_rows.npz', images=im, label_distributions=dist*.9)
    probs = (.8*np.eye(3)[np.arange(60) % 3] + .1).astype(np.float32)
    np.savez(d/'msoft.npz', images=im, labels=probs)
    np.savez(d/'mblank.npz', images=im, labels=np.where(np.arange(60)[:, None] == 3, np.nan, probs))
    np.savez(d/'muncertain.npz', images=im, labels=np.where(np.arange(60)[:, None] == 3, -1., multi.astype(float)))
    np.save(d/'feat3.npy', np.zeros((3, 4))); (d/'text.pkl').write_text('not a pickle')   # --noise instance: 3 rows for 60 items; no export
    pd.DataFrame([[1, 0], [0, 1]], index=['benign', 'other'], columns=['benign', 'other']).to_csv(d/'M_names.csv')
    pd.DataFrame(dict(label=[f'class{i}' for i in range(8)], down=[.2, 1.5] + [.1]*6)).to_csv(d/'rates_bad.csv', index=False)   # the synthetic labels
    return d

@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    "Weights files of other networks, outside `inputs` (whose files every case hashes twice): WEIGHTS/ in a case"
    import timm, torch
    d = tmp_path_factory.mktemp('weights')
    torch.save(timm.create_model('resnet34').state_dict(), d/'resnet34.pth')
    sd = timm.create_model('resnet10t').state_dict()
    torch.save({**sd, 'layer1.0.conv1.weight': torch.zeros(64, 32, 3, 3)}, d/'misshaped.pth')
    torch.save({**sd, 'layer2.0.bn1.weight': torch.full_like(sd['layer2.0.bn1.weight'], float('nan'))}, d/'nan.pth')
    return d

def _read_only_parent(d:Path)->str:
    "A folder nobody can make a folder in: /sys as root (who ignores permissions), else a folder without write permission"
    if os.geteuid() == 0: return '/sys'
    ro = d/'readonly'
    ro.mkdir(exist_ok=True); ro.chmod(0o555)
    return str(ro)

WFDB = ['--data', 'wfdb']
MULTI = ['--task', 'multi']
CASES = [
    # --data: files that are not what they claim to be, data the command would read other than meant
    (['--data', 'missing.npz'], 'No such file: missing.npz'),
    (['--config', 'missing.json'], '--config missing.json cannot be read'),
    (['--config', 'data.txt'], '--config data.txt is not valid JSON'),
    (['--config', 'typo.yaml'], "--config typo.yaml: 'epoch' is not an option of softlabel \\(did you mean 'epochs', --epochs\\?\\)"),
    (['--config', 'choice.json'], "--config choice.json: opt: 'adamw' is not one of --opt's choices"),
    (['--print-config', '--epochs', '0'], '--epochs must be at least 1'),
    (['--config'], 'argument --config: expected one argument'),
    (['--conf', 'choice.json'], 'give the config file as --config choice.json'),
    (['--config', 'list.json'], r"--config list.json: epochs: \[5\] is not a value of --epochs"),
    (['--config', 'binary.json'], '--config binary.json is not a text file'),
    (['--config', 'folder.json'], r"--config folder.json: that comparison ran with the data ham.npz \(SHA-256 abababababab\), this command with the embedded synthetic data: give --data"),
    (['--data', 'data.txt'], '--data must be a .npz file, a .csv table'),
    (['--data', 'text.npz'], 'text.npz is not a readable .npz file'),
    (['--data', 'cut.npz'], 'cut.npz is (not a readable|truncated)'),
    (['--data', 'obj.npz'], r"array 'class_names' holds Python objects \(dtype=object\)"),
    (['--data', 'bad.npz'], "'labels' must be"),
    (['--data', 'nokey.npz'], "has no 'images' array"),
    (['--data', 'chw.npz'], r'look channels-first, \(N, C, H, W\)'),
    (['--data', 'twochan.npz'], '1, 3 or 4 channels last'),
    (['--data', 'outside.npz'], 'label 7 is outside the 2 class names'),
    (['--data', 'onecls.npz'], 'has one class: there is nothing to classify'),
    (['--data', 'dupnames.npz'], r"the class names \['a'\] are given more than once"),
    (['--data', 'empty_images.npz'], r'the backbone resnet18 cannot take images of shape \(3, 0, 0\)'),
    (['--data', 'notrain.npz'], r"split has no 'train' items; its values are \['fit', 'valid'\] \(see --train\)"),
    (['--data', 'small.npz'], r'the training split has 30 items, fewer than the batch size 32 \(--recipe fast.s batch size\).*Use --bs 30 or less'),
    (['--data', 'nan.npz'], r"'signals' holds NaN or infinite values in 1 item\(s\): \[7\]"),
    (['--data', 'swapped.npz'], r'they look like \(N, T, leads\)'),
    (['--data', 'emptydir'], 'holds no WFDB records'),
    (['--data', 'badwfdb'], 'record R000 in .* cannot be read as WFDB'),
    (['--data', 'empty.csv', '--images', 'img'], 'empty.csv is not a readable CSV table'),
    (['--data', 'bin.csv', '--images', 'img'], 'bin.csv is not a readable CSV table'),
    # --images
    (['--data', 'ham.csv'], 'a table needs its image folder: pass --images DIR'),
    (['--data', 'ham.csv', '--images', 'noimg'], 'No such image folder: noimg'),
    (['--data', 'ham_missing.csv', '--images', 'img'], r'1 image\(s\) listed in the table are not in img, e.g. ISIC_9999.jpg'),
    (['--images', 'img'], '--images is for a CSV table given as --data; the embedded synthetic data does not use it'),
    # --task, --n-per-class: the synthetic data only
    (['--data', 'ecg.npz', '--task', 'multi'], r'--task is for the embedded synthetic data \(no --data\); ecg.npz \(signals\) does not use it'),
    (['--task', 'both'], "argument --task: invalid choice: 'both'"),
    (['--data', 'nosplit.npz', '--n-per-class', '5'], '--n-per-class is for the embedded synthetic data'),
    # --class-names: for a .npz without names, one name per class, each once
    (['--class-names', 'a,b'], r'--class-names is for a .npz file given as --data'),
    (['--data', 'nosplit.npz', '--class-names', 'normal,pneumonia,covid'], r'--class-names normal,pneumonia,covid: 3 name\(s\) for the 2 classes of nosplit.npz'),
    (['--data', 'nosplit.npz', '--class-names', 'normal,'], '--class-names normal,: an empty name'),
    (['--data', 'nosplit.npz', '--class-names', 'a,a'], 'given more than once'),
    (['--data', 'named.npz', '--class-names', 'x,y'], r"named.npz \(images\) names its classes already \(benign, malignant\)"),
    (['--n-per-class', '0'], '--n-per-class must be at least 1, got 0'),
    (['--n-per-class', '1000000'], '--n-per-class must be at most 100000'),
    (['--n-per-class', '5'], r'the training split has \d+ items, fewer than the batch size 32 .*or a larger --n-per-class'),
    # --valid, --train: data with a split of its own
    (['--data', 'split.npz', '--valid', 'val'], r"split has no 'val' items; its values are \['test', 'train'\] \(see --valid\)"),
    (['--data', 'split.npz', '--valid', 'test', '--train', 'train,test'], "the split value 'test' is both trained on"),
    (['--data', 'split.npz', '--valid', 'a,b'], '--valid names one split value'),
    (['--data', 'split.npz', '--train', ','], '--train names nothing'),
    (['--data', 'nosplit.npz', '--valid', 'test'], r'--valid is for data with a split of its own.*nosplit.npz \(images\) has no split array'),
    (['--data', 'ham.csv', '--images', 'img', '--train', 'train'], '--train is for data with a split of its own'),
    ([*WFDB, '--valid', 'test'], 'the WFDB folder wfdb has no split of its own: give --splits TABLE'),
    # WFDB folders: --fs, --seconds, --mapping, --min-count, --splits, --split-column
    ([*WFDB, '--fs', 'nan'], '--fs must be a finite number >= 1 and < 100000, got nan'),
    ([*WFDB, '--fs', '0.001'], '--fs must be a finite number >= 1'),
    ([*WFDB, '--seconds', '0'], '--seconds must be a finite number > 0 and < 86400, got 0'),
    ([*WFDB, '--seconds', '1e13'], '--seconds must be a finite number > 0 and < 86400, got 1e[+]13'),
    ([*WFDB, '--mapping', 'missing.csv'], 'No such file: missing.csv'),
    ([*WFDB, '--mapping', 'ham.csv'], r"ham.csv lacks the column\(s\) \['Abbreviation', 'SNOMEDCTCode'\]"),
    ([*WFDB, '--min-count', '99'], 'no diagnosis has at least 99 records'),
    ([*WFDB, '--min-count', '0'], '--min-count must be at least 1'),
    ([*WFDB, '--splits', 'missing.csv'], 'No such file: missing.csv'),
    ([*WFDB, '--splits', 'badsplits.csv'], r"badsplits.csv has no column\(s\) \['split'\]"),
    ([*WFDB, '--splits', 'splits.csv', '--valid', 'nope'], r"split has no 'nope' items; its values are \['\(not in the table\)', 'test', 'train'\]"),
    ([*WFDB, '--split-column', 'fold'], "--split-column is for a WFDB folder's --splits table"),
    ([*WFDB, '--splits', 'splits.csv', '--split-column', ''], '--split-column names nothing'),
    ([*WFDB, '--bs', '64', '--splits', 'splits.csv', '--valid', 'test'], r'the training split has 8 items, fewer than the batch size 64 \(--bs\)'),
    ([*WFDB, '--backbone', 'resnet18'], 'holds 1-D signals, which train resnet1d34'),
    (['--fs', '250'], '--fs is for folders of WFDB records; the embedded synthetic data does not use it'),
    (['--data', 'ecg.npz', '--seconds', '5'], r'--seconds is for folders of WFDB records; ecg.npz \(signals\) does not use it'),
    (['--mapping', 'splits.csv'], '--mapping is for folders of WFDB records'),
    (['--data', 'nosplit.npz', '--min-count', '2'], '--min-count is for folders of WFDB records'),
    (['--splits', 'splits.csv'], '--splits is for folders of WFDB records'),
    # images: --size, --in-chans, --backbone
    (['--data', 'ecg.npz', '--size', '16'], r'--size is for images; ecg.npz \(signals\) does not use it'),
    (['--data', 'ecg.npz', '--in-chans', '1'], '--in-chans is for images'),
    (['--in-chans', '2'], "argument --in-chans: invalid choice: 2"),
    (['--size', '0'], '--size must be at least 1, got 0'),
    (['--size', '100000'], '--size must be at most 4096'),
    (['--backbone', 'resnet81'], "unknown model name 'resnet81'"),
    (['--data', 'ecg.npz', '--backbone', 'resnet18'], 'train resnet1d34'),
    # augmentation
    (['--aug', 'rotate'], "argument --aug: invalid choice: 'rotate'"),
    (['--data', 'ecg.npz', '--aug', 'flip'], r'--aug is for images; ecg.npz \(signals\) does not use it'),
    ([*MULTI, '--aug', 'paper'], "--aug paper is CCL-Net's protocol for single-label images; multi-label data train with --aug none"),
    # the starting weights (--pretrained without a cache: tests/test_cli.py, with the network switched off)
    (['--pretrained', '--weights', 'wrong.pth'], '--pretrained and --weights both name the weights to start from: give one'),
    (['--weights', 'nofile.pth'], '--weights: no such file: nofile.pth'),
    (['--weights', 'wrong.pth', '--backbone', 'resnet10t'], r'wrong.pth does not hold the weights of resnet10t \(is it the file of another --backbone\?\): '
                                                            r'70 tensor\(s\) of resnet10t are not in the file, e.g. conv1.0.weight.*; 1 tensor\(s\) of the file are not in resnet10t, e.g. conv.weight'),
    (['--weights', 'text.npz', '--backbone', 'resnet10t'], 'text.npz is not a weights file: expected a PyTorch state dict or a checkpoint holding one'),
    (['--weights', '/etc/passwd', '--backbone', 'resnet10t'], 'passwd is not a weights file: expected a PyTorch state dict'),
    (['--weights', 'WEIGHTS/resnet34.pth'], r'resnet34.pth does not hold the weights of resnet18 .*: 80 tensor\(s\) of the file are not in resnet18, e.g. layer1.2.conv1.weight'),
    (['--weights', 'WEIGHTS/misshaped.pth', '--backbone', 'resnet10t'], r'1 differ in shape, e.g. layer1.0.conv1.weight \(64, 32, 3, 3\) in the file, \(64, 64, 3, 3\) in resnet10t'),
    (['--weights', 'WEIGHTS/nan.pth', '--backbone', 'resnet10t'], r'nan.pth: 1 tensor\(s\) hold NaN or infinite values, e.g. layer2.0.bn1.weight'),
    (['--data', 'ecg.npz', '--pretrained'], r"--pretrained is for image backbones \(timm's\); ecg.npz \(signals\) does not use it"),
    (['--data', 'ecg.npz', '--weights', 'wrong.pth'], "--weights is for image backbones"),
    # copies of an item on both sides of the split
    (['--data', 'ham_twice.csv', '--images', 'img'], r"\d+ item\(s\) of the evaluated split \(valid\) are identical to items of the training split \(train\), "
                                                    r"e.g. ISIC_\d+.jpg = ISIC_\d+.jpg.*: the same images would be trained on and scored; give copies one lesion_id"),
    (['--data', 'mm_leak.npz', '--valid', 'test'], r"1 item\(s\) of the evaluated split \(test\) are identical to items of the training split \(train\), "
                                                   r"e.g. test_images\[3\] = train_images\[5\]: .*remove the copies from one of the splits of mm_leak.npz"),
    (['--data', 'mm_leak.npz', '--select', 'test'], r"1 item\(s\) of the selection split \(test\) are identical to items of the training split \(train\), "
                                                    r"e.g. test_images\[3\] = train_images\[5\]: the same images would be trained on and selected on"),
    # labels a clinician would question
    (['--data', 'gap.npz'], r"the class indices \[3, 4, 5, 6\] have no item: the labels are \[0, 1, 2, 7\] and the data names no classes"),
    (['--data', 'evalonly.npz', '--valid', 'test'], r"1 class has no training item \('2': 20 item\(s\), 20 of them evaluated\)"),
    (['--data', 'noclass.npz'], r"1 class has no training item \('c': 0 item\(s\), 0 of them evaluated\)"),
    (['--data', 'emptyname.npz'], r"a class name is empty \(the names are \['a', ''\]\)"),
    (['--data', 'ham_padded.csv', '--images', 'img'], r"the class name\(s\) \[' nv'\] begin or end with spaces \(' nv' is 'nv' with spaces: two classes of one name\)"),
    (['--data', 'ham_dupcol.csv', '--images', 'img'], r"ham_dupcol.csv has the column\(s\) \['dx'\] more than once"),
    (['--data', 'multi_rare.npz'], r"1 label has no positive training item \('Hernia': positive in 10 item\(s\), 10 of them evaluated\)"),
    # device and precision (the tests run with the CPU as fastai's device, on any machine)
    (['--device', 'gpu'], "--device must be cpu, cuda or cuda:N, got 'gpu'"),
    (['--device', 'cuda:64'], r'--device cuda:64: (torch sees no CUDA GPU on this machine|this machine has \d+ GPU)'),
    (['--precision', 'bf16'], "--precision bf16 is fastai's mixed precision, which autocasts on CUDA only: on cpu, use --precision fp32"),
    (['--device', 'cpu', '--precision', 'fp16'], 'autocasts on CUDA only'),
    (['--precision', 'fp64'], "argument --precision: invalid choice: 'fp64'"),
    # several processes
    (['--jobs', '0'], '--jobs must be at least 1, got 0'),
    (['--shard', '3/2'], r'--shard I/N needs 1 <= I <= N, got 3/2'),
    (['--shard', 'half'], r"--shard must be I/N with whole numbers, e.g. 2/4, got 'half'"),
    # saved models
    (['--save-model', 'all'], "argument --save-model: invalid choice: 'all'"),
    (['--export', '--save-model', 'best'], '--export is --save-model last; it cannot go with --save-model best'),
    (['--save-model', 'best'], r'--save-model best chooses the epoch on a selection split: add --select'),
    (['--save-model', 'last', '--select', '0.2'], r'--save-model last with --select would export the last epoch.s model, while .*: --save-model best exports that one'),
    # the selection split
    (['--select', '1.5'], r'--select 1.5: a share of the training split is a number between 0 and 1'),
    (['--select', 'nan'], r'--select nan: a share of the training split is a number between 0 and 1'),
    (['--select', 'valid'], r"--select valid: the embedded synthetic data has no split of its own to take 'valid' from; hold out a share"),
    (['--data', 'split.npz', '--valid', 'test', '--select', 'test'], r'--select test is the evaluated split \(--valid test\)'),
    (['--data', 'split.npz', '--valid', 'test', '--select', 'nope'], r"split has no 'nope' items; its values are \['test', 'train'\] \(see --select\)"),
    (['--select', '0.001'], r'--select 0.001: \d+ training items cannot give a share held out stratified'),
    # --methods and the options of one kind of method
    (['--methods', ','], '--methods names nothing'),
    (['--methods', 'flowmixup'], 'do not fit single-label data'),
    (['--methods', 'baseline,baseline'], '--methods has repeated names'),
    (['--data', 'one.npz', '--methods', 'baseline,cutmix'], 'cutmix cuts and pastes image patches: it does not fit 1-D signals'),
    ([*MULTI, '--methods', 'flowmixup', '--backbone', 'resnet10t'], 'fewer than 5'),
    ([*MULTI, '--methods', 'flowmixup', '--points', 'nomodule'], r"--points \['nomodule'\] are not modules of resnet18"),
    (['--methods', 'baseline', '--points', 'layer1'], r'--points is for the methods that mix at hidden states .*; none of --methods baseline uses it'),
    (['--methods', 'baseline', '--alpha', '0.4'], '--alpha is for the mixing methods'),
    (['--methods', 'cutmix', '--alpha', '0'], 'alpha 0'),
    (['--methods', 'cutmix', '--alpha', 'nan'], '--alpha must be a finite number >= 0 and < 1000, got nan'),
    (['--methods', 'cutmix', '--alpha', '1e-50'], r'--alpha must be 0 \(no mixing\) or at least 0.001'),
    (['--methods', 'baseline', '--lsr-eps', '0.1'], '--lsr-eps is for the label-smoothing methods'),
    (['--methods', 'lsr-u1', '--lsr-eps', '1'], '--lsr-eps must be a finite number >= 0 and < 1, got 1'),
    (['--methods', 'baseline', '--head', '64'], '--head is for the CCL methods'),
    (['--methods', 'ccl', '--head', '64,x'], '--head must be comma-separated widths from 1 to 65536'),
    (['--methods', 'ccl', '--head', '99999999999'], '--head must be comma-separated widths from 1 to 65536'),
    (['--methods', 'baseline', '--lr-ccl', '0.1'], '--lr-ccl is for the CCL methods'),
    (['--methods', 'ccl', '--lr-ccl', '-1'], '--lr-ccl must be a finite number > 0, got -1'),
    (['--methods', 'baseline', '--ccl-patience', '3'], '--ccl-patience is for the CCL methods'),
    (['--methods', 'ccl', '--ccl-patience', '0'], '--ccl-patience must be at least 1'),
    (['--weighted-bce', 'yes'], '--weighted-bce is for multi-label data; the embedded synthetic data does not use it'),
    ([*MULTI, '--weighted-bce', 'maybe'], "argument --weighted-bce: invalid choice: 'maybe'"),
    # --noise, --noise-file, --noise-up: the noise model fits the task, its file the data's classes
    (['--noise', 'missing'], '--noise missing is for multi-label data; single-label data take --noise symmetric, pair, matrix, instance'),
    ([*MULTI, '--noise', 'pair'], '--noise pair is for single-label data'),
    (['--noise', 'loud'], "argument --noise: invalid choice: 'loud'"),
    (['--noise', 'matrix', '--corruption', '0.2'], '--noise matrix needs --noise-file'),
    (['--noise', 'matrix', '--noise-file', 'missing.csv'], '--noise-file: no such file: missing.csv'),
    (['--data', 'named.npz', '--noise', 'matrix', '--noise-file', 'M_rows.csv', '--corruption', '0.2'], r"each row of M_rows.csv's matrix must sum to 1 .*rows \[0\] sum to \[1.1\]"),
    (['--data', 'named.npz', '--noise', 'matrix', '--noise-file', 'M_names.csv'], r"M_names.csv: the rows of the transition matrix must name the data's classes \['benign', 'malignant'\]"),
    (['--noise', 'pair', '--noise-file', 'M_rows.csv'], '--noise-file is for --noise matrix, instance, missing, asymmetric; --noise pair does not use it'),
    (['--data', 'named.npz', '--noise', 'instance', '--noise-file', 'feat3.npy', '--corruption', '0.2'], "feat3.npy has 3 rows; the data has 60 items: one row per item"),
    (['--data', 'named.npz', '--noise', 'instance', '--noise-file', 'text.pkl', '--corruption', '0.2'], "--noise-file text.pkl: not a fastai export that load_learner reads"),
    (['--data', 'named.npz', '--noise', 'instance', '--noise-file', 'feat3.npy', '--corruption', '1'], r'corruption rates must be in \[0, 1\)'),
    ([*MULTI, '--noise', 'missing', '--noise-file', 'rates_bad.csv'], r'rates_bad.csv: the rates must be numbers in \[0, 1\]'),
    ([*MULTI, '--noise', 'asymmetric', '--corruption', '0.3'], '--noise asymmetric needs the rate at which negatives turn on: --noise-up'),
    ([*MULTI, '--noise', 'asymmetric', '--noise-up', '5', '--corruption', '0.3'], '--noise-up 5 × --corruption 0.3 is more than 1'),
    ([*MULTI, '--noise', 'asymmetric', '--noise-up', '-1'], '--noise-up must be a finite number >= 0, got -1'),
    (['--noise', 'pair', '--noise-up', '0.1'], '--noise-up is for --noise asymmetric; --noise pair does not use it'),
    (['--corruption', '1', '--noise', 'pair'], r'corruption rates must be in \[0, 1\)'),
    ([*MULTI, '--methods', 'erm,gce'], r"method\(s\) \['gce'\] do not fit multi-label data \(gce is defined on a softmax over classes; multi-hot labels have none\)"),
    # --soft-labels: the matrix the method soft-labels trains towards, read against the data's classes
    (['--methods', 'baseline,soft-labels'], "soft-labels trains towards a given soft-label matrix: name its file with --soft-labels"),
    (['--methods', 'soft-labels', '--soft-labels', 'nofile.npz'], '--soft-labels: no such file: nofile.npz'),
    (['--data', 'named.npz', '--methods', 'soft-labels', '--soft-labels', 'M_rows.csv'], r"each row of M_rows.csv's soft-label matrix must sum to 1 \(within 0.0001\): rows \[0\] sum to \[1.1\]"),
    (['--data', 'named.npz', '--methods', 'soft-labels', '--soft-labels', 'M_names.csv'], r"M_names.csv: the rows of the soft-label matrix must name the data's classes"),
    (['--methods', 'baseline', '--soft-labels', 'M_rows.csv'], r'--soft-labels is for training with a given soft-label matrix \(soft-labels\); none of --methods baseline uses it'),
    # soft targets: checked as read; only the methods and the noise defined on them
    (['--data', 'msoft.npz', '--methods', 'soft-labels', '--soft-labels', 'M_rows.csv'], r"msoft.npz \(images\) holds soft targets \(per-label probabilities\), and soft-labels is defined on hard labels only here: choose from erm, mixup-a1, mixup-a3, manifold, flowmixup, flowmixup-noop, bootstrap-soft, bootstrap-hard, elr, coteaching"),
    (['--data', 'msoft.npz', '--methods', 'ccl'], r"holds soft targets \(per-label probabilities\), and ccl is defined on hard labels only here: choose from erm, "),
    (['--data', 'soft.npz', '--methods', 'baseline', '--corruption', '0.2'], r"none is defined on soft targets; give --corruption 0, not 0.2"),
    (['--data', 'soft_both.npz'], r"soft_both.npz has both 'labels' and 'label_distributions': give one"),
    (['--data', 'soft_rows.npz'], r"each row of soft_rows.npz: 'label_distributions' must sum to 1 \(within 0.0001\): 60 row\(s\) do not, e.g. row 0 sums to 0.9"),
    (['--data', 'mblank.npz'], r"mblank.npz: 'labels' may hold 1, 0, −1 \(uncertain\) and blank/NaN \(unmentioned\); got \[0.1"),
    # CheXpert-coded findings: --uncertain required where a −1 is, and only there
    (['--data', 'muncertain.npz'], r"muncertain.npz \(images\) has 3 uncertain \(−1\) finding\(s\) in 1 item\(s\): say how they train with --uncertain \{ignore,zeros,ones,zeros-lsr,ones-lsr\}"),
    (['--data', 'muncertain.npz', '--uncertain', 'maybe'], r"--uncertain must be one of ignore, zeros, ones, zeros-lsr, ones-lsr, got 'maybe'"),
    (['--data', 'muncertain.npz', '--uncertain', 'ignore', '--methods', 'erm,flowmixup'], r"--uncertain ignore leaves findings out of the targets, and flowmixup is not defined with entries left out: it mixes two items' targets, and a finding left out of one of them has no mixed target; choose from erm, elr, coteaching"),
    (['--data', 'msoft.npz', '--uncertain', 'ones'], r"--uncertain is for multi-label data with uncertain \(−1\) findings; msoft.npz \(images\) does not use it"),
    (['--methods', 'baseline', '--forget-rate', '0.2'], '--forget-rate is for co-teaching \\(coteaching\\); none of --methods baseline uses it'),
    (['--methods', 'coteaching', '--forget-rate', '1'], '--forget-rate must be a finite number >= 0 and < 1, got 1'),
    ([*MULTI, '--methods', 'erm,cl'], r"method\(s\) \['cl'\] do not fit multi-label data \(cl \(confident learning\) is run here on class indices"),
    # --corruption, --seeds
    (['--corruption', '1.0'], r'corruption rates must be in \[0, 1\)'),
    (['--corruption', '-0.1'], r'corruption rates must be in \[0, 1\)'),
    (['--corruption', 'nan'], r'corruption rates must be in \[0, 1\)'),
    (['--corruption', 'x'], '--corruption must be comma-separated numbers'),
    (['--corruption', ''], '--corruption names no value'),
    (['--corruption', '0.3,0.30000001'], 'repeated rates'),
    (['--corruption', '0.1000001'], r'--corruption rates have at most 6 significant digits'),
    (['--seeds', '1.7'], 'integers'),
    (['--seeds', 'nan'], 'integers'),
    (['--seeds', '-1'], r'--seeds must be in \[0, 2\*\*32\)'),
    (['--seeds', '0,0'], 'repeated'),
    # training settings
    (['--recipe', 'slow'], "argument --recipe: invalid choice: 'slow'"),
    (['--epochs', '0'], '--epochs must be at least 1, got 0'),
    (['--epochs', '1.5'], "argument --epochs: invalid int value: '1.5'"),
    (['--lr', '0'], '--lr must be a finite number > 0, got 0'),
    (['--lr', 'nan'], '--lr must be a finite number > 0, got nan'),
    (['--lr', 'inf'], '--lr must be a finite number > 0, got inf'),
    (['--bs', '1'], r'--bs must be at least 2 \(a batch of one item cannot train BatchNorm\)'),
    (['--bs', 'x'], "argument --bs: invalid int value: 'x'"),
    (['--bs', '5000'], r'fewer than the batch size 5000 \(--bs\)'),
    (['--opt', 'rmsprop'], "argument --opt: invalid choice: 'rmsprop'"),
    (['--wd', '-1'], '--wd must be a finite number >= 0, got -1'),
    (['--wd', 'nan'], '--wd must be a finite number >= 0, got nan'),
    (['--schedule', 'cosine'], "argument --schedule: invalid choice: 'cosine'"),
    (['--clip', 'inf'], '--clip must be a finite number >= 0, got inf'),
    (['--threads', '0'], '--threads must be at least 1, got 0'),
    (['--threads', '100000000000'], '--threads must be at most 1024'),
    (['--progress', 'quiet'], "argument --progress: invalid choice: 'quiet'"),
    (['--export=yes'], "argument --export: ignored explicit argument 'yes'"),
    (['--unknown'], 'unrecognized arguments: --unknown'),
    # --out, --resume
    (['--out', 'no/such/folder/res'], 'the folder that would hold no/such/folder/res does not exist'),
    (['--out', 'ham.csv'], r'the results folder ham.csv exists already \(a file\): choose another --out'),
    (['--out', 'existing'], 'the results folder existing exists already: choose another --out, or add --resume'),
    (['--out', 'READ_ONLY/res'], 'cannot be made: .* is not writable'),
    (['--out', 'locked'], 'the results folder locked is in use by another softlabel command: wait for it to finish, or choose another --out'),
    (['--out', 'dangling'], r'--out dangling is a symbolic link to .*nowhere/res, which does not exist: remove the link, or choose another --out'),
    (['--resume', '--out', 'nofolder'], 'not a results folder'),
    (['--resume', '--out', 'existing'], r'--resume: existing is not a results folder of softlabel \(no config.json\)'),
    (['--resume', '--out', 'corrupt'], r'corrupt/config.json cannot be read \(JSONDecodeError\)'),
    (['--resume', '--out', 'locked'], r'in use by another softlabel command: wait for it to finish \(it finishes the runs itself'),
    (['--resume', '--out', 'other'], r"--resume: other was made with other settings \(.*--epochs 99 → 5"),
    # softlabel report
    (['report'], 'the following arguments are required: out'),
    (['report', 'nofolder'], 'nofolder is not a results folder of softlabel'),
    (['report', 'corrupt'], 'corrupt/config.json cannot be read'),
    (['report', 'norun'], 'norun holds no finished run yet'),
]

def _tree(d:Path)->dict:
    "Every file and folder under `d` with its contents' hash: what 'nothing written' compares"
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else 'dir' for p in sorted(d.rglob('*'))}

@contextlib.contextmanager
def _held_by_another_command(folder:Path):
    "The lock a running softlabel command holds on its results folder"
    from fastai_softlabel.cli import LOCK_FILE
    with open(folder/LOCK_FILE) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield

@pytest.mark.parametrize('args,message', CASES, ids=[' '.join(a) or '(none)' for a,_ in CASES])
def test_bad_input_one_line_nothing_written(inputs, weights, args, message, monkeypatch, capsys):
    "In-process (`cli.main`, as the console script calls it): exit 2, one `softlabel: error:` line naming the problem, nothing written"
    from fastai_softlabel.cli import main
    args = [a.replace('READ_ONLY', _read_only_parent(inputs)).replace('WEIGHTS', str(weights)) for a in args]
    if not any(a in args for a in ('--out', 'report')): args = [*args, '--out', 'res']
    before = _tree(inputs)
    monkeypatch.chdir(inputs)
    with _held_by_another_command(inputs/'locked'), pytest.raises(SystemExit) as e: main(args)
    assert e.value.code == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith('softlabel: error: '), lines
    assert re.search(message, lines[0]), lines[0]
    assert _tree(inputs) == before, 'something was written'

def test_every_option_is_in_the_table():
    "A new option of the command needs a bad value in `CASES`"
    from fastai_softlabel.arguments import command_parser as _parser
    options = {s for a in _parser()._actions for s in a.option_strings if s.startswith('--') and s != '--help'}
    used = {a.split('=')[0] for args,_ in CASES for a in args if a.startswith('--')}
    assert options - used == set(), f"options without a bad value in CASES: {sorted(options - used)}"

def test_console_script_error_is_the_whole_of_stderr(tmp_path):
    "No warning from importing fastai either: the one line is all of stderr"
    import subprocess, sys
    exe = Path(sys.executable).parent/'softlabel'
    r = subprocess.run([str(exe), '--lr', 'nan', '--out', 'res'], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.splitlines() == ['softlabel: error: --lr must be a finite number > 0, got nan'], r.stderr
    assert list(tmp_path.iterdir()) == []

@pytest.mark.parametrize('args,message', [(['--jobs', '2'], '--jobs runs independent runs in worker processes: under torchrun'),
                                          (['--shard', '1/2'], '--shard gives a process a share of the runs: under torchrun'),
                                          (['--methods', 'baseline,elr'], 'elr keeps one target per training item, and each process sees only its share'),
                                          (['--methods', 'coteaching'], 'coteaching trains a peer network that DDP does not synchronise'),
                                          (['--methods', 'cl'], 'cl trains its k folds in each process alone')])
def test_torchrun_refuses_jobs_and_shards(tmp_path, monkeypatch, capsys, args, message):
    "A process that torchrun started (WORLD_SIZE > 1) refuses what would split the runs among processes, and the methods that train in one process, before joining a process group"
    from fastai_softlabel.cli import main
    monkeypatch.chdir(tmp_path); monkeypatch.setenv('WORLD_SIZE', '2'); monkeypatch.setenv('RANK', '0')
    with pytest.raises(SystemExit) as e: main([*args, '--out', 'res'])
    assert e.value.code == 2 and message in capsys.readouterr().err and list(tmp_path.iterdir()) == []
