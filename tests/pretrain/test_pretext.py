"""Self-supervised pretext tasks and their views: properties a wrong implementation breaks."""

import math

import numpy as np
import pytest
import torch

from transferkit._registry import available
from transferkit.backbones import create_backbone
from transferkit.data import DomainDataset
from transferkit.data.digits import load_digits_domain
from transferkit.errors import ConfigError, DataError
from transferkit.pretrain.pretext import (
    byol_loss,
    byol_tau,
    make_pretext,
    masked_mse,
    patch_mask,
    rotate_batch,
    simsiam_loss,
)
from transferkit.pretrain.views import SSLViews, check_views_possible, make_views
from transferkit.train import Trainer
from transferkit.train.trainer import StepContext

PRETEXTS = available("pretext")


def _bb(seed=0, width=4):
    return create_backbone("tiny_cnn", image_size=16, width=width, seed=seed)


def _images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, size=(n, 16, 16)).astype(np.float32)


def _unlabeled(n=32, labels="none"):
    y = None if labels == "none" else np.full(n, -1, dtype=np.int64)
    return DomainDataset(_images(n), y, "noise", "image")


def _digits():
    return load_digits_domain(size=16)


def _ctx(model, x, seed=0, progress=0.0):
    return StepContext(model=model, inputs=x, labels=torch.full((len(x),), -1), indices=torch.arange(len(x)),
                       generator=torch.Generator().manual_seed(seed), epoch=0, step=0, progress=progress)


def _fit(name, data, seed=0, epochs=1, batch_size=8, lr=1e-3, width=4, **options):
    bb = _bb(seed, width)
    obj = make_pretext(name, bb, **options)
    obj.check_data(data)
    params = list(bb.parameters()) + list(obj.parameters())  # BYOL's frozen target is skipped by AdamW
    tr = Trainer(bb, [{"params": params, "lr": lr, "name": "all"}], objective=obj, epochs=epochs,
                 batch_size=batch_size, progress=False, device="cpu", seed=seed)
    tr.fit(data)
    return bb, obj, tr


