"""`transferkit assess` gives advice that fits the case (issue 13, items 1, 3, 4).

On the issue's generated table (``_assess_data.make_table``: 6 columns, the positive class moved
along three of them; ``/tmp/tab/gen.py`` makes the same rows): a CSV needs no backbone flag
(``identity``, alias ``none``, reads its columns), the advice has no BatchNorm where the backbone
has none, a target oracle barely above source-only says adaptation has little room, a bound
above 1 is called vacuous, the target's class priors are estimated without its labels (and the
estimate is called unreliable when a prior change does not explain the shift), and the
label-free part of the verdict is the same with and without target labels.
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from transferkit.assess import assess, bound_caveats, make_verdict, target_oracle
from transferkit.cli import main
from transferkit.data import DomainDataset
from transferkit.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from _assess_data import digits_table, make_table, write_csv  # noqa: E402

FAST = dict(divergences=("mmd", "a_distance"), n_permutations=50, seed=0)


def _table(X, y, name, labeled=True):
    return DomainDataset(np.asarray(X, dtype=np.float32), np.asarray(y) if labeled else None, name=name,
                         modality="tabular", classes=["no", "yes"])


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    """The issue's table, smaller: source 19% 'yes'; target 42% 'yes' and its mean shifted."""
    d = tmp_path_factory.mktemp("tab")
    Xs, ys = make_table(1000, 0.19, 0.0, 1)
    Xt, yt = make_table(1000, 0.42, 1.0, 2)
    return {"source": write_csv(d / "source.csv", Xs, ys), "target": write_csv(d / "target.csv", Xt, yt),
            "unlabeled": write_csv(d / "target_unlabeled.csv", Xt), "dir": d}


# ---------------------------------------------------------------------------- item 1: a CSV, no flag
def test_a_csv_needs_no_backbone_flag_and_prints_each_divergence_once(tmp_path, capsys):
    Xs, ys = make_table(400, 0.19, 0.0, 1)
    Xt, yt = make_table(400, 0.42, 1.0, 2)
    src, tgt = write_csv(tmp_path / "source.csv", Xs, ys), write_csv(tmp_path / "target.csv", Xt, yt)
    base = ["assess", "--source", src, "--target", tgt, "--permutations", "50"]
    assert main([*base, "--out", str(tmp_path / "auto"), "--no-report"]) == 0
    printed = capsys.readouterr().out
    res = json.loads((tmp_path / "auto" / "assess.json").read_text())
    assert res["backbones"] == ["identity"] and res["modality"] == "tabular"
    assert res["backbone_context"] == {"modality": "tabular", "backbone": "identity", "raw_columns": True, "norm": None}
    # each divergence once in the terminal (the progress lines say what is measured, not the values) ...
    for name in ("mmd", "a_distance", "kl_gaussian", "wasserstein", "coral_distance", "ks_features"):
        assert sum(line.split()[:1] == [name] for line in printed.splitlines()) == 1, name
    assert printed.count(f"{res['divergences']['mmd']['value']:.4g}") == 1
    # ... and in the report (markdown only, without the t-SNE: seconds)
    from transferkit.reports import write_report

    write_report(tmp_path / "auto", formats=["md"])
    md = (tmp_path / "auto" / "report.md").read_text()
    for name in res["divergences"]:
        assert md.count(f"| {name} |") == 1, name
    assert "## Class priors without target labels" in md and "target oracle" in md

    for flag in ("identity", "none"):  # the canonical name and its alias: the same numbers
        assert main([*base, "--backbone", flag, "--out", str(tmp_path / flag), "--no-report"]) == 0
        other = json.loads((tmp_path / flag / "assess.json").read_text())
        assert other["backbones"] == ["identity"]
        assert other["divergences"]["mmd"]["value"] == res["divergences"]["mmd"]["value"]
        assert other["verdict"]["text"] == res["verdict"]["text"]


