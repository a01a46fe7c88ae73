import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from transferkit.backbones import create_backbone
from transferkit.data import DomainDataset, load_digits_domain, sample_per_class
from transferkit.errors import ConfigError, DataError
from transferkit.strategies import FeatureExtraction, FineTune, Scratch
from transferkit.strategies.feature_extraction import logistic_as_linear


@pytest.mark.parametrize("classes", [[0, 1], [0, 1, 2, 3], [0, 2, 3]])
def test_logistic_as_linear_reproduces_predictions(classes):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = np.array(classes)[rng.integers(0, len(classes), 200)]
    X += y[:, None]
    clf = LogisticRegression().fit(X, y)
    W, b = logistic_as_linear(clf, 4)
    np.testing.assert_array_equal((X @ W.T + b).argmax(1), clf.predict(X))


@pytest.fixture(scope="module")
def digits_splits():
    d = load_digits_domain(size=16)
    tr, rest = sample_per_class(d.labels, 8, 0)
    return d.subset(tr), d.subset(rest[:300]), d.subset(rest[300:700])


def test_finetune_learns_and_records_groups(digits_splits):
    train, val, test = digits_splits
    s = FineTune(backbone=create_backbone("tiny_cnn", image_size=16), epochs=15, lr=3e-3, backbone_lr_mult=1.0,
                 lp_init=True, seed=0).fit(train, val)
    assert s.score(test) > 0.5  # chance is 0.1
    assert [g["name"] for g in s.param_groups_][-2:] == ["head", "head.no_decay"]
    assert s.best_epoch_ is not None and len(s.history_) == 15


def test_scratch_differs_from_finetune_only_in_initialization_and_recipe():
    sc, ft = Scratch(), FineTune()
    diff = {k for k, v in sc.get_params().items() if ft.get_params()[k] != v}
    assert diff == {"pretrained", "backbone_lr_mult", "lp_init", "freeze_bn"}


def test_early_stopping_stops_and_restores_best_epoch(digits_splits):
    train, val, _ = digits_splits
    s = FineTune(backbone=create_backbone("tiny_cnn", image_size=16), epochs=200, early_stopping=3,
                 lr=3e-3, seed=0).fit(train, val)
    h = s.history_
    assert len(h) < 200 and s.trainer_.stopped_early
    best = max(range(len(h)), key=lambda i: (h[i]["val_accuracy"], -i))
    assert s.best_epoch_ == best and len(h) - 1 - best == 3
    assert s.score(val) == pytest.approx(h[best]["val_accuracy"])  # the best weights are the ones kept


def test_seeded_runs_are_deterministic(digits_splits):
    train, val, test = digits_splits
    runs = [FineTune(backbone="tiny_cnn", pretrained=False, image_size=16, epochs=3, seed=1).fit(train, val)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].predict_logits(test), runs[1].predict_logits(test))


def test_unlabeled_training_samples_are_ignored(digits_splits):
    train, val, _ = digits_splits
    labels = train.labels.copy()
    labels[::2] = -1
    half = DomainDataset(train.inputs, labels, "half", "image", classes=train.classes)
    s = FineTune(backbone=create_backbone("tiny_cnn", image_size=16), epochs=1, seed=0).fit(half, val)
    assert len(s.history_) == 1
    none = DomainDataset(train.inputs, np.full(len(train), -1), "none", "image", classes=train.classes)
    with pytest.raises(DataError, match="no labeled samples"):
        FineTune(backbone=create_backbone("tiny_cnn", image_size=16), epochs=1).fit(none)


def test_feature_extraction_linear_head_and_auto_C(digits_splits):
    train, val, test = digits_splits
    bb = create_backbone("tiny_cnn", image_size=16, seed=0)  # random features, the same whatever ran before
    lin = FeatureExtraction(backbone=bb, head="linear", epochs=200).fit(train, val)
    logistic = FeatureExtraction(backbone=bb).fit(train, val)
    # the trained linear layer learns the task (chance 0.1) about as well as logistic regression
    # (over backbone seeds 0-2: 0.54-0.63 against 0.50-0.66)
    assert lin.score(test) > 0.45 and abs(lin.score(test) - logistic.score(test)) < 0.12
    assert lin.trainable_params_ == 64 * 10 + 10
    auto = FeatureExtraction(backbone=bb, C="auto").fit(train, val)
    assert auto.C_ in (0.01, 0.1, 1.0, 10.0)
    # C chosen on the validation split: no candidate scores higher there than the one kept
    Fv, Ftr = auto.transform(val), auto.transform(train)
    from sklearn.linear_model import LogisticRegression

    val_acc = {c: LogisticRegression(C=c, max_iter=5000, tol=1e-6).fit(Ftr, train.labels).score(Fv, val.labels)
               for c in (0.01, 0.1, 1.0, 10.0)}
    assert val_acc[auto.C_] == max(val_acc.values())


@pytest.mark.parametrize("kw,match", [
    ({"freeze_bn": "sometimes"}, "freeze_bn"),
    ({"unfreeze": "last:99"}, "unfreeze"),
    ({"lr": -1}, r"finetune.lr=-1 is out of range"),
    ({"layer_decay": 1.5}, "layer_decay"),
    ({"head": "transformer"}, "head"),
    ({"epochs": 0}, "epochs"),
])
def test_bad_finetune_parameters(digits_splits, kw, match):
    train, _, _ = digits_splits
    with pytest.raises(ConfigError, match=match):
        FineTune(backbone=create_backbone("tiny_cnn", image_size=16), **kw).fit(train)


def test_saved_feature_extraction_head_reproduces_predictions(digits_splits, tmp_path):
    import torch
    from safetensors.torch import load_file

    train, val, test = digits_splits
    bb = create_backbone("tiny_cnn", image_size=16)
    s = FeatureExtraction(backbone=bb).fit(train, val)
    s.save(tmp_path / "head.safetensors")
    st = load_file(str(tmp_path / "head.safetensors"))
    feats = torch.as_tensor(s.transform(test))
    logits = feats @ st["head.weight"].T + st["head.bias"]
    np.testing.assert_array_equal(logits.argmax(1).numpy(), s.predict(test))


def test_gradient_clipping_bounds_the_update():
    import torch

    from transferkit.finetune import build_param_groups
    from transferkit.train import Trainer

    d = load_digits_domain(size=16).subset(np.arange(64))
    torch.manual_seed(0)
    model = create_backbone("tiny_cnn", num_classes=10, image_size=16)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    Trainer(model, build_param_groups(model, 1.0), epochs=1, batch_size=64, optimizer="sgd", schedule="constant",
            warmup_epochs=0, grad_clip=1e-3, progress=False).fit(d)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    # one SGD step, Nesterov momentum 0.9: the update is 1.9 * lr * g with ||g|| <= 1e-3
    assert (after - before).norm() <= 1.9e-3 * 1.0001
