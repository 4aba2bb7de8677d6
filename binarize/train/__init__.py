"""Fine-tuning converted models: the loop, distillation, checkpoints, torchrun, recipes."""

from binarize.train.config import FinetuneConfig
from binarize.train.distill import teacher_from_converted
from binarize.train.evaluate import EvalResult, evaluate
from binarize.train.loop import FinetuneResult, finetune

__all__ = ["EvalResult", "FinetuneConfig", "FinetuneResult", "evaluate", "finetune", "teacher_from_converted"]
