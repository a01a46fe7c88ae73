"""Multi-task learning: task specs and their one-line errors, the objective's per-task losses
(hand computations), the gradient surrogate's exactness, regression heads in the target's units
(MSE and R^2 equal to scikit-learn's), Delta-m%, and the ``multitask`` strategy."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import mean_squared_error, r2_score

from transferkit.backbones import create_backbone
from transferkit.data import DomainDataset
from transferkit.errors import ConfigError, DataError
from transferkit.pretrain.multitask import (
    MultiTaskModel,
    MultiTaskObjective,
    TaskSpec,
    delta_m,
    parse_heads,
    read_targets,
)
from transferkit.pretrain.weighting import pcgrad_combine, task_gradients
from transferkit.train import StepContext

pytestmark = pytest.mark.usefixtures("one_thread")

HEADS = {"digit": "classification", "parity": "classification", "angle": "regression"}


def _toy(n=40, seed=0, **attrs):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    digit = rng.integers(0, 4, size=n)
    base = {"digit": digit, "parity": digit % 2, "angle": 30.0 * X[:, 0] + 5.0}
    base.update(attrs)
    return DomainDataset(X, digit.astype(np.int64), "toy", "tabular", classes=list("abcd"), meta={"attributes": base})


def _encoder(d=5):
    torch.manual_seed(0)
    return create_backbone("tiny_mlp", pretrained=False, in_features=d, width=8)


def _ctx(model, ds, idx, epoch=0, step=0):
    idx = np.asarray(idx)
    return StepContext(model=model, inputs=torch.as_tensor(ds.inputs[idx]), labels=torch.as_tensor(ds.labels[idx]),
                       indices=torch.as_tensor(idx), epoch=epoch, step=step)


# ------------------------------------------------------------------------------ task specs
def test_heads_parse_in_both_forms_and_keep_their_order():
    tasks = parse_heads({"digit": "classification", "angle": {"type": "regression", "weight": 0.5, "column": "a"}})
    assert tasks == [TaskSpec("digit", "classification", 1.0, "digit"), TaskSpec("angle", "regression", 0.5, "a")]


@pytest.mark.parametrize("heads,fragment", [
    ({"digit": "classifcation"}, r"heads.digit='classifcation' is not a head type. Did you mean 'classification'"),
    ({"a": {"type": "regresion"}}, r"heads.a.type='regresion' is not a head type. Did you mean 'regression'"),
    ({"a": {"type": "regression", "wieght": 2}}, r"heads.a has an unknown key 'wieght'. Did you mean 'weight'"),
    ({"a": {"type": "regression", "weight": -1}}, r"heads.a.weight=-1 must be a finite number > 0"),
    ({"a": {"weight": 1}}, r"heads.a has no type"),
    ({}, r"heads is empty"),
    ({"a.b": "regression"}, r"a head named 'a.b'"),
    (["digit"], r"must be a mapping of head names to types"),
])
def test_bad_head_specs_are_one_line(heads, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_heads(heads)
    assert "\n" not in str(info.value)


def test_a_missing_column_names_the_columns_the_dataset_has():
    ds = _toy()
    with pytest.raises(DataError, match=r"head 'angel' reads column 'angel', which dataset 'toy' does not have \(its "
                                        r"columns: label, digit, parity, angle\). Did you mean 'angle'"):
        read_targets(ds, parse_heads({"angel": "regression"}))


def test_a_regression_head_given_strings_is_one_line():
    ds = _toy(angle=np.array(["x"] * 40))
    with pytest.raises(DataError, match=r"^head 'angle' is regression but column 'angle' holds strings such as 'x'; "
                                        r"give numbers or make it a classification head.$"):
        read_targets(ds, parse_heads({"angle": "regression"}))
    obj = np.array([1.5] * 39 + ["x"], dtype=object)  # a mixed column (a CSV with one bad cell)
    with pytest.raises(DataError, match="holds strings such as 'x'"):
        read_targets(_toy(angle=obj), parse_heads({"angle": "regression"}))


def test_classification_labels_must_be_integers():
    with pytest.raises(DataError, match=r"head 'angle' is classification but column 'angle' holds values that are "
                                        r"not class indices, such as -?[0-9.]+; give integers 0..K-1.*or make it a "
                                        r"regression head"):
        read_targets(_toy(), parse_heads({"angle": "classification"}))
    with pytest.raises(DataError, match=r"head 'parity' is classification but column 'parity' holds strings such as "
                                        r"'odd'; give integer class indices"):
        read_targets(_toy(parity=np.array(["odd"] * 40)), parse_heads({"parity": "classification"}))
    y = read_targets(_toy(parity=np.r_[np.nan, np.ones(39)]), parse_heads({"parity": "classification"}))["parity"]
    assert y.dtype == np.int64 and y[0] == -1  # NaN: a missing class


def test_the_label_column_is_the_datasets_labels():
    ds = _toy()
    y = read_targets(ds, parse_heads({"label": "classification"}))["label"]
    assert np.array_equal(y, ds.labels)
    sub = ds.subset([3, 1, 7])  # attributes follow their rows
    assert np.array_equal(read_targets(sub, parse_heads(HEADS))["angle"], ds.meta["attributes"]["angle"][[3, 1, 7]])


# ------------------------------------------------------------------------------ the objective
def test_task_losses_are_ce_and_standardized_mse_of_the_batch_rows():
    ds = _toy()
    enc = _encoder()
    obj = MultiTaskObjective(HEADS, ds, enc.feature_dim)
    ang = ds.meta["attributes"]["angle"]
    h = obj.heads["angle"]
    assert float(h.mean) == pytest.approx(ang.mean(), rel=1e-6) and float(h.std) == pytest.approx(ang.std(), rel=1e-6)
    idx = np.array([5, 0, 9, 17])
    out = obj(_ctx(enc, ds, idx))
    with torch.no_grad():
        f = enc(torch.as_tensor(ds.inputs[idx]))
        d = torch.as_tensor(ds.meta["attributes"]["digit"][idx])
        ce = F.cross_entropy(obj.heads["digit"](f), d)
        z = torch.as_tensor((ang[idx] - ang.mean()) / ang.std(), dtype=torch.float32)
        mse = ((obj.heads["angle"](f) - z) ** 2).mean()
        par = F.cross_entropy(obj.heads["parity"](f), d % 2)
    assert float(out["loss_digit"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(out["loss_angle"]) == pytest.approx(float(mse), rel=1e-5)
    assert float(out["loss"].detach()) == pytest.approx(float(ce + mse + par), rel=1e-5)  # equal weighting: the sum
    assert "logits" not in out  # the primary head reads 'digit', not the labels the Trainer scores against


def test_rows_without_a_value_leave_that_tasks_loss_and_static_weights_apply():
    ang = _toy().meta["attributes"]["angle"].copy()
    ang[[0, 1]] = np.nan
    ds = _toy(angle=ang)
    enc = _encoder()
    obj = MultiTaskObjective({"digit": "classification", "angle": {"type": "regression", "weight": 0.5}}, ds,
                             enc.feature_dim)
    assert float(obj.heads["angle"].mean) == pytest.approx(np.nanmean(ang), rel=1e-6)
    out_missing = obj(_ctx(enc, ds, [0, 1]))
    assert float(out_missing["loss_angle"]) == 0.0
    both = obj(_ctx(enc, ds, [0, 1, 2, 3]))
    only = obj(_ctx(enc, ds, [2, 3]))
    assert float(both["loss_angle"]) == pytest.approx(float(only["loss_angle"]), rel=1e-6)
    assert float(both["loss"].detach()) == pytest.approx(float(both["loss_digit"] + 0.5 * both["loss_angle"]), rel=1e-5)


def test_rows_with_a_hidden_label_train_no_head():
    """A split that hides labels (domain adaptation's unlabeled rows) keeps the rows' attributes:
    they must not become training targets."""
    ds = _toy()
    ds.labels[:10] = -1
    obj = MultiTaskObjective(HEADS, ds, 8)
    assert (obj.targets_digit[:10] == -1).all() and torch.isnan(obj.targets_angle[:10]).all()
    assert (obj.targets_digit[10:] >= 0).all() and not torch.isnan(obj.targets_angle[10:]).any()
    assert float(obj.heads["angle"].mean) == pytest.approx(ds.meta["attributes"]["angle"][10:].mean(), rel=1e-6)
    assert (read_targets(ds, parse_heads(HEADS))["digit"][:10] >= 0).all()  # scoring reads every row


def test_a_gradient_aggregator_puts_exactly_the_combined_gradient_in_the_shared_grads():
    ds = _toy()
    enc = _encoder()
    obj = MultiTaskObjective(HEADS, ds, enc.feature_dim, weighting="pcgrad", weighting_options={"seed": 1})
    idx = np.arange(12)
    shared = list(enc.parameters())
    # the reference: the task gradients and PCGrad's combination, computed apart
    f = enc(torch.as_tensor(ds.inputs[idx]))
    L, _ = obj.task_losses(f, torch.as_tensor(idx))
    want = pcgrad_combine(task_gradients(L, shared), obj.weighting.order(7))
    head_want = torch.autograd.grad(L.sum(), list(obj.heads.parameters()))
    enc.zero_grad()
    obj.zero_grad()
    out = obj(_ctx(enc, ds, idx, step=7))
    out["loss"].backward()
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    for p, g in zip(obj.heads.parameters(), head_want):  # each head: its own loss's gradient
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7)
    assert float(out["loss"].detach()) == pytest.approx(float(L.detach().sum()), rel=1e-5)  # the value is the plain sum


def test_the_model_packs_heads_and_returns_regression_in_target_units():
    ds = _toy()
    enc = _encoder()
    obj = MultiTaskObjective(HEADS, ds, enc.feature_dim)
    model = obj.model(enc)
    assert isinstance(model, MultiTaskModel) and model.heads is obj.heads
    model.eval()
    with torch.no_grad():
        x = torch.as_tensor(ds.inputs[:6])
        Z = model(x).numpy()
        f = enc(x)
        raw = obj.heads["angle"](f).numpy()
    assert Z.shape == (6, 4 + 2 + 1)
    parts = model.unpack(Z)
    h = obj.heads["angle"]
    assert np.allclose(parts["angle"], raw * float(h.std) + float(h.mean), rtol=1e-5)
    assert parts["digit"].shape == (6, 4) and parts["parity"].shape == (6, 2)
    assert [g for g, _ in model.layer_groups()][-1] == "heads"


# ------------------------------------------------------------------------------------ delta-m
def test_delta_m_hand_example():
    mtl = {"acc": 0.9, "mse": 2.0}
    st = {"acc": 0.8, "mse": 2.5}
    # 100/2 * ((0.9 - 0.8)/0.8 - (2.0 - 2.5)/2.5) = 50 * (0.125 + 0.2)
    assert delta_m(mtl, st, {"acc": True, "mse": False}) == pytest.approx(16.25)
    assert delta_m([0.9, 2.0], [0.8, 2.5], [True, False]) == pytest.approx(16.25)
    assert delta_m([0.7], [0.8], True) == pytest.approx(-12.5)
    with pytest.raises(DataError, match=r"single_metrics\['mse'\] is 0"):
        delta_m({"mse": 1.0}, {"mse": 0.0}, False)
    with pytest.raises(DataError, match=r"mtl_metrics has keys \['acc'\] but single_metrics \['acc', 'mse'\]"):
        delta_m({"acc": 0.9}, st, True)
    with pytest.raises(DataError, match=r"mtl_metrics\[0\]=nan is not a finite number"):
        delta_m([math.nan], [1.0], True)


# ------------------------------------------------------------------------------- the strategy
@pytest.fixture(scope="module")
def digits():
    from transferkit.data.multitask import digits_multitask

    ds = digits_multitask(n=240, seed=0, size=16)
    return ds.subset(np.arange(160)), ds.subset(np.arange(160, 240))


def _strategy(**kw):
    from transferkit.strategies.multitask import MultiTask

    base = dict(backbone="tiny_cnn", pretrained=False, image_size=16, heads=HEADS, epochs=2, batch_size=32, lr=1e-2,
                backbone_lr_mult=1.0, device="cpu")
    base.update(kw)
    return MultiTask(**base)


def test_a_regression_heads_mse_and_r2_equal_sklearns_on_the_same_predictions(digits):
    train, test = digits
    s = _strategy().fit(train, test)
    pred = s.predict_tasks(test)["angle"]
    true = test.meta["attributes"]["angle"]
    m = s.task_metrics(test)
    assert m["angle"]["mse"] == pytest.approx(mean_squared_error(true, pred), rel=1e-10)
    assert m["angle"]["r2"] == pytest.approx(r2_score(true, pred), rel=1e-10)
    assert m["digit"]["accuracy"] == pytest.approx(s.score(test)) == pytest.approx(
        float((s.predict(test) == test.meta["attributes"]["digit"]).mean()))
    assert {"val_loss", "val_loss_angle", "val_accuracy", "loss_parity"} <= set(s.history_[-1])
    assert s.best_epoch_ is not None and s.n_classes_ == 10


def test_the_saved_state_predicts_as_the_fitted_model(digits, tmp_path):
    from safetensors.torch import load_file
    from safetensors import safe_open

    train, test = digits
    s = _strategy(weighting="uncertainty").fit(train)
    path = tmp_path / "model.safetensors"
    s.save(path)
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    back = _strategy(weighting="uncertainty").load_state(load_file(str(path)), meta)
    for k, v in s.predict_tasks(test).items():
        assert np.allclose(back.predict_tasks(test)[k], v, atol=1e-6), k
    with pytest.raises(DataError, match="has the heads"):
        _strategy(heads={"digit": "classification"}).load_state(load_file(str(path)), meta)


def test_strategy_validation_names_the_parameter():
    with pytest.raises(ConfigError, match=r"multitask.weighting='pcgard' is not a multi-task weighting. Did you mean"):
        _strategy(weighting="pcgard").validate()
    with pytest.raises(ConfigError, match=r"multitask.heads.angle='regresion' is not a head type"):
        _strategy(heads={"angle": "regresion"}).validate()
    with pytest.raises(ConfigError, match=r"multitask.monitor='val_accuracy' but the primary \(first\) head 'angle' "
                                          r"is regression"):
        _strategy(heads={"angle": "regression"}, monitor="val_accuracy").validate()
    _strategy(heads=None).validate()  # the default: one classification head on the labels


def test_a_missing_column_stops_fit_before_training(digits):
    train, _ = digits
    with pytest.raises(DataError, match=r"head 'rotation' reads column 'rotation'.*\(its columns: label, digit, "
                                        r"parity, angle, source_index\)"):
        _strategy(heads={"rotation": "regression"}).fit(train)


def test_check_target_refuses_missing_columns_and_string_regression_labels_before_a_run(digits):
    train, _ = digits
    _strategy().check_target(None, train)  # the heads' columns are there
    with pytest.raises(ConfigError, match=r"^multitask.heads: head 'rotation' reads column 'rotation'"):
        _strategy(heads={"rotation": "regression"}).check_target(None, train)
    bad = _toy(angle=np.array(["north"] * 40))
    with pytest.raises(ConfigError, match=r"multitask.heads: head 'angle' is regression but column 'angle' holds "
                                          r"strings such as 'north'; give numbers or make it a classification head"):
        _strategy(heads={"angle": "regression"}).check_target(None, bad)


@pytest.mark.parametrize("weighting", ["pcgrad", "upgrad"])
def test_a_gradient_aggregator_on_one_task_trains_as_equal_weighting(digits, weighting, one_thread):
    """One task: its gradient is the aggregate (the default pcgrad then costs nothing extra)."""
    if weighting == "upgrad":
        pytest.importorskip("torchjd")
    train, test = digits
    heads = {"angle": "regression"}
    a = _strategy(heads=heads, weighting="equal", seed=1).fit(train, test)
    b = _strategy(heads=heads, weighting=weighting, seed=1).fit(train, test)
    wa = torch.cat([p.detach().flatten() for p in a.model_.parameters()])
    wb = torch.cat([p.detach().flatten() for p in b.model_.parameters()])
    assert torch.equal(wa, wb)
    assert _strategy().weighting == "pcgrad"  # the default (see the strategy's docstring for the evidence)
