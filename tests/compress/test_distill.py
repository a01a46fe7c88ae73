"""Knowledge distillation: the Hinton KD loss, the KD objective, the FitNets hint, distill()."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferkit.backbones import create_backbone
from transferkit.compress.distill import (
    HintTerm, KDObjective, distill, kd_loss, teacher_logits_of, teacher_outputs,
)
from transferkit.data import DomainDataset
from transferkit.errors import ConfigError, DataError
from transferkit.train import StepContext, Trainer


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _hand_kd(s, t, y, T, alpha):
    ps, pt = _softmax(s / T), _softmax(t / T)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(1).mean()
    lab = y >= 0
    ce = -np.log(_softmax(s[lab])[np.arange(lab.sum()), y[lab]]).mean() if lab.any() else 0.0
    return alpha * T**2 * kl + (1 - alpha) * ce


def _logits(seed=0, n=6, k=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)) * 2, rng.normal(size=(n, k)) * 2


def test_kd_loss_equals_a_hand_computation():
    s, t = _logits()
    y = np.array([0, 3, -1, 2, -1, 1])
    for T, alpha in [(4.0, 0.9), (1.0, 0.5), (2.5, 1.0)]:
        got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature=T, alpha=alpha)
        assert got.item() == pytest.approx(_hand_kd(s, t, y, T, alpha), rel=1e-10)
    # no label at all: the distillation term alone, whatever alpha is
    got = kd_loss(torch.tensor(s), torch.tensor(t), None, temperature=3.0, alpha=0.7)
    assert got.item() == pytest.approx(0.7 * _hand_kd(s, t, np.full(6, -1), 3.0, 1.0), rel=1e-10)


def test_alpha_zero_is_cross_entropy_exactly():
    s, t = (torch.tensor(a, dtype=torch.float32) for a in _logits(1))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.equal(kd_loss(s, t, y, temperature=4.0, alpha=0.0), F.cross_entropy(s, y))
    y[[1, 4]] = -1  # unlabeled rows drop out of the cross-entropy
    assert torch.equal(kd_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y, ignore_index=-1))


def test_kl_is_zero_for_a_student_equal_to_the_teacher_and_the_teacher_gets_no_gradient():
    s, _ = _logits(2)
    s = torch.tensor(s, requires_grad=True)
    t = s.detach().clone().requires_grad_(True)
    loss = kd_loss(s, t, None, temperature=2.0, alpha=1.0)
    assert abs(loss.item()) < 1e-12
    loss.backward()
    assert t.grad is None and torch.allclose(s.grad, torch.zeros_like(s), atol=1e-12)


def test_t_squared_keeps_the_gradient_scale_at_high_temperature():
    # Hinton et al.: for T >> |z|, d(T^2 KL)/ds_i -> ((s_i - mean s) - (t_i - mean t)) / K (per row, / n)
    s, t = _logits(3, n=5, k=6)
    s, t = torch.tensor(s) * 0.1, torch.tensor(t) * 0.1
    n, k = s.shape
    want = ((s - s.mean(1, keepdim=True)) - (t - t.mean(1, keepdim=True))) / (k * n)
    for T in (20.0, 50.0):
        sv = s.clone().requires_grad_(True)
        kd_loss(sv, t, None, temperature=T, alpha=1.0).backward()
        # the error of the first-order expansion is O(|z| / T): about 1% here
        assert float((sv.grad - want).norm() / want.norm()) < 0.03, T


def test_kd_loss_rejects_bad_arguments():
    s, t = (torch.tensor(a) for a in _logits())
    with pytest.raises(ConfigError, match="temperature"):
        kd_loss(s, t, temperature=0.0)
    with pytest.raises(ConfigError, match="temperature"):
        kd_loss(s, t, temperature=-1.0)
    with pytest.raises(ConfigError, match="alpha"):
        kd_loss(s, t, alpha=1.5)
    with pytest.raises(ConfigError, match="student has 3 outputs but the teacher 4 classes"):
        kd_loss(s[:, :3], t)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 4\)"):
        kd_loss(s, t, torch.tensor([0, 1, 2, 4, 0, 0]), alpha=0.5)
    with pytest.raises(ConfigError, match="temperature"):
        KDObjective(t.numpy(), temperature=0)


# ----------------------------------------------------------------------------- training
def _table(n, seed, labels=True):
    """Three Gaussian classes in 8 dimensions (the first three coordinates carry the class)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = (rng.normal(size=(n, 8)) + 3.0 * np.eye(8)[y]).astype(np.float32)
    return DomainDataset(X, y if labels else np.full(n, -1), "toy", "tabular", classes=["a", "b", "c"])


