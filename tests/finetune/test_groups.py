import numpy as np
import pytest
import torch

from transferkit.backbones import create_backbone
from transferkit.data import load_digits_domain
from transferkit.errors import ConfigError
from transferkit.finetune import (
    ProgressiveUnfreezer,
    apply_freeze,
    build_param_groups,
    frozen_bn_modules,
    make_schedule,
    parse_unfreeze,
)
from transferkit.strategies import FineTune


def tiny_model(n_classes=10):
    torch.manual_seed(0)
    return create_backbone("tiny_cnn", num_classes=n_classes, image_size=16)


def small_digits(n_per_class=6, seed=0):
    from transferkit.data import sample_per_class

    d = load_digits_domain(size=16)
    idx, _ = sample_per_class(d.labels, n_per_class, seed)
    return d.subset(idx)


def test_model_groups_cover_every_parameter_once_head_last():
    m = tiny_model()
    groups = m.layer_groups()
    names = [n for _, ps in groups for n in ps]
    assert sorted(names) == sorted(n for n, _ in m.named_parameters())
    assert len(names) == len(set(names))
    assert groups[-1][0] == "head" and groups[0][0] == "stem"


@pytest.mark.parametrize("spec,k", [("all", 3), ("none", 0), ("last:2", 2), (1, 1)])
def test_parse_unfreeze(spec, k):
    assert parse_unfreeze(spec, 3) == k


@pytest.mark.parametrize("spec", ["last:9", "some", "last:x", True])
def test_parse_unfreeze_rejects(spec):
    with pytest.raises(ConfigError, match="unfreeze"):
        parse_unfreeze(spec, 3)


def test_apply_freeze_sets_requires_grad_by_group():
    m = tiny_model()
    apply_freeze(m, 1)
    groups = dict(m.layer_groups())
    params = dict(m.named_parameters())
    assert not any(params[n].requires_grad for n in groups["stem"] + groups["stage1"])
    assert all(params[n].requires_grad for n in groups["stage2"] + groups["head"])


def test_discriminative_and_layer_decay_learning_rates_land_in_optimizer():
    m = tiny_model()
    pg = build_param_groups(m, 1e-2, backbone_lr_mult=0.1, layer_decay=0.5, weight_decay=0.05)
    opt = torch.optim.AdamW(pg)
    lr_by_name = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lr_by_name["head"] == pytest.approx(1e-2)
    assert lr_by_name["stage2"] == pytest.approx(1e-3)
    assert lr_by_name["stage1"] == pytest.approx(5e-4)
    assert lr_by_name["stem"] == pytest.approx(2.5e-4)
    # biases / norm weights get no weight decay
    wd = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert wd["head"] == 0.05 and wd["head.no_decay"] == 0.0
    # every parameter in exactly one optimizer group
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in m.parameters())


def test_frozen_weights_are_bit_identical_after_training_and_bn_stats_too():
    train = small_digits()
    s = FineTune(backbone=tiny_model().backbone, unfreeze="last:1", lp_init=False, freeze_bn="frozen_groups",
                 epochs=3, batch_size=16, lr=1e-2, seed=0, progress=False, augment="light")
    before = {k: v.clone() for k, v in s.backbone.state_dict().items()}
    s.fit(train)
    after = s.model_.backbone.state_dict()
    for k in before:
        if k.startswith(("stem", "stage1")):  # frozen groups: weights and BN running stats
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["stage2.0.weight"], after["stage2.0.weight"])
    assert not torch.equal(before["stage2.1.running_mean"], after["stage2.1.running_mean"])


def test_freeze_bn_all_keeps_every_running_stat():
    m = tiny_model()
    bns = frozen_bn_modules(m, "all")
    assert len(bns) == 3
    assert frozen_bn_modules(m, "none") == []
    apply_freeze(m, 3)
    assert frozen_bn_modules(m, "frozen_groups") == []
    with pytest.raises(ConfigError, match="freeze_bn"):
        frozen_bn_modules(m, "maybe")


def test_progressive_unfreezing_follows_schedule_during_training():
    train = small_digits()
    seen = []

    s = FineTune(backbone=tiny_model().backbone, unfreeze="none", progressive_unfreeze=2, lp_init=False,
                 epochs=7, batch_size=16, seed=0, progress=False)
    orig = ProgressiveUnfreezer.on_epoch_start

    def spy(self, epoch):
        k = orig(self, epoch)
        groups = self.model.layer_groups()
        params = dict(self.model.named_parameters())
        trainable = [name for name, ps in groups[:-1] if params[ps[0]].requires_grad]
        seen.append((epoch, k, trainable))
        return k

    ProgressiveUnfreezer.on_epoch_start = spy
    try:
        s.fit(train)
    finally:
        ProgressiveUnfreezer.on_epoch_start = orig
    assert [k for _, k, _ in seen] == [0, 0, 1, 1, 2, 2, 3]
    assert seen[2][2] == ["stage2"]          # top group first
    assert seen[4][2] == ["stage1", "stage2"]
    assert seen[6][2] == ["stem", "stage1", "stage2"]


def test_progressive_unfreezing_frozen_groups_do_not_move_before_their_turn():
    train = small_digits()
    s = FineTune(backbone=tiny_model().backbone, unfreeze="none", progressive_unfreeze=100, lp_init=False,
                 freeze_bn="frozen_groups", epochs=2, batch_size=16, seed=0, progress=False)
    before = {k: v.clone() for k, v in s.backbone.state_dict().items()}
    s.fit(train)
    for k, v in s.model_.backbone.state_dict().items():
        assert torch.equal(before[k], v), k


def test_schedule_warmup_then_cosine_to_zero():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0}])
    sched = make_schedule(opt, 10, schedule="cosine", warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 7 / 8)))


def test_step_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0}])
    sched = make_schedule(opt, 9, schedule="step", step_size=3, gamma=0.1)
    lrs = []
    for _ in range(9):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01])
