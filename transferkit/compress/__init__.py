"""Transfer to small devices: knowledge distillation, pruning, INT8 quantization (issue 19, in progress).

- :mod:`.distill`: Hinton KD and FitNets hint terms for the one Trainer, distillation on
  unlabeled target data;
- :mod:`.prune`: structured channel pruning by a dependency graph (torch-pruning) to a MAC or
  parameter ratio, unstructured magnitude pruning, MAC and parameter counts;
- :mod:`.quantize`: post-training static INT8 through ``torch.export`` + PT2E (x86 quantizer),
  dynamic INT8 through torchao, saving and reloading, and the x86 lowering that makes static INT8
  faster than FP32 (the converted graph alone is slower);
- :mod:`.deploy`: a pruned or distilled model to ONNX, checked in onnxruntime within 1e-4.

Not yet built (issue 19): the ``distill`` strategy and ``transferkit compress RUN_DIR``,
quantization-aware fine-tuning, ``transferkit benchmark compress``. Each module imports its
optional dependencies (torchao, torch-pruning: the ``compress`` extra) only when called.
"""

from .distill import HintTerm, KDObjective, distill, kd_loss, teacher_logits_of, teacher_outputs

__all__ = ["HintTerm", "KDObjective", "distill", "kd_loss", "teacher_logits_of", "teacher_outputs"]
