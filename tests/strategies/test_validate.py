"""``Strategy.validate``: every parameter is checked without data or disk, and ``fit`` runs the
same checks first (the Python API gets the messages the CLI prints)."""

import math

import numpy as np
import pytest

from transferkit._registry import available, get
from transferkit.backbones import create_backbone
from transferkit.data import load_digits_domain
from transferkit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

INF, NAN = math.inf, math.nan

# (strategy, parameters, fragments of the message); every message names <strategy>.<param>
BAD = [
    ("scratch", {"optimizer": "adam"}, ["scratch.optimizer='adam'", "Did you mean 'adamw'"]),
    ("finetune", {"schedule": "linear"}, ["finetune.schedule='linear'", "'cosine'"]),
    ("finetune", {"augment": "heavy"}, ["finetune.augment='heavy'", "'light'"]),
    ("finetune", {"augment": {"rotate": NAN}}, ["finetune.augment", "rotate=nan"]),
    ("finetune", {"augment": {"flip": True}}, ["finetune.augment", "'flip'", "hflip"]),
    ("finetune", {"freeze_bn": "sometimes"}, ["finetune.freeze_bn='sometimes'", "'frozen_groups'"]),
    ("finetune", {"head": "transformer"}, ["finetune.head='transformer'", "'mlp'"]),
    ("finetune", {"monitor": "accuracy"}, ["finetune.monitor='accuracy'", "'val_accuracy'"]),
    ("finetune", {"unfreeze": "last:x"}, ["finetune.unfreeze='last:x'", "last:k"]),
    ("finetune", {"unfreeze": "some"}, ["finetune.unfreeze='some'", "all, none or last:k"]),
    ("finetune", {"unfreeze": -1}, ["finetune.unfreeze=-1", ">= 0"]),
    ("scratch", {"lr": INF}, ["scratch.lr=inf is not a finite number", "(0, 10]"]),
    ("scratch", {"lr": NAN}, ["scratch.lr=nan is not a finite number"]),
    ("scratch", {"lr": 1e9}, ["scratch.lr=1000000000.0 is out of range", "(0, 10]"]),
    ("scratch", {"lr": 0}, ["scratch.lr=0 is out of range"]),
    ("scratch", {"lr": "fast"}, ["scratch.lr='fast' is not a number"]),
    ("scratch", {"epochs": 10**9}, ["scratch.epochs=1000000000 is out of range", "[1, 10000]"]),
    ("scratch", {"epochs": 2.5}, ["scratch.epochs=2.5 is not a whole number"]),
    ("scratch", {"batch_size": 10**9}, ["scratch.batch_size=1000000000", "[1, 65536]"]),
    ("scratch", {"early_stopping": 0}, ["scratch.early_stopping=0 is out of range", "or leave it out"]),
    ("scratch", {"warmup_epochs": INF}, ["scratch.warmup_epochs=inf is not a finite number"]),
    ("scratch", {"warmup_epochs": 5, "epochs": 2}, ["scratch.warmup_epochs=5 is longer than scratch.epochs=2"]),
    ("scratch", {"label_smoothing": 1.5}, ["scratch.label_smoothing=1.5 is out of range", "[0, 1)"]),
    ("scratch", {"dropout": NAN}, ["scratch.dropout=nan"]),
    ("scratch", {"grad_clip": -1}, ["scratch.grad_clip=-1"]),
    ("scratch", {"weight_decay": INF}, ["scratch.weight_decay=inf"]),
    ("finetune", {"layer_decay": 1.5}, ["finetune.layer_decay=1.5"]),
    ("finetune", {"backbone_lr_mult": -0.1}, ["finetune.backbone_lr_mult=-0.1"]),
    ("finetune", {"progressive_unfreeze": 0}, ["finetune.progressive_unfreeze=0 is out of range"]),
    ("finetune", {"lp_init": "yes"}, ["finetune.lp_init='yes' is not a boolean", "true or false"]),
    ("scratch", {"seed": -1}, ["scratch.seed=-1 is out of range"]),
    ("scratch", {"device": "bogus"}, ["scratch.device='bogus' is not a torch device", "device: cpu"]),
    ("scratch", {"device": 3}, ["scratch.device=3 is not a device name"]),
    ("scratch", {"device": "meta"}, ["scratch.device='meta'", "device: cpu"]),
    ("scratch", {"image_size": 4}, ["scratch.image_size=4 is out of range"]),
    ("finetune", {"penalty": "l2sq"}, ["finetune.penalty='l2sq'", "Did you mean 'l2sp'"]),
    ("finetune", {"penalty": ["l2sp", "l2sp"]}, ["finetune.penalty names 'l2sp' twice"]),
    ("finetune", {"penalty": []}, ["finetune.penalty=[] is empty"]),
    ("finetune", {"penalty": "ewc", "penalty_options": {"lamb": 5}}, ["finetune.penalty_options", "'lamb'", "'lam'"]),
    ("finetune", {"penalty": "ewc", "penalty_options": {"lam": -5}}, ["finetune.penalty_options.lam must be >= 0"]),
    ("finetune", {"penalty": "ewc", "penalty_options": {"lam": INF}}, ["finetune.penalty_options.lam=inf"]),
    ("finetune", {"penalty": ["ewc", "l2sp"], "penalty_options": {"lam": 5}}, ["finetune.penalty_options", "per name"]),
    ("finetune", {"penalty_options": {"lam": 5}}, ["finetune.penalty_options is set but finetune.penalty is not"]),
    ("feature_extraction", {"C": -1}, ["feature_extraction.C=-1 is out of range", "auto"]),
    ("feature_extraction", {"C": NAN}, ["feature_extraction.C=nan is not a finite number"]),
    ("feature_extraction", {"C": INF}, ["feature_extraction.C=inf"]),
    ("feature_extraction", {"head": "svm"}, ["feature_extraction.head='svm'", "'logistic'"]),
    ("feature_extraction", {"standardize": "maybe"}, ["feature_extraction.standardize='maybe' is not a boolean"]),
    ("adapt", {"method": "dnn"}, ["adapt.method='dnn'", "Did you mean"]),
    ("adapt", {"method": "jan+jan"}, ["adapt.method='jan+jan' names 'jan' twice"]),
    ("adapt", {"method": "jan+coral"}, ["adapt.method='coral'"]),
    ("adapt", {"method": "dann", "loss_options": {"hiden": 64}}, ["adapt.loss_options", "'hiden'", "'hidden'"]),
    ("adapt", {"method": "dann", "loss_options": {"hidden": 10**9}}, ["adapt.loss_options would build", "hidden"]),
    ("adapt", {"method": "mcc", "loss_options": {"temperature": NAN}}, ["adapt.loss_options.temperature=nan"]),
    ("adapt", {"method": "mcc", "loss_options": {"temperature": -1}}, ["adapt.loss_options.temperature"]),
    ("adapt", {"method": "coral", "loss_options": {"x": 1}}, ["adapt.loss_options has an unknown option 'x'", "shallow estimator 'coral'"]),
    ("adapt", {"method": None, "loss_options": {"x": 1}}, ["adapt.loss_options is set", "null"]),
    ("adapt", {"method": "fixmatch"}, ["adapt.method='fixmatch'", "adapt.level: backbone"]),
    ("adapt", {"method": "fixmatch", "level": "backbone", "loss_options": {"treshold": 0.9}},
     ["adapt.loss_options", "'treshold'", "'threshold'"]),
    ("adapt", {"method": "fixmatch", "level": "backbone", "loss_options": {"threshold": 2}},
     ["adapt.loss_options.threshold"]),
    ("adapt", {"method": "coral", "level": "backbone"}, ["adapt.method='coral' works on fixed features"]),
    ("adapt", {"level": "deep"}, ["adapt.level='deep'", "'backbone'"]),
    ("adapt", {"selection": "best"}, ["adapt.selection='best'", "'dev'"]),
    ("adapt", {"weight": []}, ["adapt.weight=[] is empty"]),
    ("adapt", {"weight": [0.1, INF]}, ["adapt.weight=inf is not a finite number"]),
    ("adapt", {"weight": [1, 1]}, ["adapt.weight=[1, 1] lists 1 twice"]),
    ("adapt", {"bottleneck": 10**9}, ["adapt.bottleneck=1000000000 is out of range"]),
    ("adapt", {"source_val_fraction": 1.0}, ["adapt.source_val_fraction=1.0 is out of range"]),
    ("adapt", {"domain_bn": "on"}, ["adapt.domain_bn='on' is not a boolean"]),
    ("two_stage", {"method": "coral"}, ["two_stage.method='coral' is a closed-form estimator"]),
    ("two_stage", {"stage2_lr": INF}, ["two_stage.stage2_lr=inf"]),
    ("two_stage", {"stage2_epochs": 0}, ["two_stage.stage2_epochs=0 is out of range"]),
]


