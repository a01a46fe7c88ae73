"""Metrics: pure, validated, seeded functions on feature matrices.

- :mod:`.divergence`: distances and two-sample tests between domains (registry kind ``divergence``);
- :mod:`.information`: entropy, cross-entropy, mutual information;
- :mod:`.transferability`: scores of a backbone for a labeled target without training
  (registry kind ``transferability``).
"""

from . import divergence, information, transferability  # noqa: F401  (registers)
