"""The method ``transferkit fewshot`` uses when an experiment names none, and where it comes from.

:data:`BENCHMARK_VAL_ACCURACY` holds each method's meta-validation accuracy from one run of
``transferkit benchmark few-shot`` (mean over its four tasks and two settings, validation classes
only: no meta-test episode enters it); :func:`default_method` is the best of them. The numbers are
copied from that run's ``results.json`` (``default_method.scores``), never tuned by hand: when the
benchmark is run again and names another method, this table is replaced by the new run's scores
(the benchmark says so in its last lines). ``tests/fewshot/test_defaults.py`` checks that the
default is the argmax of the table and a registered method.
"""

from __future__ import annotations

#: The run the table comes from (command, date, wall time).
BENCHMARK_RUN = ("transferkit benchmark few-shot (1 seed, 100 meta-val episodes per cell), 2026-12-03, 80 cells; "
                 "see the README's few-shot table")

#: Mean meta-validation accuracy per method over every task and setting of that run.
BENCHMARK_VAL_ACCURACY: dict[str, float] = {
    "anil": 0.7058,
    "baseline": 0.7209,
    "baseline_pp": 0.7178,
    "finetune": 0.7444,
    "fomaml": 0.7284,
    "maml": 0.7339,
    "matching": 0.6518,
    "protonet": 0.7249,
    "reptile": 0.7488,
    "simpleshot": 0.7139,
}


def default_method() -> str:
    """The registered method with the best benchmark meta-validation accuracy (ties: the name
    first in alphabetical order); ``protonet`` before the table is filled."""
    if not BENCHMARK_VAL_ACCURACY:
        return "protonet"
    return max(sorted(BENCHMARK_VAL_ACCURACY), key=lambda m: BENCHMARK_VAL_ACCURACY[m])


def compare_with_run(scores: dict[str, float]) -> str | None:
    """A line for the benchmark's log when a run's best method differs from the shipped default
    (``None`` when they agree or the run scored nothing)."""
    if not scores:
        return None
    best = max(sorted(scores), key=lambda m: scores[m])
    current = default_method()
    if best == current:
        return None
    return (f"this run's best meta-validation method is {best!r} ({100 * scores[best]:.2f}%), the shipped default "
            f"is {current!r}: copy this run's default_method.scores into transferkit/fewshot/defaults.py "
            "(BENCHMARK_VAL_ACCURACY) to change it.")
