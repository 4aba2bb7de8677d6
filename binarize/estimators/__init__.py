"""Gradient estimators: one paper per module, all behind the `Estimator` interface.

``create(name, **hparams)`` builds one, ``names()`` lists them, ``register(name)`` adds one.
"""

from binarize.estimators import ste  # noqa: F401  (registers the estimators it defines)
from binarize.estimators import reste  # noqa: F401
from binarize.estimators import irnet  # noqa: F401
from binarize.estimators import adaste  # noqa: F401
from binarize.estimators import dste  # noqa: F401
from binarize.estimators import psa  # noqa: F401
from binarize.estimators import approxsign  # noqa: F401
from binarize.estimators.base import Estimator
from binarize.estimators.registry import coerce_hparams, create, defaults, get, names, register

__all__ = ["Estimator", "coerce_hparams", "create", "defaults", "get", "names", "register"]