@pytest.fixture(scope="module")
def tiny():
    return create_backbone("tiny_cnn", pretrained=False, image_size=16)


def _ids(case):
    return f"{case[0]}-{'-'.join(map(str, case[1]))}"


@pytest.mark.parametrize("name,kw,fragments", BAD, ids=[_ids(c) for c in BAD])
def test_validate_names_the_parameter_the_value_and_the_fix(name, kw, fragments, tiny):
    strat = get("strategy", name)(backbone="tiny_cnn", **kw)
    with pytest.raises(ConfigError) as info:
        strat.validate(backbone=tiny)
    msg = str(info.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


@pytest.mark.parametrize("name", available("strategy"))
def test_defaults_are_valid_for_every_strategy(name, tiny):
    get("strategy", name)(backbone="tiny_cnn").validate()
    get("strategy", name)(backbone="tiny_cnn").validate(backbone=tiny)


def test_unfreeze_last_k_is_checked_against_the_backbone_groups(tiny):
    n = len(tiny.layer_groups())
    from transferkit.strategies import FineTune

    FineTune(backbone="tiny_cnn", unfreeze=f"last:{n}").validate(backbone=tiny)
    FineTune(backbone="tiny_cnn", unfreeze="last:99").validate()  # no built backbone: checked in fit
    with pytest.raises(ConfigError, match=rf"finetune.unfreeze='last:99' asks for 99 groups but the backbone has "
                                          rf"{n} layer groups; use last:k with k <= {n}"):
        FineTune(backbone="tiny_cnn", unfreeze="last:99").validate(backbone=tiny)
    with pytest.raises(ConfigError, match=f"has {n} layer groups"):  # an instance is its own backbone
        FineTune(backbone=tiny, unfreeze="last:99").validate()
    with pytest.raises(ConfigError, match="adapt.unfreeze='last:99'"):
        get("strategy", "adapt")(backbone="tiny_cnn", level="backbone", unfreeze="last:99").validate(backbone=tiny)


def test_cuda_without_cuda_is_an_error_not_a_silent_cpu_run(monkeypatch, tiny):
    import torch

    from transferkit.strategies import Scratch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for dev in ("cuda", "cuda:0", "cuda:7"):
        with pytest.raises(ConfigError, match=rf"scratch.device='{dev}' but this machine has no usable CUDA GPU.*"
                                              "use device: cpu, or leave device out"):
            Scratch(backbone="tiny_cnn", device=dev).validate()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"scratch.device='cuda:2' but this machine has 2 CUDA device\(s\)"):
        Scratch(backbone="tiny_cnn", device="cuda:2").validate()
    Scratch(backbone="tiny_cnn", device="cuda:1").validate()
    Scratch(backbone="tiny_cnn", device="cpu").validate()


