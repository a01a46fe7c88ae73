"""Partial domain adaptation losses (PADA, BA3US): class weights, the classifier correction,
BA3US's pieces against hand computations, and a toy partial problem end to end."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferkit.adapt.deep import (
    BA3USLoss,
    ClassWeightRefresh,
    DANNLoss,
    PADALoss,
    ba3us_augment_size,
    ba3us_domain_loss,
    complement_entropy,
    complement_entropy_loss,
    pada_class_weights,
    weighted_ce_correction,
)
from transferkit.adapt.features import (
    BottleneckClassifier,
    DALossTerm,
    _rows,
    build_da_loss,
    build_method_loss,
    train_feature_adapter,
)
from transferkit.train import Trainer
from transferkit.errors import ConfigError, DataError

D, K = 6, 4


def batch(ns=10, nt=7, seed=0, k=K):
    g = torch.Generator().manual_seed(seed)
    f_s = torch.randn(ns, D, generator=g, dtype=torch.float64).requires_grad_()
    f_t = (torch.randn(nt, D, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    w = torch.randn(D, k, generator=g, dtype=torch.float64)
    y_s = torch.randint(0, k, (ns,), generator=g)
    return f_s, f_t, f_s @ w, f_t @ w, y_s


def call(loss, f_s, f_t, z_s, z_t, y_s):
    return loss(f_s, f_t, logits_s=z_s, logits_t=z_t, y_s=y_s)


def pada(**kw):
    base = dict(in_features=D, num_classes=K, hidden=(16,), dropout=0.0, schedule="constant", max_coeff=0.5)
    return PADALoss(**{**base, **kw}).double()


# ---------------------------------------------------------------------------------- class weights
def test_class_weights_match_hand_computation():
    z = np.array([[2.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.0, -2.0], [3.0, -1.0, 0.0, 0.0]])
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    mean = p.mean(0)
    assert np.allclose(pada_class_weights(torch.tensor(z)).numpy(), mean / mean.max(), atol=1e-12)

    # the loss's moving average: start uniform, m * old + (1 - m) * batch mean, then / max
    f_s, f_t, z_s, _, y_s = batch(nt=3)
    loss = pada(momentum=0.5)
    call(loss, f_s, f_t, z_s, torch.tensor(z), y_s)
    ema = 0.5 * np.full(K, 0.25) + 0.5 * mean
    assert np.allclose(loss.target_probs.numpy(), ema, atol=1e-12)
    assert np.allclose(loss.class_weights.numpy(), ema / ema.max(), atol=1e-12)
    z2 = np.array([[0.0, 0.0, 4.0, 0.0], [1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    p2 = np.exp(z2) / np.exp(z2).sum(1, keepdims=True)
    out = call(loss, f_s, f_t, z_s, torch.tensor(z2), y_s)
    ema = 0.5 * ema + 0.5 * p2.mean(0)
    assert np.allclose(loss.class_weights.numpy(), ema / ema.max(), atol=1e-12)
    assert out["class_weight_min"].item() == pytest.approx((ema / ema.max()).min(), abs=1e-12)
    # eval mode does not move the estimate; momentum 0 is the current batch alone
    before = loss.class_weights.clone()
    call(loss.eval(), f_s, f_t, z_s, torch.tensor(z), y_s)
    assert torch.equal(loss.class_weights, before)
    now = pada(momentum=0.0)
    call(now, f_s, f_t, z_s, torch.tensor(z), y_s)
    assert np.allclose(now.class_weights.numpy(), mean / mean.max(), atol=1e-12)


def test_source_domain_loss_is_class_weighted():
    f_s, f_t, z_s, z_t, y_s = batch()
    loss = pada(momentum=0.3)
    loss.set_progress(0.5)
    out = call(loss, f_s, f_t, z_s, z_t, y_s)
    w = loss.class_weights[y_s]
    assert w.min() < 0.99 * w.max()  # the check below would not see unweighted means otherwise
    d = loss.discriminator(torch.cat([f_s, f_t]))
    l_s = F.binary_cross_entropy_with_logits(d[:10], torch.ones(10, dtype=d.dtype), reduction="none")
    l_t = F.binary_cross_entropy_with_logits(d[10:], torch.zeros(7, dtype=d.dtype), reduction="none")
    expect = 0.5 * (w * l_s).sum() / w.sum() + 0.5 * l_t.mean()
    assert out["pada"].item() == pytest.approx(expect.item(), rel=1e-12)


def test_pada_with_equal_weights_is_dann():
    f_s, f_t, z_s, z_t, y_s = batch()
    torch.manual_seed(3)
    p = pada(reweight_classifier=False)
    torch.manual_seed(3)
    d = DANNLoss(in_features=D, hidden=(16,), dropout=0.0, schedule="constant", max_coeff=0.5).double()
    p.set_class_weights(torch.ones(K))
    out_p = call(p, f_s, f_t, z_s, z_t, y_s)
    out_p["loss"].backward()
    g_p = (f_s.grad.clone(), f_t.grad.clone(), [q.grad.clone() for q in p.discriminator.parameters()])
    f_s.grad = f_t.grad = None
    out_d = d(f_s, f_t)
    out_d["loss"].backward()
    torch.testing.assert_close(out_p["loss"], out_d["loss"], rtol=1e-13, atol=0)
    torch.testing.assert_close(out_p["domain_acc"], out_d["domain_acc"])
    torch.testing.assert_close(g_p[0], f_s.grad, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(g_p[1], f_t.grad, rtol=1e-12, atol=1e-15)
    for a, b in zip(g_p[2], d.discriminator.parameters()):
        torch.testing.assert_close(a, b.grad, rtol=1e-12, atol=1e-15)
    # with equal weights the classifier correction is 0 as well
    p2 = pada()
    p2.load_state_dict(p.state_dict())
    assert abs(call(p2, f_s, f_t, z_s, z_t, y_s)["cls_correction"].item()) < 1e-14


def test_classifier_correction_makes_weighted_cross_entropy():
    f_s, f_t, z_s, z_t, y_s = batch()
    z_s = z_s.detach().requires_grad_()
    w = torch.tensor([1.0, 0.2, 0.05, 0.6], dtype=torch.float64)
    loss = pada(weight=0.0)  # only the correction is left in "loss"
    loss.set_class_weights(w)
    out = call(loss, f_s, f_t, z_s, z_t, y_s)
    total = F.cross_entropy(z_s, y_s) + out["loss"]  # what the Trainer adds up
    ce = -torch.log_softmax(z_s, 1).gather(1, y_s[:, None]).squeeze(1)
    expect = (w[y_s] * ce).sum() / w[y_s].sum()
    torch.testing.assert_close(total, expect, rtol=1e-12, atol=0)
    g_total = torch.autograd.grad(total, z_s)[0]
    g_expect = torch.autograd.grad(expect, z_s)[0]
    torch.testing.assert_close(g_total, g_expect, rtol=1e-10, atol=1e-14)
    assert out["cls_correction"].item() == pytest.approx((expect - F.cross_entropy(z_s, y_s)).item(), rel=1e-10)
    # the correction is not scaled by weight; exact under label smoothing too
    heavy = pada(weight=3.0, label_smoothing=0.1)
    heavy.set_class_weights(w)
    out3 = call(heavy, f_s, f_t, z_s, z_t, y_s)
    torch.testing.assert_close(out3["loss"] - 3.0 * out3["pada"], weighted_ce_correction(z_s, y_s, w[y_s], 0.1))
    smooth = F.cross_entropy(z_s, y_s, label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(F.cross_entropy(z_s, y_s, label_smoothing=0.1) + out3["cls_correction"],
                               (w[y_s] * smooth).sum() / w[y_s].sum())
    off = pada(reweight_classifier=False)
    off.set_class_weights(w)
    out_off = call(off, f_s, f_t, z_s, z_t, y_s)
    assert out_off["cls_correction"].item() == 0.0
    torch.testing.assert_close(out_off["loss"], out_off["pada"])


def test_fixed_class_weights_are_used_and_checkpointed():
    f_s, f_t, z_s, z_t, y_s = batch()
    loss = pada(momentum=0.0)
    loss.set_class_weights([2.0, 1.0, 0.0, 0.5])  # normalised by the max
    assert loss.class_weights.tolist() == [1.0, 0.5, 0.0, 0.25]
    out = call(loss, f_s, f_t, z_s, z_t, y_s)  # training mode: the estimate must not overwrite them
    assert loss.class_weights.tolist() == [1.0, 0.5, 0.0, 0.25]
    assert out["class_weight_min"].item() == 0.0
    other = pada(momentum=0.0)
    other.load_state_dict(loss.state_dict())
    assert bool(other.weights_fixed) and other.class_weights.tolist() == [1.0, 0.5, 0.0, 0.25]
    call(other, f_s, f_t, z_s, z_t, y_s)
    assert other.class_weights.tolist() == [1.0, 0.5, 0.0, 0.25]
    other.set_class_weights(None)  # back to estimating
    call(other, f_s, f_t, z_s, z_t, y_s)
    assert torch.allclose(other.class_weights, pada_class_weights(z_t).to(other.class_weights.dtype))
    # a batch whose source rows all have weight 0: the source half is 0, not NaN
    zero = pada()
    zero.set_class_weights([0.0, 0.0, 0.0, 1.0])
    ys0 = torch.zeros_like(y_s)
    o = call(zero, f_s, f_t, z_s, z_t, ys0)
    assert torch.isfinite(o["loss"])
    with pytest.raises(DataError, match="one weight per source class"):
        loss.set_class_weights([1.0, 1.0])
    with pytest.raises(DataError, match="non-negative"):
        loss.set_class_weights([1.0, -1.0, 0.0, 0.0])
    with pytest.raises(DataError, match="at least one positive"):
        loss.set_class_weights([0.0] * K)
    with pytest.raises(ConfigError, match="needs in_features and num_classes"):
        PADALoss(in_features=D)
    with pytest.raises(ConfigError, match="momentum must be <= 1"):
        pada(momentum=1.5)


def test_class_weight_refresh_sets_weights_from_whole_target_predictions():
    class FakeTrainer:
        def __init__(self, z):
            self.z, self.calls = z, 0

        def predict_logits(self, dataset):
            self.calls += 1
            return self.z

    z = np.array([[2.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.0, -2.0], [3.0, -1.0, 0.0, 0.0]])
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    loss = pada(momentum=1.0)
    cb = ClassWeightRefresh(loss, target=None, every=2)
    tr = FakeTrainer(z)
    cb.on_epoch_start(tr, 0)  # epoch 0: the initial uniform weights stay
    cb.on_epoch_start(tr, 1)  # not a multiple of every
    assert tr.calls == 0 and loss.class_weights.tolist() == [1.0] * K
    cb.on_epoch_start(tr, 2)
    assert tr.calls == 1
    assert np.allclose(loss.class_weights.numpy(), p.mean(0) / p.mean(0).max(), atol=1e-12)
    # momentum 1: training batches do not move the estimate in between
    before = loss.class_weights.clone()
    call(loss, *batch())
    assert torch.equal(loss.class_weights, before)
    # fixed weights are not overwritten by a refresh
    loss.set_class_weights([1.0, 0.0, 1.0, 1.0])
    cb.on_epoch_start(tr, 4)
    assert loss.class_weights.tolist() == [1.0, 0.0, 1.0, 1.0]
    with pytest.raises(DataError, match="shape \\(n, 4\\)"):
        loss.set_target_predictions(np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="class-weighted loss"):
        ClassWeightRefresh(DANNLoss(in_features=D), None)


def _one_hot_blobs():
    """Source: 4 blobs at one-hot means (8-d); target: classes 0 and 1 only, shifted by 0.3."""
    rng = np.random.default_rng(0)
    means = 3.0 * np.eye(8)[:4]
    Xs = np.concatenate([rng.normal(means[c], 0.6, size=(40, 8)) for c in range(4)]).astype(np.float32)
    ys = np.repeat(np.arange(4), 40)
    rng = np.random.default_rng(1)
    Xt = np.concatenate([rng.normal(means[c] + 0.3, 0.6, size=(60, 8)) for c in (0, 1)]).astype(np.float32)
    return Xs, ys, Xt


def test_class_weight_refresh_sees_absent_classes_that_batch_statistics_hide(one_thread):
    """One-hot blob means: a target batch holding classes 0 and 1 only is re-centred by the
    bottleneck's training-mode BatchNorm, and the batch moving average of its predictions keeps
    the absent classes' weights high (measured [0.94, 1, 0.69, 0.57]); eval-mode predictions of
    the whole target set, refreshed each epoch, find them (measured [1, 0.99, 0.09, 0.05])."""
    Xs, ys, Xt = _one_hot_blobs()
    torch.manual_seed(0)
    model = BottleneckClassifier(8, 4, 16, 0.1)
    da = build_da_loss("pada", 16, 4, 1.0, hidden=(32,), momentum=1.0)
    src, tgt = _rows(Xs, ys, "source"), _rows(Xt, np.full(len(Xt), -1), "target")
    groups = [{"params": [*model.parameters(), *da.parameters()], "lr": 1e-2, "weight_decay": 5e-4}]
    tr = Trainer(model, groups, epochs=15, batch_size=32, steps_per_epoch=8, optimizer="adamw", schedule="inverse",
                 warmup_epochs=0.0, augment="none", seed=0, progress=False, losses=[DALossTerm(da)],
                 callbacks=[ClassWeightRefresh(da, tgt)])
    tr.fit(src, None, target=tgt)
    gam = da.class_weights.numpy()
    assert gam[[0, 1]].min() > 0.8 and gam[[2, 3]].max() < 0.25, gam


# ---------------------------------------------------------------------------------- BA3US pieces
def test_complement_entropy_matches_hand_computation():
    z = np.array([[2.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.0, -2.0], [3.0, -1.0, 0.0, 0.0]])
    y = np.array([0, 2, 1])
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    hc = []
    for i in range(3):
        q = np.delete(p[i], y[i]) / (1 - p[i, y[i]])
        hc.append(-(q * np.log(q)).sum())
    hc = np.array(hc)
    got = complement_entropy(torch.tensor(z), torch.tensor(y)).numpy()
    assert np.allclose(got, hc, atol=1e-12)
    # evenly spread wrong classes: log(K - 1), whatever p_y; a confident row stays finite
    even = torch.tensor([[5.0, 1.0, 1.0, 1.0], [60.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    assert np.allclose(complement_entropy(even, torch.tensor([0, 0])).numpy(), math.log(3), atol=1e-12)
    # the loss: weights gamma_y (1 - p_y)^alpha, negated and normalised by log(K - 1)
    gam = np.array([1.0, 0.5, 0.2, 0.8])
    for alpha in (1.0, 2.0):
        v = gam[y] * (1 - p[np.arange(3), y]) ** alpha
        expect = -(v * hc / math.log(3)).sum() / v.sum()
        got = complement_entropy_loss(torch.tensor(z), torch.tensor(y), torch.tensor(gam), alpha).item()
        assert got == pytest.approx(expect, rel=1e-12)
    assert complement_entropy_loss(torch.randn(4, 2), torch.tensor([0, 1, 0, 1])).item() == 0.0


def test_complement_entropy_loss_flattens_wrong_classes():
    z = torch.tensor([[2.0, 1.5, -1.0, -2.0]], requires_grad=True)
    complement_entropy_loss(z, torch.tensor([0])).backward()
    g = z.grad[0]
    # gradient descent raises the low wrong scores and lowers the high one; p_y is not pushed
    assert g[1] > 0 and g[2] < 0 and g[3] < 0


def test_augmentation_schedule_matches_authors():
    # authors: len_share = int(max(0, (bs // mu) * (1 - epoch / total_epochs))), bs = 36, mu = 4
    assert [ba3us_augment_size(36, 4, p) for p in (0.0, 0.25, 0.5, 0.9, 1.0)] == [9, 6, 4, 0, 0]
    assert ba3us_augment_size(36, 0, 0.0) == 0
    assert ba3us_augment_size(36, -4, 0.9) == 9  # fixed
    assert ba3us_augment_size(3, -1, 0.0) == 2  # a source row always stays on the source side
    assert ba3us_augment_size(1, 4, 0.0) == 0


def test_ba3us_domain_loss_matches_hand_computation():
    d_src, d_t, d_aug = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.3, -1.0]), torch.tensor([0.7])
    w_src, w_t, w_aug = torch.tensor([1.0, 0.5, 0.2]), torch.tensor([1.5, 1.0]), torch.tensor([0.4])

    def bce(d, lab):
        s = 1 / (1 + np.exp(-d.numpy()))
        return -(lab * np.log(s) + (1 - lab) * np.log(1 - s))

    # the authors' weighting: group S u A normalised to 1 + |A|/|S|, T to 1, sum / total
    ws, wt, wa = w_src.numpy(), w_t.numpy(), w_aug.numpy()
    tot = ws.sum() + wa.sum()
    r = 1 / 3
    weight = np.concatenate([(1 + r) * ws / tot, wt / wt.sum(), (1 + r) * wa / tot])
    ell = np.concatenate([bce(d_src, 1), bce(d_t, 0), bce(d_aug, 0)])
    expect = (weight * ell).sum() / weight.sum()
    got, acc = ba3us_domain_loss(d_src, d_t, d_aug, w_src, w_t, w_aug)
    assert got.item() == pytest.approx(expect, rel=1e-6)
    assert acc.item() == pytest.approx(0.5 * (2 / 3 + 1 / 3))


def test_ba3us_without_its_additions_is_pada():
    f_s, f_t, z_s, z_t, y_s = batch()
    base = dict(in_features=D, num_classes=K, hidden=(16,), dropout=0.0, schedule="constant", max_coeff=0.5,
                momentum=0.5)
    torch.manual_seed(1)
    p = PADALoss(**base).double()
    torch.manual_seed(1)
    b = BA3USLoss(mu=0, cot_weight=0.0, ent_weight=0.0, entropy_conditioning=False, **base).double()
    op, ob = call(p, f_s, f_t, z_s, z_t, y_s), call(b, f_s, f_t, z_s, z_t, y_s)
    torch.testing.assert_close(ob["loss"], op["loss"], rtol=1e-13, atol=0)
    torch.testing.assert_close(b.class_weights, p.class_weights)
    assert ob["augmented"].item() == 0


def test_ba3us_term_is_sum_of_parts_and_augments():
    f_s, f_t, z_s, z_t, y_s = batch(ns=12)
    torch.manual_seed(0)
    b = BA3USLoss(in_features=D, num_classes=K, hidden=(16,), weight=2.0).double()
    b.set_progress(0.0)
    out = call(b, f_s, f_t, z_s, z_t, y_s)
    assert out["augmented"].item() == 3  # 12 // 4
    parts = out["domain_bce"] + 1.0 * out["complement_entropy"] + 0.1 * out["target_entropy"]
    torch.testing.assert_close(out["ba3us"], parts)
    torch.testing.assert_close(out["loss"], 2.0 * out["ba3us"] + out["cls_correction"])
    assert -1.0 <= out["complement_entropy"].item() <= 0.0
    b.set_progress(1.0)
    assert call(b, f_s, f_t, z_s, z_t, y_s)["augmented"].item() == 0


def test_ba3us_augmented_rows_are_labeled_target_and_weighted():
    """BAA against the authors' weighting, written out: the augmenting source rows carry domain
    label 0 and weight (1 + e^-H) gamma_y, source rows (1 + e^-H) gamma_y, target rows 1 + e^-H."""
    f_s, f_t, z_s, z_t, y_s = batch(ns=8)
    b = BA3USLoss(in_features=D, num_classes=K, hidden=(16,), dropout=0.0, mu=-2, cot_weight=0.0,
                  ent_weight=0.0).double()
    gam = torch.tensor([1.0, 0.1, 0.5, 0.0], dtype=torch.float64)
    b.set_class_weights(gam)
    b.set_progress(0.5)  # a fixed augmentation (mu < 0) does not move with it
    torch.manual_seed(5)
    out = call(b, f_s, f_t, z_s, z_t, y_s)
    torch.manual_seed(5)
    perm = torch.randperm(8)
    aug, src = perm[:4], perm[4:].sort().values
    d = b.discriminator(torch.cat([f_s, f_t]))
    p_s, p_t = torch.softmax(z_s, 1), torch.softmax(z_t, 1)
    e_s = 1 + torch.exp((p_s * torch.log(p_s)).sum(1))
    e_t = 1 + torch.exp((p_t * torch.log(p_t)).sum(1))
    ell_src = F.binary_cross_entropy_with_logits(d[src], torch.ones(4, dtype=d.dtype), reduction="none")
    ell_aug = F.binary_cross_entropy_with_logits(d[aug], torch.zeros(4, dtype=d.dtype), reduction="none")
    ell_t = F.binary_cross_entropy_with_logits(d[8:], torch.zeros(7, dtype=d.dtype), reduction="none")
    w_src, w_aug = e_s[src] * gam[y_s[src]], e_s[aug] * gam[y_s[aug]]
    r = 4 / 4
    group = torch.cat([w_src, w_aug])
    weight = torch.cat([(1 + r) * group / group.sum(), e_t / e_t.sum()])
    expect = (weight * torch.cat([ell_src, ell_aug, ell_t])).sum() / weight.sum()
    assert out["domain_bce"].item() == pytest.approx(expect.item(), rel=1e-10)
    assert out["augmented"].item() == 4


# ---------------------------------------------------------------------------------- through the library
@pytest.mark.parametrize("name", ["pada", "ba3us"])
def test_build_da_loss_passes_options(name):
    loss = build_da_loss(name, 8, 5, 0.7, momentum=0.9, hidden=(4,))
    assert loss.num_classes == 5 and loss.in_features == 8 and loss.weight == 0.7 and loss.momentum == 0.9
    assert loss.class_weights.shape == (5,)
    with pytest.raises(ConfigError, match="has no option 'momentm'"):
        build_da_loss(name, 8, 5, 1.0, momentm=0.9)
    combo = build_method_loss(f"{name}+entropy", 8, 5, 1.0)
    assert name in combo.parts


def _blobs(n_per, classes, seed, shift):
    """Four Gaussian blobs at +-3 e1 and +-3 e2 in R^8. Symmetric, so the target (classes 0 and 1,
    at +-3 e1) has the source's mean: the bottleneck's per-domain BatchNorm statistics then do
    not move the target onto the absent classes by themselves (with one-hot means they do, and
    training-mode target predictions come out near uniform; see the issue note)."""
    rng = np.random.default_rng(seed)
    e = np.eye(8)
    means = 3.0 * np.stack([e[0], -e[0], e[1], -e[1]])
    X = np.concatenate([rng.normal(means[c] + shift, 0.6, size=(n_per, 8)) for c in classes])
    y = np.concatenate([np.full(n_per, c) for c in classes])
    return X.astype(np.float32), y


@pytest.mark.parametrize("method", ["pada", "ba3us"])
def test_toy_partial_problem_learns_small_weights_for_absent_classes(method, one_thread):
    Xs, ys = _blobs(40, [0, 1, 2, 3], 0, 0.0)
    Xt, yt = _blobs(60, [0, 1], 1, 0.3)  # target: classes 0 and 1 only, slightly shifted
    res = train_feature_adapter(Xs, ys, Xt, num_classes=4, method=method,
                                loss_options={"momentum": 0.9, "hidden": (32,)}, dropout=0.1, epochs=15,
                                batch_size=32, lr=1e-2, selection="last", seed=0)
    da = res["trainer"].losses[0].da
    gam = da.class_weights.numpy()
    # measured (seeds 0-2): present 0.95-1.0, absent 0.03-0.06 (pada), 0.08-0.15 (ba3us)
    assert gam[[0, 1]].min() > 0.8 and gam[[2, 3]].max() < 0.3, gam
    logged = [row["class_weight_min"] for row in res["history"]]
    assert logged[-1] < 0.3 < logged[0]  # starts near 1 (uniform start), falls as the head learns
    acc = (res["model"](torch.as_tensor(Xt)).argmax(1).numpy() == yt).mean()
    assert acc > 0.9


def test_class_weighting_avoids_the_negative_transfer_of_dann(one_thread):
    """Target classes 0 and 1 only, shifted towards source-only class 2 (and noisier): DANN
    aligns the two target clusters with all four source classes and sends target samples to
    classes 2 and 3; the class-weighted losses align them with classes 0 and 1 only. Measured
    target accuracy (seeds 0, 1, 2; domain_bn=False): source only 0.77 0.75 0.76, dann 0.85
    0.80 0.84, pada 0.96 0.92 0.98, ba3us 0.98 0.92 0.93."""
    Xs, ys = _blobs(40, [0, 1, 2, 3], 0, 0.0)
    shift = np.zeros(8)
    shift[1] = 2.0
    rng = np.random.default_rng(1)
    e = np.eye(8)
    Xt = np.concatenate([rng.normal(3.0 * s * e[0] + shift, 1.0, size=(60, 8)) for s in (1, -1)]).astype(np.float32)
    yt = np.repeat([0, 1], 60)
    acc = {}
    for method in ("dann", "pada", "ba3us"):
        opts = {"hidden": (32,), **({"momentum": 0.9} if method != "dann" else {})}
        res = train_feature_adapter(Xs, ys, Xt, num_classes=4, method=method, loss_options=opts, dropout=0.1,
                                    epochs=20, batch_size=32, lr=1e-2, selection="last", seed=0, domain_bn=False)
        acc[method] = (res["model"](torch.as_tensor(Xt)).argmax(1).numpy() == yt).mean()
    assert acc["pada"] > acc["dann"] + 0.05 and acc["ba3us"] > acc["dann"] + 0.05, acc


def test_train_feature_adapter_refreshes_pada_weights_each_epoch(one_thread):
    """Through ``train_feature_adapter(method="pada")`` (what ``adapt`` runs) the class weights come
    from the per-epoch refresh (``momentum=1`` by default there), so the BatchNorm re-centring that
    hides the absent classes from batch averages does not reach them."""
    from transferkit.adapt.features import train_feature_adapter

    Xs, ys, Xt = _one_hot_blobs()
    res = train_feature_adapter(Xs, ys, Xt, num_classes=4, method="pada", loss_options={"hidden": (32,)},
                                bottleneck=16, dropout=0.1, epochs=15, batch_size=32, steps_per_epoch=8, lr=1e-2,
                                selection="last", seed=0)
    da = res["trainer"].losses[0].da
    assert da.momentum == 1.0
    gam = da.class_weights.numpy()
    assert gam[[0, 1]].min() > 0.8 and gam[[2, 3]].max() < 0.25, gam
