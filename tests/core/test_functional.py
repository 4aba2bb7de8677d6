"""The shared autograd Function and the sign convention."""

import torch

from binarize.estimators import Estimator
from binarize.functional import sign


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0])
    assert sign(x).tolist() == [-1.0, 1.0, 1.0, 1.0, 1.0]


class _AbsGradient(Estimator):
    def derivative(self, x):
        return x.abs()


def test_surrogate_gradient_replaces_the_true_one():
    x = torch.tensor([-1.5, -0.5, 0.0, 0.5, 1.5], requires_grad=True)
    y = _AbsGradient()(x)
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    assert x.grad.tolist() == [1.5, 1.0, 0.0, 2.0, 7.5]



def test_every_source_package_is_importable_as_installed():
    """Regression: an installed (non-editable) binarize once lacked binarize.cli."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    packages = ["binarize.cli"] + [
        ".".join(init.parent.relative_to(root).parts) for init in (root / "binarize").rglob("__init__.py")
    ]
    assert [name for name in packages if importlib.util.find_spec(name) is None] == []
