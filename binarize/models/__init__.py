"""The model zoo: the demo's digits network, the MNIST-1D 1-D CNN and the CIFAR architectures
of the BNN papers.

``create("resnet20")`` builds an untrained model; ``binarize.load_model("binarize:NAME")``
does the same and records the source so checkpoints can rebuild it.
"""

from binarize.models.registry import create, names, register

# Importing the architecture modules registers them.
from binarize.models import digits  # noqa: F401  isort: skip
from binarize.models import cifar  # noqa: F401  isort: skip
from binarize.models import mnist1d  # noqa: F401  isort: skip

__all__ = ["create", "names", "register"]
