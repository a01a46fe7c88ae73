"""Transfer to small devices: knowledge distillation, pruning, INT8 quantization.

- :mod:`.distill`: Hinton KD and FitNets hint terms for the one Trainer, distillation on
  unlabeled target data;
- :mod:`.prune`: structured channel pruning by a dependency graph (torch-pruning) to a MAC or
  parameter ratio, unstructured magnitude pruning, MAC and parameter counts;
- :mod:`.quantize`: post-training static INT8 through ``torch.export`` + PT2E (x86 quantizer),
  dynamic INT8 through torchao, saving and reloading, and the x86 lowering that makes static INT8
  faster than FP32 (the converted graph alone is slower);
- :mod:`.deploy`: a pruned or distilled model to ONNX, checked in onnxruntime within 1e-4;
- :mod:`.strategy`: the ``distill`` strategy (a teacher strategy of the same run, or a finished
  run directory, into a small student; unlabeled target rows learn from the teacher alone);
- :mod:`.run`: ``transferkit compress RUN_DIR`` (prune + fine-tune, static INT8 with
  quantization-aware fine-tuning when PTQ loses more than a validation budget, dynamic INT8),
  measured against FP32 in the same process, and ``transferkit predict`` of its output.

Each module imports its optional dependencies (torchao, torch-pruning: the ``compress`` extra)
only when called. ``transferkit benchmark compress`` is :mod:`transferkit.compression`.
"""

from .distill import HintTerm, KDObjective, distill, kd_loss, teacher_logits_of, teacher_outputs

__all__ = ["HintTerm", "KDObjective", "distill", "kd_loss", "teacher_logits_of", "teacher_outputs"]
