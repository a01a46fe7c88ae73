"""The scikit-learn parameter contract for every strategy, and refits that never reuse an
earlier fit's state (part of issue 11)."""

import numpy as np
import pytest
from sklearn.base import clone

from transferkit._registry import available, get
from transferkit.errors import ConfigError
from transferkit.strategies import Adapt

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", available("strategy"))
def test_get_params_set_params_and_clone(name):
    cls = get("strategy", name)
    s = cls(backbone="tiny_cnn", seed=3)
    params = s.get_params(deep=True)
    assert params == s.get_params(deep=False) and params["seed"] == 3 and params["backbone"] == "tiny_cnn"
    import inspect

    assert set(params) == {k for k in inspect.signature(cls.__init__).parameters if k != "self"}
    c = clone(s)
    assert type(c) is cls and c is not s and c.get_params() == params
    assert s.set_params(seed=5) is s and s.seed == 5
    with pytest.raises(ConfigError, match="unknown parameter 'sed'.*Did you mean 'seed'"):
        s.set_params(sed=1)




def test_a_refit_with_another_method_predicts_with_the_new_model(domains):
    """``Adapt`` refitted with a shallow method after a deep one used to keep predicting with
    the deep model (prediction chose the path by what an earlier fit left behind)."""
    src, tgt, unl = domains
    kw = dict(backbone="tiny_cnn", pretrained=False, image_size=16, epochs=2, seed=0)
    fresh = Adapt(method="coral", **kw).fit(unl, source=src)
    s = Adapt(method="mcc", **kw).fit(unl, source=src)
    assert hasattr(s, "model_")
    s.set_params(method="coral").fit(unl, source=src)
    assert not hasattr(s, "model_")
    np.testing.assert_array_equal(s.predict_logits(tgt), fresh.predict_logits(tgt))


def test_set_params_of_the_backbone_rebuilds_the_extractor(domains):
    src, tgt, unl = domains
    s = Adapt(backbone="tiny_cnn", pretrained=False, image_size=16, method="coral", seed=0).fit(unl, source=src)
    ex = s.extractor_
    s.set_params(method="sa")
    assert s.extractor_ is ex  # the method does not change the features
    s.set_params(image_size=12)
    assert not hasattr(s, "extractor_")
