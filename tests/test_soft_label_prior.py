"""A learned soft-label matrix reused: `SoftLabelCE` with a CCL fit's matrix is CCL's own KL term on the same logits; as a
Learner's loss it goes through get_preds (with losses), export/predict and lr_find; the command saves each CCL run's
matrix with its classes and trains the method soft-labels towards it."""
import json, sys
import numpy as np, pytest, torch
from fastai.vision.all import *
from conftest import tiny_cnn, make_dls, snapshot, assert_nested_equal, item_images, softlabel_here
from fastai_softlabel.ccl import CCL
from fastai_softlabel.soft_label_prior import SoftLabelCE, soft_label_prior_loss, read_soft_labels

class KLSpy(Callback):
    "The training loss just before and just after CCL's `after_loss` (order 51): their difference is the KL term CCL added"
    run_valid = False   # as CCL: training batches only
    def __init__(self, order): self.order = order
    def before_fit(self): self.seen = []
    def after_loss(self): self.seen.append((self.learn.loss.detach().clone(), self.learn.pred.detach().clone(), self.learn.yb[0].clone()))

def test_with_a_ccl_fits_matrix_it_is_ccls_kl_term(dls):
    "On every batch of a CCL fit whose class dictionary is frozen, CCL's added KL equals SoftLabelCE of its soft labels on the same logits"
    set_seed(0)
    learn = Learner(dls, tiny_cnn(dls.c), cbs=[CCL(widths=(32, 16), lr_ccl=0.05)])
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)   # a learned dictionary ...
    learn.ccl.freeze_dictionary()                                  # ... kept as it is from here on
    P = learn.ccl.soft_labels.clone()
    before,after = KLSpy(50),KLSpy(52)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=[before, after])
    assert_nested_equal(snapshot(learn.ccl.soft_labels), snapshot(P))   # frozen: the same matrix throughout
    assert len(before.seen) == len(after.seen) == len(dls.train)
    for (l0,pred,y),(l1,_,_) in zip(before.seen, after.seen):
        torch.testing.assert_close(l1 - l0, SoftLabelCE(P)(pred, y), rtol=1e-5, atol=1e-6)

def test_in_a_learner(dls, tmp_path):
    "get_preds(with_loss=True) gives the per-item losses; export/predict decodes the class; lr_find leaves the model as it was"
    P = np.full((4, 4), .1) + .6*np.eye(4)
    set_seed(0)
    learn = Learner(dls, tiny_cnn(dls.c), loss_func=SoftLabelCE(P), path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    before = snapshot(learn.model.state_dict())
    with learn.no_bar(), learn.no_logging(): learn.lr_find(num_it=5, show_plot=False)
    assert_nested_equal(snapshot(learn.model.state_dict()), before)
    with learn.no_bar(): probs,targs,losses = learn.get_preds(with_loss=True)
    logits = torch.log(probs)   # softmax(log p) = p: the same per-item losses
    torch.testing.assert_close(losses, soft_label_prior_loss(logits, targs, torch.tensor(P), 'none'), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))
    learn.export('export.pkl')
    back = load_learner(tmp_path/'export.pkl')
    item = item_images(dls, dls.valid_ds.items[:1])[0]
    with back.no_bar(), learn.no_bar(): assert back.predict(item)[1] == learn.predict(item)[1]

def test_the_command_reuses_a_ccl_runs_matrix(tmp_path, monkeypatch):
    "A CCL run writes soft_labels.npz (its matrix, exact, with its classes); soft-labels trains towards it, fingerprinted in config.json"
    fast = ['--epochs', '1', '--bs', '16', '--n-per-class', '12', '--size', '16', '--backbone', 'resnet10t', '--progress', 'log', '--threads', '1']
    monkeypatch.chdir(tmp_path)
    softlabel_here(*fast, '--methods', 'ccl', '--out', 'ccl')
    softlabel_here(*fast, '--methods', 'baseline,soft-labels', '--soft-labels', 'ccl/runs/ccl_seed0_c0/soft_labels.npz', '--save-model', 'last', '--out', 'reuse')
    run = Path('ccl/runs/ccl_seed0_c0')
    z = np.load(run/'soft_labels.npz')
    np.testing.assert_allclose(z['soft_labels'], np.loadtxt(run/'soft_labels.csv', delimiter=','), atol=1e-6)
    cfg = json.loads(Path('ccl/config.json').read_text())
    assert [str(c) for c in z['class_names']] == [str(c) for c in cfg['classes']]
    np.testing.assert_array_equal(read_soft_labels(run/'soft_labels.npz', cfg['classes']), z['soft_labels'])
    reuse = json.loads(Path('reuse/config.json').read_text())
    assert reuse['settings']['soft_labels']['name'] == 'soft_labels.npz' and len(reuse['settings']['soft_labels']['sha256']) == 64
    rows = {r['method']: r for r in json.loads(Path('reuse/runs.json').read_text())}
    assert set(rows) == {'baseline', 'soft-labels'} and all(r['diverged_epoch'] is None for r in rows.values())
    loss = load_learner('reuse/runs/soft-labels_seed0_c0/export.pkl').loss_func   # the run trained towards the file's matrix
    assert isinstance(loss, SoftLabelCE) and torch.equal(loss.P, torch.tensor(z['soft_labels'], dtype=torch.float32))

def test_the_selected_epochs_soft_labels_are_kept(dls):
    "Under a selection split the described epoch is the best one: BestModel keeps CCL's soft labels of that epoch, not the last"
    from fastai_softlabel.experiments import BestModel
    class EachEpoch(Callback):
        order = BestModel.order + 1
        def before_fit(self): self.P = []
        def after_epoch(self): self.P.append(self.learn.ccl.soft_labels)
    set_seed(0)
    learn = Learner(dls, tiny_cnn(dls.c), metrics=accuracy, cbs=[CCL(widths=(32, 16), lr_ccl=0.5)])
    best,each = BestModel('valid_loss'),EachEpoch()
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 1e-2, cbs=[best, each])
    assert best.best_epoch is not None and torch.equal(best.soft_labels, each.P[best.best_epoch])
    assert not torch.equal(each.P[0], each.P[-1])   # the dictionary moved: an earlier epoch's matrix is another
