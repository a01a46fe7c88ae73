"""Metrics: pure, validated, seeded functions on feature matrices.

- :mod:`.divergence`: distances and two-sample tests between domains (registry kind ``divergence``);
- :mod:`.information`: entropy, cross-entropy, mutual information;
- :mod:`.transferability`: scores of a backbone for a labeled target without training
  (registry kind ``transferability``);
- :mod:`.scorers`: unsupervised model-selection scorers for domain adaptation (kind ``scorer``);
- :mod:`.calibration`: expected calibration error, reliability curves, MC-dropout uncertainty;
- :mod:`.openset`: OS, OS*, UNK and the H-score of open-set predictions;
- :mod:`.zero_shot`: per-class accuracy, generalised zero-shot seen / unseen / harmonic mean,
  calibrated stacking;
- :mod:`.retrieval`: recall@k of image -> text and text -> image retrieval;
- :mod:`.regression`: MSE, MAE and R^2 of regression heads;
- :mod:`.uncertainty`: NLL, Brier, predictive entropy, misclassification/OOD AUROC, a one-call
  report, temperature scaling, (weighted) ensembles, last-layer Laplace approximation.
"""

from . import divergence, information, scorers, transferability  # noqa: F401  (registers)
from . import calibration  # noqa: F401,E402
from . import openset, uncertainty, zero_shot  # noqa: F401,E402
from . import regression, retrieval  # noqa: F401,E402