def test_identity_on_images_or_text_is_a_one_line_error(capsys):
    with pytest.raises(ConfigError, match=r"backbone 'identity' uses the columns of a table as features, but "
                                          r"'digits' is image; give an image backbone \(e.g. --backbone "
                                          r"efficientnet_lite0\) or leave --backbone out"):
        assess("digits:size=8", "digits:size=8", backbones=["identity"], **FAST)
    text = DomainDataset(["a b", "c d"] * 10, np.arange(20) % 2, name="t", modality="text")
    with pytest.raises(ConfigError, match=r"backbone 'none' .* 't' is text; give a text backbone \(e.g. --backbone "
                                          r"minilm\)"):
        assess(text, text, backbones=["none"], **FAST)
    assert main(["assess", "--source", "digits:size=8", "--target", "digits:size=8", "--backbone", "none",
                 "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("transferkit: error: backbone 'none' uses the columns")


# ---------------------------------------------------------------------------- item 2: advice per modality
def test_advice_on_a_table_has_no_batchnorm_and_names_what_applies(csvs):
    res = assess(csvs["source"], csvs["target"], labels_per_class=10, **FAST)
    v = res["verdict"]
    assert v["shift_significant"]
    assert "BatchNorm" not in v["text"] and "LP-FT" not in v["text"]  # no network to fine-tune
    assert "method: coral" in v["text"] and "method: jan" in v["text"] and "source_only_lr" in v["text"]
    assert "standardised columns" in v["text"]
    assert "with 10 labels per class there is no backbone to fine-tune" in v["text"]


def test_advice_for_a_text_encoder_has_no_batchnorm():
    rng = np.random.default_rng(0)
    words = [["good", "great", "fine"], ["bad", "awful", "poor"]]
    y = rng.integers(0, 2, 80)
    src = DomainDataset([" ".join(rng.choice(words[c], 3)) for c in y], y, name="reviews", modality="text")
    tgt = DomainDataset([" ".join(rng.choice(words[c], 3)).upper() + "!!" for c in y], y, name="tweets",
                        modality="text")
    res = assess(src, tgt, backbones=["tiny_text"], labels_per_class=20, **FAST)
    assert res["backbone_context"]["norm"] == "layernorm"  # read from its modules, not from its name
    v = res["verdict"]
    assert v["shift_significant"] and "BatchNorm" not in v["text"]
    assert "frozen tiny_text embeddings" in v["text"] and "uses LayerNorm, nothing to freeze" in v["text"]
    # an image CNN with BatchNorm keeps the frozen-BatchNorm advice (the rule is the backbone's, not the name's)
    cnn = {"modality": "image", "backbone": "tiny_cnn", "raw_columns": False, "norm": "batchnorm"}
    assert "frozen BatchNorm" in make_verdict(res["divergences"], {}, 0.5, 20, 40, context=cnn)["text"]


# ---------------------------------------------------------------------------- item 3: headroom
def test_no_shift_table_says_adaptation_has_little_room():
    """Source and target from one distribution: source-only is as good as the target oracle."""
    Xs, ys = make_table(1000, 0.3, 0.0, 1)
    Xt, yt = make_table(1000, 0.3, 0.0, 3)
    res = assess(_table(Xs, ys, "a"), _table(Xt, yt, "b"), **FAST)
    o = res["target_oracle"]
    assert o["n_labels"] == 600 and o["n_folds"] == 5
    assert abs(o["headroom"]) < 0.02 and o["small"]
    assert res["verdict"]["small_headroom"]
    assert "adaptation has little room: the target oracle is only" in res["verdict"]["text"]
    assert "use source-only (source_only_lr" in res["verdict"]["text"]


def test_the_oracle_headroom_rule():
    """Against the same rows: a source model that is the oracle leaves no room; a constant one leaves a lot."""
    from sklearn.linear_model import LogisticRegression

    X, y = make_table(400, 0.5, 0.0, 5)

    class Constant:
        def predict(self, F):
            return np.zeros(len(F), dtype=int)

    good = target_oracle(X, y, LogisticRegression(max_iter=3000).fit(X, y), seed=0)
    bad = target_oracle(X, y, Constant(), seed=0)
    assert good["small"] and abs(good["headroom"]) < 0.02
    assert not bad["small"] and bad["headroom"] > 0.25 and bad["source_only"] == pytest.approx(1 - y.mean(), abs=0.01)
    assert target_oracle(X[:3], np.array([0, 1, 1]), Constant()) is None  # one label of class 0: no CV


# ---------------------------------------------------------------------------- item 4: the bound's caveats
def test_a_bound_above_one_is_called_vacuous(tmp_path, capsys):
    Xs, ys = make_table(600, 0.5, 0.0, 1)
    Xt, yt = make_table(600, 0.5, 6.0, 2)  # far apart: A-distance at its maximum
    src, tgt = write_csv(tmp_path / "s.csv", Xs, ys), write_csv(tmp_path / "t.csv", Xt, yt)
    assert main(["assess", "--source", src, "--target", tgt, "--permutations", "20", "--out", str(tmp_path / "a"),
                 "--no-report"]) == 0
    printed = capsys.readouterr().out
    b = json.loads((tmp_path / "a" / "assess.json").read_text())["bound"]
    assert b["estimate"] > 1 and b["vacuous"]
    assert any("so it is vacuous: an error rate cannot exceed 1" in c for c in b["caveats"])
    assert any("an estimate, not a guarantee" in c for c in b["caveats"])
    assert any("A-distance is at its maximum (2.00 of 2)" in c for c in b["caveats"])
    assert any("does not mean that transfer must fail" in c for c in b["caveats"])
    assert "caveat: the bound is" in printed and "is vacuous: above 1" in printed
    # below 1: not called vacuous, still an estimate
    low = bound_caveats({"estimate": 0.4, "half_a_distance": 0.1})
    assert len(low) == 2 and "vacuous" not in " ".join(low) and "up to 40% of the target" in low[1]


# ---------------------------------------------------------------------------- item 5: label shift
def test_label_shift_is_estimated_without_target_labels_and_acted_on():
    """Only the priors move (19% -> 42% 'yes'): MLLS finds the target's prior from its inputs,
    a prior change explains the shift, and the label-free verdict recommends the correction."""
    Xs, ys = make_table(2000, 0.19, 0.0, 1)
    Xt, yt = make_table(2000, 0.42, 0.0, 2)
    res = assess(_table(Xs, ys, "s"), _table(Xt, yt, "t", labeled=False), **FAST)
    pe = res["label_shift_estimate"]
    true = yt.mean()  # 0.416; the unlabeled target is assessed on all its rows
    assert pe["classes"] == ["no", "yes"] and pe["source_priors"][1] == pytest.approx(0.19, abs=0.03)
    assert abs(pe["priors"][1] - true) < 0.04 and pe["ci_low"][1] < true < pe["ci_high"][1]
    assert abs(pe["bbse"]["priors"][1] - true) < 0.06  # the cross-check agrees
    assert pe["changed"] and pe["explained"] and pe["a_distance_reweighted"] < 0.1 < pe["a_distance_before"]
    lf = res["verdict"]["label_free"]
    assert "correct for the prior change: label_shift: mlls (prior correction)" in lf["text"]
    assert re.search(r"'yes' 0\.1\d -> 0\.4\d \[0\.\d\d, 0\.\d\d\]", lf["text"]) and res["verdict"]["prior_correction"]

    # with a balanced draw of k labels per class, the imbalanced target is misrepresented: said so
    drawn = assess(_table(Xs, ys, "s"), _table(Xt, yt, "t"), labels_per_class=20, **FAST)
    assert "a balanced draw of 20 labels per class misrepresents this imbalanced target" in drawn["verdict"]["text"]
    assert "split.label_draw: prior" in drawn["verdict"]["text"]


def test_a_prior_estimate_that_does_not_explain_the_shift_is_called_unreliable(csvs):
    """The issue's table also moves its inputs (the mean along two columns), which label-shift
    estimators read as more 'yes': the check says so instead of recommending a correction."""
    res = assess(csvs["source"], csvs["unlabeled"], **FAST)
    pe = res["label_shift_estimate"]
    assert pe["priors"][1] > 0.6  # far from the true 0.42: the covariate shift looks like 'yes'
    assert not pe["explained"] and pe["a_distance_reweighted"] > 0.3
    v = res["verdict"]
    assert "unreliable here" in v["text"] and "correct for the prior change" not in v["text"]
    assert not v["prior_correction"]
    # with the labels, the observed priors are shown beside the estimate, and the verdict uses them
    lab = assess(csvs["source"], csvs["target"], **FAST)
    assert "the target's training labels: 'yes' 0.1" in lab["verdict"]["text"]
    assert "-> 0.4" in lab["verdict"]["text"].split("the target's training labels: ")[1][:30]


# ---------------------------------------------------------------------------- item 6: same verdict
def test_the_label_free_verdict_is_the_same_with_and_without_target_labels(csvs, tmp_path):
    """The same target rows, labeled (tested on a separate file, so assess reads every row's
    input, as it does for an unlabeled target) and unlabeled: the label-free part is identical;
    the labels only add to it."""
    Xtest, ytest = make_table(300, 0.42, 1.0, 9)
    split = {"test": write_csv(tmp_path / "test.csv", Xtest, ytest)}
    labeled = assess(csvs["source"], csvs["target"], split=split, **FAST)
    unlabeled = assess(csvs["source"], csvs["unlabeled"], **FAST)
    assert labeled["target_split"]["n_unlabeled_inputs"] == unlabeled["target_split"]["n_unlabeled_inputs"] == 1000
    assert labeled["verdict"]["label_free"] == unlabeled["verdict"]["label_free"]
    assert labeled["label_shift_estimate"] == unlabeled["label_shift_estimate"]
    assert labeled["verdict"]["text"].startswith(unlabeled["verdict"]["label_free"]["text"])
    assert labeled["verdict"]["label_based"]["reasons"] and labeled["target_oracle"]
    assert unlabeled["verdict"]["label_based"]["advice"][0].startswith("no target labels")


def test_a_partial_target_is_named_and_partial_adaptation_advised():
    """Four well-separated classes in the source, only two in the target (pure label shift): the
    estimated priors of the other two are ~0 with their intervals, and the verdict calls the
    target partial and names pada / ba3us; a target with every class gets no such advice."""
    C = 4.0 * np.eye(6)[:4]

    def blobs(classes, n, seed):
        r = np.random.default_rng(seed)
        y = np.repeat(classes, n)
        return (C[y] + r.normal(size=(len(y), 6))).astype(np.float32), y

    names = ["a", "b", "c", "d"]
    Xs, ys = blobs([0, 1, 2, 3], 150, 1)
    Xt, yt = blobs([0, 1], 200, 2)
    src = DomainDataset(Xs, ys, "s", "tabular", classes=names)
    res = assess(src, DomainDataset(Xt, None, "t", "tabular", classes=names), **FAST)
    pe = res["label_shift_estimate"]
    assert max(pe["ci_high"][2:]) < 0.01
    text = res["verdict"]["label_free"]["text"]
    assert "class(es) c, d look absent from the target" in text and "method: pada or ba3us" in text
    Xf, yf = blobs([0, 1, 2, 3], 100, 3)
    full = assess(src, DomainDataset(Xf, None, "t", "tabular", classes=names), **FAST)
    assert "look absent" not in full["verdict"]["label_free"]["text"]
