"""Every estimator against the spec's tables and an independent NumPy reference (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference_numpy as ref
from binarize.estimators import create, defaults, get, names
from binarize.progress import set_progress
from torch import nn

X = torch.tensor(ref.X, dtype=torch.float64)
PROGRESS = (0.0, 0.5, 1.0)
# points around the branch boundaries: ReSTE |x| = m, t; clipped STE and ApproxSign |x| = 1
BORDERS = torch.tensor([-1.5000001, -1.5, -1.4999999, -1.0, -0.1000001, -0.1, -0.0999999, 0.0,
                        0.0999999, 0.1, 0.1000001, 0.9999999, 1.0, 1.0000001, 1.5, 1.5000001],
                       dtype=torch.float64)


def phi(name: str, x: torch.Tensor, progress: float = 0.0, **hparams) -> np.ndarray:
    estimator = create(name, **hparams)
    estimator.set_progress(progress)
    return estimator.derivative(x).numpy()


def test_every_estimator_is_registered() -> None:
    assert names() == ["ste", "clipped_ste", "reste", "irnet", "adaste", "dste", "psa", "approxsign"]


@pytest.mark.parametrize("name", ["ste", "clipped_ste", "reste", "irnet", "dste", "psa", "approxsign"])
def test_forward_is_sign_with_sign0_plus_one(name: str) -> None:
    estimator = create(name).eval()
    expected = [-1, -1, -1, -1, 1, 1, 1, 1, 1]  # the spec's [code] rows give 0 at x = 0: binarize +1
    assert estimator(X).tolist() == expected


def test_ste_family_tables() -> None:
    np.testing.assert_array_equal(phi("ste", X), np.ones(9))
    np.testing.assert_array_equal(phi("clipped_ste", X), [0, 1, 1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(phi("clipped_ste", BORDERS), ref.clipped_ste_phi(BORDERS.numpy()))


@pytest.mark.parametrize(
    ("o", "row"),
    [
        (1.0, [1, 1, 1, 1, 1, 1, 1, 1, 1]),
        (2.0, [0.408248, 0.5, 0.707107, 3.16228, 3.16228, 3.16228, 0.707107, 0.5, 0.408248]),
        (3.0, [0.254381, 0.333333, 0.529134, 4.64159, 4.64159, 4.64159, 0.529134, 0.333333, 0.254381]),
    ],
)
def test_reste_table(o: float, row: list[float]) -> None:
    estimator = create("reste")
    estimator.o.fill_(o)
    np.testing.assert_allclose(estimator.derivative(X).numpy(), row, rtol=1e-5)  # table has 6 digits
    np.testing.assert_allclose(estimator.derivative(X).numpy(), ref.reste_phi(ref.X, o), rtol=1e-12)


def test_reste_jump_at_m_is_kept() -> None:
    estimator = create("reste")
    estimator.o.fill_(3.0)
    inside, outside = estimator.derivative(torch.tensor([0.1, 0.1000001], dtype=torch.float64)).tolist()
    assert inside == pytest.approx(4.64159, rel=1e-6) and outside == pytest.approx(1.54720, rel=1e-5)


@pytest.mark.parametrize(
    ("t", "k", "row"),
    [
        (0.1, 10.0, [0.977833, 0.990066, 0.997504, 0.9999, 1, 0.9999, 0.997504, 0.990066, 0.977833]),
        (1.0, 1.0, [0.180707, 0.419974, 0.786448, 0.990066, 1, 0.990066, 0.786448, 0.419974, 0.180707]),
        (10.0, 1.0, [3.74367e-12, 8.24461e-08, 0.00181583, 4.19974, 10, 4.19974, 0.00181583, 8.24461e-08, 3.74367e-12]),
    ],
)
def test_irnet_ede_table(t: float, k: float, row: list[float]) -> None:
    estimator = create("irnet")
    estimator.t.fill_(t)
    estimator.k.fill_(k)
    np.testing.assert_allclose(estimator.derivative(X).numpy(), row, rtol=1e-5)
    np.testing.assert_allclose(estimator.derivative(X).numpy(), ref.ede_phi(ref.X, t, k), rtol=1e-12)


@pytest.mark.parametrize("name", ["dste", "psa"])
def test_dste_table(name: str) -> None:
    row = [0.298293, 0.393224, 0.470007, 0.498752, 0.5, 0.498752, 0.470007, 0.393224, 0.298293]
    mean = [-0.635149, -0.462117, -0.244919, -0.0499584, 0, 0.0499584, 0.244919, 0.462117, 0.635149]
    estimator = create(name)
    np.testing.assert_allclose(estimator.derivative(X).numpy(), row, rtol=1e-5)
    np.testing.assert_allclose(estimator.surrogate(X).numpy(), mean, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(estimator.derivative(X).numpy(), ref.dste_phi(ref.X), rtol=1e-12)


def test_approxsign_table() -> None:
    np.testing.assert_allclose(phi("approxsign", X), [0, 0, 1, 1.8, 2, 1.8, 1, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(phi("approxsign", BORDERS), ref.approxsign_phi(BORDERS.numpy()), rtol=1e-12)
    np.testing.assert_allclose(
        create("approxsign").surrogate(BORDERS).numpy(), ref.approxsign_f(BORDERS.numpy()), rtol=1e-12
    )


@pytest.mark.parametrize("progress", PROGRESS)
def test_scheduled_estimators_match_numpy_at_progress(progress: float) -> None:
    xs = torch.cat([X, BORDERS])
    o = ref.reste_o(progress)
    np.testing.assert_allclose(phi("reste", xs, progress), ref.reste_phi(xs.numpy(), o), rtol=1e-12)
    reste = create("reste")
    reste.set_progress(progress)
    np.testing.assert_allclose(reste.surrogate(xs).numpy(), ref.reste_f(xs.numpy(), o), rtol=1e-12)
    t, k = ref.irnet_tk(progress)
    np.testing.assert_allclose(phi("irnet", xs, progress), ref.ede_phi(xs.numpy(), t, k), rtol=1e-9, atol=1e-14)


def test_reste_schedule_points() -> None:
    estimator = create("reste")
    values = []
    for epoch in (0, 250, 500, 750, 999):
        estimator.set_progress(epoch / 1000)
        values.append(float(estimator.o))
    np.testing.assert_allclose(values, [1.0, 1.152241, 1.585786, 2.234633, 2.996858], rtol=1e-6)
    estimator.set_progress(1.0)
    assert float(estimator.o) == 3.0


@pytest.mark.parametrize(
    ("t_min", "expected"),
    [
        (0.1, [(0.1, 10), (0.316228, 3.162278), (1, 1), (3.162278, 1), (9.885531, 1)]),
        (1e-3, [(0.001, 1000), (0.01, 100), (0.1, 10), (1, 1), (9.772372, 1)]),
    ],
)
def test_irnet_schedule_points(t_min: float, expected: list[tuple[float, float]]) -> None:
    estimator = create("irnet", t_min=t_min)
    got = []
    for epoch in (0, 100, 200, 300, 399):
        estimator.set_progress(epoch / 400)
        got.append((float(estimator.t), float(estimator.k)))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_irnet_module_defaults_before_any_schedule() -> None:
    estimator = create("irnet")
    assert (float(estimator.k), float(estimator.t)) == (10.0, pytest.approx(0.1))


def test_adaste_schedule_points() -> None:
    estimator = create("adaste")
    got = {}
    for epoch in (0, 100, 187, 188, 699):
        estimator.set_progress(epoch / 700)
        got[epoch] = float(estimator.beta)
    assert got[0] == pytest.approx(0.0105, rel=1e-12)
    assert got[100] == pytest.approx(0.01 * 1.05**101, rel=1e-12)
    assert got[187] < 100.0 and got[188] == 100.0 and got[699] == 100.0
    for p in PROGRESS:
        estimator.set_progress(p)
        assert float(estimator.beta) == pytest.approx(ref.adaste_beta(p), rel=1e-12)


@pytest.mark.parametrize("name", ["ste", "clipped_ste", "reste", "irnet", "dste", "psa", "approxsign"])
@pytest.mark.parametrize("progress", PROGRESS)
def test_derivative_is_the_surrogates_slope(name: str, progress: float) -> None:
    """φ = f′ away from kinks: central differences of the surrogate against the derivative."""
    estimator = create(name)
    estimator.set_progress(progress)
    xs = torch.linspace(-2.0, 2.0, 401, dtype=torch.float64)
    kinks = torch.tensor([-1.5, -1.0, -0.1, 0.0, 0.1, 1.0, 1.5], dtype=torch.float64)
    xs = xs[(xs[:, None] - kinks).abs().min(dim=1).values > 2e-3]
    h = 1e-6
    slope = (estimator.surrogate(xs + h) - estimator.surrogate(xs - h)) / (2 * h)
    np.testing.assert_allclose(slope.numpy(), estimator.derivative(xs).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", names())
def test_hparams_round_trip_through_create(name: str) -> None:
    estimator = create(name)
    rebuilt = create(name, **estimator.hparams())
    assert rebuilt.hparams() == estimator.hparams() == defaults(name)
    as_strings = create(name, **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in defaults(name).items()})
    assert as_strings.hparams() == defaults(name)


@pytest.mark.parametrize("name", ["reste", "irnet", "adaste"])
def test_schedule_state_lives_in_float64_buffers(name: str) -> None:
    model = nn.Sequential(create(name)).half()
    set_progress(model, 0.7)
    state = model.state_dict()
    assert state and all(v.dtype == torch.float64 and v.dim() == 0 for v in state.values())
    fresh = nn.Sequential(create(name))
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), state.values()))
    assert get(name).paper and get(name).summary
