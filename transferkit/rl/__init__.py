"""Policy transfer in reinforcement learning (optional extra: ``pip install "transferkit[rl]"``).

Environments are the domains: parameterised variants of gymnasium's classic-control tasks,
named by spec strings (``cartpole:length=1.0``, ``acrobot:link_mass_2=1.5``), with physics
ranges for domain randomisation and observation noise / action delay as the reality gap.

- :mod:`.envs`: spec strings, :func:`make_env`, the families and their physics parameters;
- :mod:`.methods`: the transfer methods (registry kind ``rl_transfer``: ``scratch``,
  ``zero_shot``, ``finetune``, ``randomized``, ``distill``) and the policy-distillation loss;
- :mod:`.metrics`: Taylor & Stone's transfer metrics (jumpstart, asymptotic performance, time
  to threshold, total-reward ratio) with the negative-transfer verdict over seeds;
- :mod:`.run`: ``transferkit rl exp.yaml``; :mod:`.benchmark`: ``transferkit benchmark
  rl-transfer``.

Importing this package needs neither gymnasium nor stable-baselines3 (specs are checked
without them); building an environment or an agent without them is a one-line
:class:`~transferkit.errors.ConfigError` naming the extra.
"""

from __future__ import annotations

from .envs import FAMILIES, EnvSpec, make_env, parse_env_spec, require_rl
from .methods import (  # noqa: F401  (the import registers the methods)
    DistillObjective,
    RLTransferMethod,
    make_method,
    policy_distillation_loss,
)
from .metrics import (
    area_under_curve,
    asymptotic_performance,
    jumpstart,
    retention,
    time_to_threshold,
    transfer_metrics,
    transfer_ratio,
)

__all__ = ["FAMILIES", "DistillObjective", "EnvSpec", "RLTransferMethod", "area_under_curve", "asymptotic_performance",
           "jumpstart", "make_env", "make_method", "parse_env_spec", "policy_distillation_loss", "require_rl",
           "retention", "time_to_threshold", "transfer_metrics", "transfer_ratio"]