def test_the_trainer_never_falls_back_to_the_cpu_silently(monkeypatch):
    import torch

    from transferkit.finetune import build_param_groups
    from transferkit.nn import TransferModel
    from transferkit.train import Trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    m = TransferModel(create_backbone("tiny_mlp", pretrained=False, in_features=4), 2)
    with pytest.raises(ConfigError, match="device='cuda' but this machine has no usable CUDA GPU"):
        Trainer(m, build_param_groups(m, 1e-3), device="cuda")
    with pytest.raises(ConfigError, match="optimizer='adam'.*Did you mean 'adamw'"):
        Trainer(m, build_param_groups(m, 1e-3), optimizer="adam")
    groups = build_param_groups(m, 1e-3)
    groups[0]["lr"] = math.inf
    with pytest.raises(ConfigError, match="lr=inf"):
        Trainer(m, groups)


def test_yaml_strings_are_converted_in_place(tiny):
    s = get("strategy", "two_stage")(backbone="tiny_cnn", stage2_lr="3e-4", lr="1e-3", weight=["0.5", 1])
    s.validate()
    assert s.stage2_lr == 3e-4 and s.lr == 1e-3 and s.weight == [0.5, 1]


@pytest.fixture(scope="module")
def digits():
    d = load_digits_domain(size=16)
    return d.subset(np.arange(40)), d.subset(np.arange(40, 80))


@pytest.mark.parametrize("name,kw,fragment", [
    ("scratch", {"optimizer": "adam"}, "scratch.optimizer='adam'"),
    ("finetune", {"unfreeze": "last:99"}, "finetune.unfreeze='last:99'"),
    ("finetune", {"lr": math.inf}, "finetune.lr=inf"),
    ("feature_extraction", {"C": -1}, "feature_extraction.C=-1"),
    ("adapt", {"method": "dnn"}, "adapt.method='dnn'"),
    ("two_stage", {"stage2_lr": math.nan}, "two_stage.stage2_lr=nan"),
])
def test_fit_validates_first(name, kw, fragment, digits, tiny):
    """``fit`` fails before any work, with the message of ``validate`` (unfreeze: once built)."""
    train, src = digits
    strat = get("strategy", name)(backbone=tiny if name == "finetune" else "tiny_cnn", pretrained=False,
                                  image_size=16, epochs=1, **kw)
    extra = {"source": src} if name in ("adapt", "two_stage") else {}
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        strat.fit(train, **extra)
