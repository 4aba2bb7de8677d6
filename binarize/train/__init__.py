"""Fine-tuning converted models: the loop, distillation, checkpoints, torchrun, recipes."""

from binarize.train.config import CONVERT_ESTIMATOR, DEFAULT_DATA, OPTIMIZERS, SCHEDULES, FinetuneConfig
from binarize.train.distill import teacher_from_converted
from binarize.train.distributed import teardown
from binarize.train.evaluate import EvalResult, evaluate
from binarize.train.loop import RESUME_MAY_CHANGE, FinetuneResult, finetune
from binarize.train.recipe import Recipe, load_recipe, recipe_names
from binarize.train.state import load_training_checkpoint, seed_everything

__all__ = [
    "CONVERT_ESTIMATOR",
    "DEFAULT_DATA",
    "OPTIMIZERS",
    "RESUME_MAY_CHANGE",
    "SCHEDULES",
    "EvalResult",
    "FinetuneConfig",
    "FinetuneResult",
    "Recipe",
    "evaluate",
    "finetune",
    "load_recipe",
    "load_training_checkpoint",
    "recipe_names",
    "seed_everything",
    "teacher_from_converted",
    "teardown",
]