def _mlp(width, seed, k=3):
    return create_backbone("tiny_mlp", num_classes=k, pretrained=False, in_features=8, width=width, seed=seed)


def _accuracy(model_or_trainer, ds):
    z = model_or_trainer.predict_logits(ds) if hasattr(model_or_trainer, "predict_logits") else \
        teacher_outputs(model_or_trainer, ds)
    return float((z.argmax(1) == ds.labels).mean())


@pytest.fixture(scope="module")
def teacher():
    """A tiny_mlp teacher trained on 150 labeled rows (94% test accuracy)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        m = _mlp(32, seed=0)
        Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=5, batch_size=32, progress=False,
                device="cpu").fit(_table(150, seed=1))
    finally:
        torch.set_num_threads(n)
    return m


def _weights(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_a_student_distilled_on_unlabeled_rows_learns_the_task(teacher, one_thread):
    test = _table(300, seed=9)
    assert _accuracy(teacher, test) > 0.9
    unlabeled = _table(200, seed=2, labels=False)  # the student never sees a label
    student = _mlp(8, seed=1)
    chance = _accuracy(student, test)
    tr = distill(teacher_logits_of(teacher, unlabeled), student, unlabeled, temperature=2.0, alpha=0.9, epochs=8,
                 lr=1e-2)
    acc = _accuracy(tr, test)
    assert acc > 0.85 and acc > chance + 0.3, (chance, acc)
    row = tr.history[-1]
    assert row["ce"] == 0.0 and row["kd"] < tr.history[0]["kd"] and "train_accuracy" not in row


def test_a_module_teacher_stays_frozen_and_trains_as_its_precomputed_logits(teacher, one_thread):
    data = _table(96, seed=3, labels=False)
    before = _weights(teacher)
    modes = []
    hook = teacher.register_forward_hook(lambda mod, inp, out: modes.append((mod.training, torch.is_grad_enabled())))
    try:
        via_module = distill(teacher, _mlp(8, seed=1), data, epochs=2, lr=1e-2)
    finally:
        hook.remove()
    via_logits = distill(teacher_logits_of(teacher, data), _mlp(8, seed=1), data, epochs=2, lr=1e-2)
    assert torch.equal(before, _weights(teacher))
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert modes and all(m == (False, False) for m in modes)  # eval mode, no graph, at every step
    assert torch.allclose(_weights(via_module.model), _weights(via_logits.model), atol=1e-6)


def test_labeled_rows_add_the_cross_entropy(teacher, one_thread):
    data = _table(64, seed=4)
    tr = distill(teacher_logits_of(teacher, data), _mlp(8, seed=1), data, alpha=0.5, epochs=1)
    row = tr.history[0]
    assert row["ce"] > 0 and 0 <= row["train_accuracy"] <= 1
    assert row["train_loss"] == pytest.approx(0.5 * row["kd"] + 0.5 * row["ce"], rel=1e-5)


def test_hint_term_equals_a_hand_computation_and_its_adapter_trains(one_thread):
    rng = np.random.default_rng(0)
    ft = rng.normal(size=(10, 5)).astype(np.float32)
    term = HintTerm(ft, student_dim=3, beta=0.5)
    fs = torch.tensor(rng.normal(size=(4, 3)), dtype=torch.float32)
    idx = torch.tensor([7, 0, 3, 3])
    out = term(StepContext(features=fs, indices=idx))
    W, b = term.adapter.weight.detach().numpy(), term.adapter.bias.detach().numpy()
    want = 0.5 * ((fs.numpy() @ W.T + b - ft[idx.numpy()]) ** 2).mean()
    assert out["loss"].item() == pytest.approx(want, rel=1e-5)
    assert out["hint"].item() == pytest.approx(want / 0.5, rel=1e-5)

    # through distill: the adapter learns to map the student's features onto the teacher's
    data = _table(96, seed=5, labels=False)
    student = _mlp(8, seed=1)
    logits, feats = teacher_outputs(_mlp(16, seed=3), data, features=True)
    tr = distill(logits, student, data, hint_features=feats, beta=1.0, epochs=6, lr=1e-2)
    hint = tr.losses[0]
    assert isinstance(hint, HintTerm) and hint.adapter.in_features == 8 and hint.adapter.out_features == 16
    assert tr.history[-1]["hint"] < 0.5 * tr.history[0]["hint"]


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return DomainDataset(rng.uniform(size=(n, 16, 16)).astype(np.float32), np.full(n, -1), "img", "image",
                         classes=["a", "b", "c"])


def test_a_hint_on_a_chosen_middle_layer(one_thread):
    data = _images(48, seed=0)
    cnn = dict(num_classes=3, image_size=16, pretrained=False)
    teacher = create_backbone("tiny_cnn", width=8, seed=0, **cnn)
    logits, feats = teacher_outputs(teacher, data, features=True, layer="backbone.stage1")
    assert feats.shape == (48, 16)  # stage1 of width 8: 16 channels, averaged over space
    # the captured layer is the hand-pooled stage1 output
    x = teacher.preprocess(data.inputs[:4])
    teacher.eval()
    with torch.no_grad():
        want = teacher.backbone.stage1(teacher.backbone.stem(x)).mean(dim=(2, 3))
    assert np.allclose(feats[:4], want.numpy(), atol=1e-5)

    student = create_backbone("tiny_cnn", width=4, seed=1, **cnn)
    term = HintTerm(feats, student_dim=8, beta=2.0, student=student, layer="backbone.stage1")
    xs = student.preprocess(data.inputs[:4])
    student(xs)  # the step's own pass: the hook keeps stage1's output
    out = term(StepContext(model=student, inputs=xs, indices=torch.arange(4)))
    with torch.no_grad():
        fs = student.backbone.stage1(student.backbone.stem(xs)).mean(dim=(2, 3))
        ref = 2.0 * F.mse_loss(term.adapter(fs), torch.as_tensor(feats[:4]))
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5)

    tr = distill(logits, student, data, hint_features=feats, hint_layer="backbone.stage1", epochs=4, lr=1e-2,
                 batch_size=16)
    hint = tr.losses[0]
    assert hint.adapter.in_features == 8 and hint.adapter.out_features == 16
    assert tr.history[-1]["hint"] < tr.history[0]["hint"]
    with pytest.raises(ConfigError, match="layer='backbone.stage9' is not a submodule of the student. Did you mean"):
        HintTerm(feats, 8, student=student, layer="backbone.stage9")
    with pytest.raises(ConfigError, match="needs student="):
        HintTerm(feats, 8, layer="backbone.stage1")


def test_bad_inputs_are_one_line_errors(teacher, one_thread):
    data = _table(40, seed=6, labels=False)
    logits = teacher_logits_of(teacher, data)
    with pytest.raises(ConfigError, match="student has 4 outputs but the teacher 3 classes") as e:
        distill(logits, _mlp(8, seed=1, k=4), data, epochs=1)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="has 39 rows but the training dataset 40") as e:
        distill(logits[:39], _mlp(8, seed=1), data, epochs=1)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="temperature"):
        distill(logits, _mlp(8, seed=1), data, temperature=0.0, epochs=1)
    with pytest.raises(ConfigError, match="student has 4 outputs"):  # a module teacher: caught at the first step
        distill(teacher, _student_without_num_classes(), data, epochs=1)
    with pytest.raises(DataError, match="NaN"):
        distill(np.full((40, 3), np.nan), _mlp(8, seed=1), data, epochs=1)
    with pytest.raises(ConfigError, match="not a run directory, a fitted strategy"):
        teacher_logits_of(object(), data)


def _student_without_num_classes():
    """A plain module with 4 outputs (no num_classes attribute to check before training)."""
    m = _mlp(8, seed=1, k=4)

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = m

        def preprocess(self, x):
            return m.preprocess(x)

        def move_inputs(self, b, d):
            return m.move_inputs(b, d)

        def layer_groups(self):
            return m.layer_groups()

        def forward(self, x):
            return m(x)

    return Plain()


def test_teacher_logits_of_a_finished_run(tmp_path, one_thread):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _predict_runs import image_config, run

    from transferkit.data.spec import load_dataset
    from transferkit.inference import load_run

    run(image_config("kd", [{"name": "scratch", "epochs": 1, "batch_size": 16, "lr": 0.01}]), tmp_path)
    ds = load_dataset("digits:subset=1/8,size=16,rotate=10..30,seed=1")
    got = teacher_logits_of(tmp_path, ds)
    want = load_run(tmp_path).predict_logits(ds)
    assert got.shape == (len(ds), 10) and np.allclose(got, want, atol=1e-5)
    strat = load_run(tmp_path)
    assert np.allclose(teacher_logits_of(strat, ds), want, atol=1e-5)  # a fitted strategy works the same
    student = create_backbone("tiny_cnn", num_classes=10, image_size=16, width=4, pretrained=False, seed=0)
    unlabeled = ds.subset(np.arange(32))
    unlabeled = DomainDataset(unlabeled.inputs, np.full(32, -1), "u", "image", classes=list(ds.classes))
    tr = distill(tmp_path, student, unlabeled, epochs=1, batch_size=16)
    assert np.isfinite(tr.history[0]["kd"])
    with pytest.raises(DataError, match="is not a transferkit run directory"):
        teacher_logits_of(tmp_path / "scratch", ds)