def _weights(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


# ---------------------------------------------------------------- every registered pretext
def test_the_registry_holds_the_five_tasks():
    assert PRETEXTS == ["byol", "mae", "rotation", "simclr", "simsiam"]


@pytest.mark.parametrize("name", PRETEXTS)
def test_the_task_layers_come_from_its_seed_alone(name):
    state = torch.random.get_rng_state()
    a, b, c = make_pretext(name, _bb()), make_pretext(name, _bb()), make_pretext(name, _bb(), seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    assert torch.equal(_weights(a), _weights(b)) and not torch.equal(_weights(a), _weights(c))


@pytest.mark.parametrize("name", PRETEXTS)
def test_loss_is_finite_and_reaches_every_backbone_weight(name, one_thread):
    bb = _bb()
    obj = make_pretext(name, bb)
    assert obj.needs_labels is False
    # the backbone is the Trainer's model, not a part of the objective
    assert not {id(p) for p in obj.parameters()} & {id(p) for p in bb.parameters()}
    bb.train(), obj.train()
    x = bb.preprocess(_images(8))
    out = obj(_ctx(bb, x))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    for n, p in bb.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert all(p.grad is not None for p in obj.trainable_parameters())
    assert all(torch.as_tensor(v).numel() == 1 for k, v in out.items())  # only scalars are logged


@pytest.mark.parametrize("name", PRETEXTS)
def test_trains_through_the_trainer_on_unlabeled_data_deterministically(name, one_thread):
    bb, obj, tr = _fit(name, _unlabeled(32, labels="none"))
    bb2, obj2, tr2 = _fit(name, _unlabeled(32, labels="all -1"))
    assert tr.history[-1]["train_loss"] == pytest.approx(tr2.history[-1]["train_loss"], abs=0)
    assert torch.equal(_weights(bb), _weights(bb2)) and torch.equal(_weights(obj), _weights(obj2))
    assert math.isfinite(tr.history[-1]["train_loss"]) and "train_accuracy" not in tr.history[-1]
    assert not torch.equal(_weights(bb), _weights(_bb()))  # it trained
    bb3, _, _ = _fit(name, _unlabeled(32), seed=1)
    assert not torch.equal(_weights(bb), _weights(bb3))


# ---------------------------------------------------------------- BYOL
def test_byol_tau_follows_the_cosine_schedule():
    assert byol_tau(0.99, 0.0) == pytest.approx(0.99)
    assert byol_tau(0.99, 0.5) == pytest.approx(0.995)
    assert byol_tau(0.99, 1.0) == pytest.approx(1.0)
    assert byol_tau(0.9, 0.25) == pytest.approx(1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)


def test_byol_target_gets_no_gradient_and_moves_by_ema_exactly(one_thread):
    bb = _bb()
    obj = make_pretext("byol", bb, tau=0.9)
    targets = [*obj.target_encoder.parameters(), *obj.target_projector.parameters()]
    assert targets and not any(p.requires_grad for p in targets)
    assert not {id(p) for p in obj.trainable_parameters()} & {id(p) for p in targets}
    # the target starts as a copy of the online network
    assert torch.equal(_weights(obj.target_encoder), _weights(bb))
    opt = torch.optim.SGD(list(bb.parameters()) + obj.trainable_parameters(), lr=0.5)
    out = obj(_ctx(bb, bb.preprocess(_images(8))))
    out["loss"].backward()
    assert all(p.grad is None for p in targets)
    opt.step()
    old = [p.detach().clone() for p in targets]
    online = [*bb.parameters(), *obj.projector.parameters()]
    assert not torch.equal(_weights(bb), _weights(obj.target_encoder))  # the online step moved away
    obj.after_optimizer_step(0.5)
    tau = 1 - 0.1 * (math.cos(math.pi * 0.5) + 1) / 2  # 0.95
    for t, o, t0 in zip(targets, online, old):
        torch.testing.assert_close(t, tau * t0 + (1 - tau) * o.detach(), rtol=1e-6, atol=1e-7)
    before = [p.detach().clone() for p in targets]
    obj.after_optimizer_step(1.0)  # tau = 1 at the end: the target stops moving
    assert all(torch.equal(a, b) for a, b in zip(before, targets))


def test_byol_loss_is_symmetric_two_minus_two_cos_and_never_reaches_the_target():
    g = torch.Generator().manual_seed(0)
    p1, p2, t1, t2 = (torch.randn(5, 3, generator=g, requires_grad=True) for _ in range(4))
    cos = torch.nn.functional.cosine_similarity
    want = (2 - 2 * cos(p1, t2)).mean() + (2 - 2 * cos(p2, t1)).mean()
    got = byol_loss(p1, p2, t1, t2)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert byol_loss(p2, p1, t2, t1).item() == pytest.approx(got.item(), rel=1e-6)
    got.backward()
    assert t1.grad is None and t2.grad is None and p1.grad.abs().sum() > 0
    assert byol_loss(t2, t1, t1, t2).item() == pytest.approx(0.0, abs=1e-6)  # aligned predictions: no loss


def test_byol_refuses_a_trainer_model_it_was_not_built_for(one_thread):
    obj = make_pretext("byol", _bb())
    other = _bb(seed=1)
    with pytest.raises(ConfigError, match="pretext 'byol' was built for another backbone"):
        obj(_ctx(other, other.preprocess(_images(4))))


# ---------------------------------------------------------------- SimSiam
def test_simsiam_stop_gradient_blocks_the_target_branch():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(6, 4, generator=g, requires_grad=True) for _ in range(4))
    loss = simsiam_loss(p1, p2, z1, z2)
    cos = torch.nn.functional.cosine_similarity
    assert loss.item() == pytest.approx(-0.5 * (cos(p1, z2).mean() + cos(p2, z1).mean()).item(), rel=1e-6)
    loss.backward()
    # no gradient through sg(z); a missing detach gives z the gradient of the cosine
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0
    assert simsiam_loss(z2, z1, z1, z2).item() == pytest.approx(-1.0, abs=1e-6)


def test_simsiam_gradient_reaches_z_only_through_the_predictor(one_thread):
    """In the real module: d loss / d z equals the gradient that flows back through h(z) alone."""
    bb = _bb()
    obj = make_pretext("simsiam", bb)
    x = bb.preprocess(_images(8))
    ctx = _ctx(bb, x)
    feats = {}
    h = obj.projector.register_forward_hook(lambda m, i, o: feats.setdefault("z", o))
    loss = obj(ctx)["loss"]
    h.remove()
    z = feats["z"]
    (g_total,) = torch.autograd.grad(loss, z, retain_graph=True)
    n = len(x)
    p = obj.predictor(z)  # the same predictor on the same z (BN in train mode: the same batch statistics)
    (g_pred,) = torch.autograd.grad(simsiam_loss(p[:n], p[n:], z[:n].detach(), z[n:].detach()), z)
    torch.testing.assert_close(g_total, g_pred, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- rotation
def test_rotate_batch_labels_match_where_an_asymmetric_pixel_goes():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 1] = 1.0  # one pixel off every symmetry axis
    xr, y = rotate_batch(x)
    assert y.tolist() == [0, 1, 2, 3]
    # rot90 by k: (r, c) -> (3 - c, r) per counter-clockwise quarter turn
    where = [tuple(int(i) for i in torch.nonzero(xr[k, 0])[0]) for k in range(4)]
    assert where == [(0, 1), (2, 0), (3, 2), (1, 3)]
    x3 = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    xr, y = rotate_batch(x3)  # every image four times, in blocks of one rotation
    for k in range(4):
        for i in range(3):
            assert y[3 * k + i] == k and torch.equal(xr[3 * k + i], torch.rot90(x3[i], k, dims=(1, 2)))
    g = torch.Generator().manual_seed(3)
    x8 = torch.randn(8, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    xr, y = rotate_batch(x8, all_rotations=False, gen=g)
    assert xr.shape == x8.shape and set(y.tolist()) <= {0, 1, 2, 3} and len(set(y.tolist())) > 1
    for i in range(8):
        assert torch.equal(xr[i], torch.rot90(x8[i], int(y[i]), dims=(1, 2)))
    with pytest.raises(DataError, match="rotation needs square images"):
        rotate_batch(torch.zeros(2, 1, 4, 6))


def test_rotation_head_learns_above_chance_on_held_out_digits(one_thread):
    d = _digits()
    perm = np.random.default_rng(0).permutation(len(d))
    bb, obj, tr = _fit("rotation", d.subset(perm[:64]).without_labels(), epochs=8, batch_size=16, lr=1e-2)
    bb.eval(), obj.eval()
    with torch.no_grad():
        xr, y = rotate_batch(bb.preprocess(d.inputs[perm[1000:1200]]))
        acc = (obj.head(bb(xr)).argmax(1) == y).float().mean().item()
    assert acc > 0.5  # chance is 0.25 (measured 0.71)
    assert tr.history[-1]["rotation_accuracy"] > tr.history[0]["rotation_accuracy"]


# ---------------------------------------------------------------- masked image modelling
def test_patch_mask_masks_whole_patches_at_the_ratio():
    m = patch_mask(5, 16, 4, 0.5, torch.Generator().manual_seed(0))
    assert m.shape == (5, 1, 16, 16)
    blocks = m.view(5, 4, 4, 4, 4)  # (n, gy, py, gx, px)
    assert torch.equal(blocks.amax(dim=(2, 4)), blocks.amin(dim=(2, 4)))  # constant on each patch
    assert (m.view(5, -1).mean(1) == 0.5).all()  # 8 of 16 patches in every image


def test_masked_mse_ignores_the_visible_pixels():
    g = torch.Generator().manual_seed(0)
    x, rec = torch.randn(3, 2, 8, 8, generator=g), torch.randn(3, 2, 8, 8, generator=g)
    m = patch_mask(3, 8, 2, 0.25, g)
    loss = masked_mse(rec, x, m)
    by_hand = ((rec - x) ** 2)[m.expand_as(x).bool()].mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    rec2 = rec + (1 - m) * 100.0  # change only what the visible pixels are reconstructed as
    assert masked_mse(rec2, x, m).item() == pytest.approx(loss.item(), rel=1e-6)


def test_mae_loss_is_the_masked_mse_of_the_masked_input(one_thread):
    bb = _bb()
    obj = make_pretext("mae", bb, mask_ratio=0.25)
    x = bb.preprocess(_images(6))
    loss = obj(_ctx(bb, x, seed=3))["loss"]
    m = patch_mask(6, 16, 4, 0.25, torch.Generator().manual_seed(3))  # the task's first draw from the stream
    rec = obj.decoder(bb(x * (1 - m))).view_as(x)  # masked patches zeroed (the mean colour), the rest kept
    assert loss.item() == pytest.approx(masked_mse(rec, x, m).item(), rel=1e-5)
    assert loss.item() != pytest.approx(masked_mse(rec, x, 1 - m).item(), rel=1e-3)  # not the visible pixels


def test_mae_reconstructs_held_out_masked_patches_better_than_the_mean_image(one_thread):
    d = _digits()
    perm = np.random.default_rng(0).permutation(len(d))
    tr_idx = perm[:256]
    bb, obj, _ = _fit("mae", d.subset(tr_idx).without_labels(), epochs=20, batch_size=32, lr=3e-3, width=8)
    bb.eval(), obj.eval()
    with torch.no_grad():
        x = bb.preprocess(d.inputs[perm[1000:1200]])
        m = patch_mask(len(x), 16, obj.patch, 0.5, torch.Generator().manual_seed(5))
        rec = obj.decoder(bb(x * (1 - m))).view_as(x)
        mean_img = bb.preprocess(d.inputs[tr_idx]).mean(0, keepdim=True).expand_as(x)
        got, base = masked_mse(rec, x, m).item(), masked_mse(mean_img, x, m).item()
    assert got < 0.8 * base  # the visible context tells what is under the mask (measured 0.113 vs 0.176)


# ---------------------------------------------------------------- SimCLR: a measure of learning
def _knn_accuracy(bb, d, train_idx, test_idx, k=5):
    bb.eval()
    with torch.no_grad():
        a = torch.nn.functional.normalize(bb(bb.preprocess(d.inputs[train_idx])), dim=1)
        b = torch.nn.functional.normalize(bb(bb.preprocess(d.inputs[test_idx])), dim=1)
    nearest = (b @ a.T).topk(k, dim=1).indices.numpy()
    votes = d.labels[train_idx][nearest]
    pred = np.array([np.bincount(v, minlength=10).argmax() for v in votes])
    return float((pred == d.labels[test_idx]).mean())


def test_simclr_features_beat_the_random_backbone_by_knn(one_thread):
    d = _digits()
    perm = np.random.default_rng(0).permutation(len(d))
    tr_idx, te_idx = perm[:256], perm[256:756]
    random_acc = _knn_accuracy(_bb(0, width=8), d, tr_idx, te_idx)
    bb, _, tr = _fit("simclr", d.subset(tr_idx).without_labels(), epochs=10, batch_size=64, lr=3e-3, width=8)
    ssl_acc = _knn_accuracy(bb, d, tr_idx, te_idx)
    assert ssl_acc > random_acc + 0.05  # measured 0.794 -> 0.908
    assert tr.history[-1]["simclr_top1"] > tr.history[0]["simclr_top1"]


# ---------------------------------------------------------------- views
def test_views_are_seeded_and_keep_shape_dtype_and_device():
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64)
    v = make_views("ssl", mean=(0.5,) * 3, std=(0.5,) * 3)
    a = v(x, torch.Generator().manual_seed(0))
    b = v(x, torch.Generator().manual_seed(0))
    c = v(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(v(x, g), v(x, g))  # two calls on one stream: two different views
    assert make_views("ssl_light").scale == (0.6, 1.0)


def test_a_full_crop_without_jitter_is_the_identity_and_the_flip_mirrors():
    x = torch.rand(4, 1, 8, 8) * 2 - 1  # pixels in [0, 1] after the (0.5, 0.5) normalization
    ident = SSLViews(scale=1.0, ratio=1.0, brightness=0.0, contrast=0.0, noise=0.0, mean=(0.5,), std=(0.5,))
    torch.testing.assert_close(ident(x, torch.Generator().manual_seed(0)), x, rtol=0, atol=1e-6)
    flip = SSLViews(scale=1.0, ratio=1.0, hflip=True, brightness=0.0, contrast=0.0, noise=0.0, mean=(0.5,), std=(0.5,))
    out = flip(x, torch.Generator().manual_seed(0))
    mirrored = [torch.allclose(out[i], x[i].flip(-1), atol=1e-6) for i in range(4)]
    same = [torch.allclose(out[i], x[i], atol=1e-6) for i in range(4)]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored)


def test_brightness_scales_each_image_by_one_factor_in_range():
    p = torch.rand(5, 1, 8, 8) * 0.5 + 0.1  # pixels in [0.1, 0.6]: no clipping at factor <= 1.3
    v = SSLViews(scale=1.0, ratio=1.0, brightness=0.3, contrast=0.0, jitter=1.0, noise=0.0, mean=(0.0,), std=(1.0,))
    out = v(p, torch.Generator().manual_seed(2))
    f = out / p
    assert torch.allclose(f, f.amin(dim=(1, 2, 3), keepdim=True), atol=1e-5)  # one factor per image
    assert ((f >= 0.7 - 1e-5) & (f <= 1.3 + 1e-5)).all() and f.std() > 0


def test_crop_zooms_into_part_of_the_image():
    x = torch.zeros(16, 1, 16, 16)
    x[:, :, :, :8] = 1.0  # left half white, right half black
    v = SSLViews(scale=(0.1, 0.1), ratio=1.0, brightness=0.0, contrast=0.0, noise=0.0, mean=(0.0,), std=(1.0,))
    out = v(x, torch.Generator().manual_seed(0))
    frac = out.mean(dim=(1, 2, 3))
    assert (frac < 0.05).any() and (frac > 0.95).any()  # some crops lie inside one half
    blur = SSLViews(scale=1.0, ratio=1.0, brightness=0.0, contrast=0.0, noise=0.0, blur=1.0, blur_sigma=1.0,
                    mean=(0.0,), std=(1.0,))
    b = blur(x, torch.Generator().manual_seed(0))
    assert torch.allclose(b.mean(), x.mean(), atol=1e-3) and 0 < b[0, 0, 0, 7] < 1  # the edge is smoothed


# ---------------------------------------------------------------- bad input
def test_a_view_pretext_on_text_is_a_one_line_data_error():
    text = DomainDataset(["a cat", "a dog", "two birds"], None, "x", "text")
    obj = make_pretext("simclr", _bb())
    with pytest.raises(DataError, match=r"^pretext 'simclr' needs two augmented views of each image; dataset 'x' "
                                        r"is text, which these image transforms cannot augment") as e:
        obj.check_data(text)
    assert "\n" not in str(e.value)
    table = DomainDataset(np.zeros((4, 3), np.float32), None, "t", "tabular")
    with pytest.raises(DataError, match="pretext 'byol'.*dataset 't' is tabular"):
        check_views_possible(table, "byol")
    with pytest.raises(DataError, match="pretext 'rotation' needs square images.*dataset 'x' is text"):
        make_pretext("rotation", _bb()).check_data(text)
    tiny = DomainDataset(np.zeros((4, 4, 4), np.float32), None, "small", "image")
    with pytest.raises(DataError, match="dataset 'small' has 4x4 images, smaller than 8 px"):
        obj.check_data(tiny)
    make_pretext("simclr", _bb()).check_data(_unlabeled(4))  # images of 16 px are fine


def test_unknown_and_bad_options_are_config_errors_with_a_suggestion():
    with pytest.raises(ConfigError, match="pretext 'simclr': unknown option 'temprature'. Did you mean 'temperature'"):
        make_pretext("simclr", _bb(), temprature=0.1)
    with pytest.raises(ConfigError, match="unknown pretext 'simclear'. Did you mean 'simclr'"):
        make_pretext("simclear", _bb())
    with pytest.raises(ConfigError, match="temperature must be >= 0.001"):
        make_pretext("simclr", _bb(), temperature=0)
    with pytest.raises(ConfigError, match="tau must be <= 1.0"):
        make_pretext("byol", _bb(), tau=1.5)
    with pytest.raises(ConfigError, match="views='ssl_lite' is not a view preset.*Did you mean 'ssl_light'"):
        make_pretext("simsiam", _bb(), views="ssl_lite")
    with pytest.raises(ConfigError, match="views option 'nosie' is not an option of SSLViews. Did you mean 'noise'"):
        make_pretext("byol", _bb(), views={"nosie": 0.1})
    with pytest.raises(ConfigError, match="patch_size=5 does not divide the image side 16"):
        make_pretext("mae", _bb(), patch_size=5)
    with pytest.raises(ConfigError, match="scale=.* has low > high"):
        SSLViews(scale=(0.9, 0.2))
    mlp = create_backbone("tiny_mlp", pretrained=False, in_features=8)
    with pytest.raises(ConfigError, match="'rotation' pretrains image backbones; backbone 'tiny_mlp' is tabular"):
        make_pretext("rotation", mlp)
