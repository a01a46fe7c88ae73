"""Bad strategy parameters, training recipes and devices through the CLI: exit code 2, one line
that names the parameter, the value and the fix, and the finished run under ``--out`` (given with
``--overwrite``) byte-identical. See ``_badinput.py`` for the harness."""

import pytest

from _badinput import _cfg, _run, check_case, existing  # noqa: F401

SOURCE = "digits:subset=0/2,size=16"


def _s(t, **params):
    """A config with one strategy (``name`` in ``params``) and a labeled source."""
    return _run(t, _cfg(t, source=SOURCE, strategies=[params]))


CASES = {
    # --- choices
    "optimizer adam": lambda t: (_s(t, name="scratch", optimizer="adam"), ["optimizer='adam'", "Did you mean 'adamw'"]),
    "unknown schedule": lambda t: (_s(t, name="scratch", schedule="linear"), ["schedule='linear'", "'cosine'"]),
    "unknown augment preset": lambda t: (_s(t, name="scratch", augment="heavy"), ["augment='heavy'", "'light'"]),
    "unknown augment option": lambda t: (
        _s(t, name="scratch", augment={"rotate": 5, "flip": True}), ["augment option 'flip'", "Did you mean 'hflip'"]),
    "augment rotate out of range": lambda t: (
        _s(t, name="scratch", augment={"rotate": 1e6}), ["rotate=1000000.0 is not valid", "[0, 180]"]),
    "unknown freeze_bn": lambda t: (
        _s(t, name="finetune", freeze_bn="sometimes"), ["freeze_bn='sometimes'", "'frozen_groups'"]),
    "unknown head": lambda t: (_s(t, name="finetune", head="transformer"), ["head='transformer'", "'mlp'"]),
    "unknown monitor": lambda t: (_s(t, name="scratch", monitor="accuracy"), ["monitor='accuracy'", "'val_accuracy'"]),
    "unfreeze last:99": lambda t: (
        _s(t, name="finetune", unfreeze="last:99"),
        ["unfreeze='last:99' asks for 99 groups but the backbone has 3 layer groups", "use last:k with k <= 3"]),
    "unfreeze syntax": lambda t: (
        _s(t, name="finetune", unfreeze="top2"), ["unfreeze='top2' is not valid", "all, none or last:k"]),
    "lp_init not a boolean": lambda t: (
        _s(t, name="finetune", lp_init="yes"), ["lp_init='yes' is not a boolean", "true or false"]),
    "feature_extraction head": lambda t: (
        _s(t, name="feature_extraction", head="svm"), ["head='svm'", "'logistic'"]),
    "standardize not a boolean": lambda t: (
        _s(t, name="feature_extraction", standardize="maybe"), ["standardize='maybe' is not a boolean"]),
    # --- numbers: ranges, finiteness, sizes that would exhaust the machine
    "C: -1": lambda t: (_s(t, name="feature_extraction", C=-1), ["C=-1 is out of range", "auto"]),
    "C: nan": lambda t: (_s(t, name="feature_extraction", C=float("nan")), ["C", "finite"]),
    "C: inf": lambda t: (_s(t, name="feature_extraction", C=float("inf")), ["C", "finite"]),
    "lr: 1e9": lambda t: (_s(t, name="scratch", lr=1e9), ["lr=1000000000.0 is out of range", "(0, 10]"]),
    "lr: inf": lambda t: (_s(t, name="scratch", lr=float("inf")), ["lr", "finite"]),
    "lr: nan": lambda t: (_s(t, name="scratch", lr=float("nan")), ["lr", "finite"]),
    "batch_size 10**9": lambda t: (
        _s(t, name="scratch", batch_size=10**9), ["batch_size=1000000000 is out of range", "[1, 65536]"]),
    "epochs 10**9": lambda t: (
        _s(t, name="scratch", epochs=10**9), ["epochs=1000000000 is out of range", "[1, 10000]"]),
    "early_stopping 0": lambda t: (_s(t, name="scratch", early_stopping=0), ["early_stopping", ">= 1"]),
    "label_smoothing 1.5": lambda t: (_s(t, name="scratch", label_smoothing=1.5), ["label_smoothing", "1.5"]),
    "dropout nan": lambda t: (_s(t, name="scratch", dropout=float("nan")), ["dropout", "finite"]),
    "warmup_epochs inf": lambda t: (_s(t, name="scratch", warmup_epochs=float("inf")), ["warmup_epochs", "finite"]),
    "warmup longer than training": lambda t: (
        _s(t, name="scratch", epochs=2, warmup_epochs=5),
        ["warmup_epochs=5 is longer than scratch.epochs=2", "use warmup_epochs <= epochs"]),
    "progressive_unfreeze 0": lambda t: (
        _s(t, name="finetune", progressive_unfreeze=0), ["progressive_unfreeze", ">= 1"]),
    "layer_decay above 1": lambda t: (_s(t, name="finetune", layer_decay=1.5), ["layer_decay", "1.5"]),
    "stage2_epochs 0": lambda t: (_s(t, name="two_stage", stage2_epochs=0), ["stage2_epochs=0 is out of range"]),
    "bottleneck 10**9": lambda t: (
        _s(t, name="adapt", bottleneck=10**9), ["bottleneck=1000000000 is out of range", "[1, 65536]"]),
    "source_val_fraction 1": lambda t: (
        _s(t, name="adapt", source_val_fraction=1.0), ["source_val_fraction=1.0 is out of range", "(0, 1)"]),
    # --- devices
    "device bogus": lambda t: (_s(t, name="scratch", device="bogus"), ["device='bogus' is not a torch device",
                                                                       "use device: cpu"]),
    "device cuda without CUDA": lambda t: (
        _s(t, name="scratch", device="cuda"), ["device='cuda' but this machine has no usable CUDA GPU",
                                               "use device: cpu, or leave device out"]),
    "device cuda:3 without CUDA": lambda t: (
        _s(t, name="feature_extraction", device="cuda:3"), ["device='cuda:3'", "use device: cpu"]),
    "device meta": lambda t: (_s(t, name="scratch", device="meta"), ["device='meta'", "use device: cpu"]),
    # --- penalties
    "unknown penalty": lambda t: (_s(t, name="finetune", penalty="l2sq"), ["penalty='l2sq'", "Did you mean 'l2sp'"]),
    "penalty twice": lambda t: (_s(t, name="finetune", penalty=["l2sp", "l2sp"]), ["names 'l2sp' twice"]),
    "unknown penalty option": lambda t: (
        _s(t, name="finetune", penalty="ewc", penalty_options={"lamb": 5}),
        ["unknown option 'lamb' for penalty 'ewc'", "Did you mean 'lam'"]),
    "negative penalty strength": lambda t: (
        _s(t, name="finetune", penalty="l2sp", penalty_options={"alpha": -1}), ["penalty_options.alpha must be >= 0"]),
    "penalty_options without penalty": lambda t: (
        _s(t, name="finetune", penalty_options={"lam": 5}), ["penalty_options is set but", "set penalty"]),
    # --- adaptation methods and their options
    "unknown adapt method": lambda t: (_s(t, name="adapt", method="dnn"), ["method='dnn'", "Did you mean"]),
    "unknown DA loss option": lambda t: (
        _s(t, name="adapt", method="dann", loss_options={"hiden": 64}), ["no option 'hiden'", "Did you mean 'hidden'"]),
    "DA loss option that exhausts memory": lambda t: (
        _s(t, name="adapt", method="dann", loss_options={"hidden": 10**9}), ["would build", "smaller sizes"]),
    "bad DA loss option value": lambda t: (
        _s(t, name="adapt", method="mcc", loss_options={"temperature": -1}), ["loss_options.temperature must be > 0"]),
    "options for a shallow method": lambda t: (
        _s(t, name="adapt", method="coral", loss_options={"x": 1}), ["unknown option 'x'", "shallow estimator 'coral'"]),
    "unknown level": lambda t: (_s(t, name="adapt", level="deep"), ["level='deep'", "'backbone'"]),
    "fixmatch on features": lambda t: (
        _s(t, name="adapt", method="fixmatch"), ["method='fixmatch'", "level: backbone"]),
    "shallow method on the backbone": lambda t: (
        _s(t, name="adapt", method="coral", level="backbone"), ["works on fixed features", "level: features"]),
    "unknown selection scorer": lambda t: (_s(t, name="adapt", selection="best"), ["selection='best'", "'dev'"]),
    "duplicate weight candidates": lambda t: (_s(t, name="adapt", weight=[1, 1]), ["lists 1 twice"]),
    "source_only with a scorer that reads the target": lambda t: (
        _s(t, name="source_only", selection="dev"), ["source_only.selection='dev'"]),
    "source_only_adabn with a target scorer": lambda t: (
        _s(t, name="source_only_adabn", selection="entropy"), ["selection='entropy'"]),
    "target_only bottleneck 10**9": lambda t: (
        _s(t, name="target_only", bottleneck=10**9), ["bottleneck=1000000000 is out of range"]),
    "source_only_lr source_val_fraction 1.5": lambda t: (
        _s(t, name="source_only_lr", source_val_fraction=1.5), ["source_val_fraction=1.5"]),
    "self_training threshold 0": lambda t: (_s(t, name="self_training", threshold=0), ["threshold", "(0, 1]"]),
    "fixmatch option misspelt": lambda t: (
        _s(t, name="fixmatch", loss_options={"treshold": 0.9}), ["'treshold'", "'threshold'"]),
    "adapt target_labels at the backbone level": lambda t: (
        _s(t, name="adapt", target_labels=True, level="backbone"), ["target_labels"]),
    "ensemble member misspelt": lambda t: (
        _run(t, _cfg(t, strategies=[{"name": "scratch", "epochs": 1}, {"name": "feature_extraction"},
                                    {"name": "ensemble", "members": ["scratch", "feature_extractoin"]}])),
        ["ensemble.members lists 'feature_extractoin'", "Did you mean 'feature_extraction'"]),
    "source_free method misspelt": lambda t: (_s(t, name="source_free", method="shott"),
                                              ["source_free.method='shott'", "'shot'"]),
    "multi_source method misspelt": lambda t: (_s(t, name="multi_source", method="m3sdaa"),
                                               ["multi_source.method='m3sdaa'", "'m3sda'"]),
    "domain_generalization method misspelt": lambda t: (_s(t, name="domain_generalization", method="irn"),
                                                        ["irn", "'irm'"]),
    "open_set method misspelt": lambda t: (_s(t, name="open_set", method="ovanett"),
                                           ["open_set.method='ovanett'", "'ovanet'"]),
    "multitask weighting misspelt": lambda t: (_s(t, name="multitask", weighting="pcgard"),
                                               ["multitask.weighting='pcgard'", "'pcgrad'"]),
    "distill teacher misspelt": lambda t: (
        _run(t, _cfg(t, strategies=[{"name": "scratch", "epochs": 1}, {"name": "distill", "teacher": "scrach"}])),
        ["distill.teacher='scrach' is neither a strategy", "Did you mean 'scratch'"]),
    "distill temperature 0": lambda t: (
        _run(t, _cfg(t, strategies=[{"name": "scratch", "epochs": 1},
                                    {"name": "distill", "teacher": "scratch", "temperature": 0}])),
        ["distill.temperature must be > 0"]),
    "two_stage with a shallow method": lambda t: (
        _s(t, name="two_stage", method="coral"), ["closed-form estimator", "deep loss"]),
}


def test_the_table_covers_every_strategy(tmp_path):
    """Every registered strategy's parameters are refused somewhere in this table (a strategy
    added without bad-input cases fails here), and every case is a distinct input."""
    from _badinput import check_table, strategies_of
    from transferkit._registry import available

    built = check_table(CASES, tmp_path)
    missing = sorted(set(available("strategy")) - strategies_of(built))
    assert not missing, f"no bad-parameter case for strategies {missing}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_params(case, tmp_path, existing, capsys, monkeypatch):  # noqa: F811
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the device cases on any machine
    check_case(CASES, case, tmp_path, capsys, monkeypatch)
