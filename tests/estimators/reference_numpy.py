"""An independent NumPy reference written from docs/estimators.md (never calls binarize).

Float64 throughout; sign(0) = +1 as binarize decides (the spec's "[code]" rows use torch.sign's 0
at x = 0: tests state that deviation where they compare).
"""

from __future__ import annotations

import numpy as np

X = np.array([-1.5, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 1.5])


def sign(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1.0, -1.0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --- schedules -----------------------------------------------------------------------------
def reste_o(p: float, o_end: float = 3.0) -> float:
    return 1.0 + (o_end - 1.0) * (1.0 - np.cos(np.pi * p / 2.0))


def irnet_tk(p: float, t_min: float = 0.1, t_max: float = 10.0) -> tuple[float, float]:
    t = 10.0 ** (np.log10(t_min) + (np.log10(t_max) - np.log10(t_min)) * p)
    return t, max(1.0 / t, 1.0)


def adaste_beta(p: float, beta0: float = 0.01, e_ref: float = 700.0, alpha: float = 0.01) -> float:
    return min(beta0 * 1.05 ** (p * e_ref + 1.0), 1.0 / alpha)


# --- per-tensor backward rules φ(x) and surrogates f(x) ------------------------------------
def reste_phi(x: np.ndarray, o: float, t: float = 1.5, m: float = 0.1) -> np.ndarray:
    out = np.zeros_like(x)
    for i, v in enumerate(np.abs(x)):
        if v <= m:
            out[i] = m ** (1.0 / o) / m
        elif v <= t:
            out[i] = (1.0 / o) * v ** ((1.0 - o) / o)
    return out


def reste_f(x: np.ndarray, o: float, t: float = 1.5, m: float = 0.1) -> np.ndarray:
    out = np.empty_like(x)
    for i, v in enumerate(x):
        if abs(v) <= m:
            out[i] = v * m ** (1.0 / o) / m
        else:
            out[i] = np.sign(v) * min(abs(v), t) ** (1.0 / o)
    return out


def ede_phi(x: np.ndarray, t: float, k: float) -> np.ndarray:
    return k * t * (1.0 - np.tanh(t * x) ** 2)


def dste_phi(x: np.ndarray, s: float = 1.0) -> np.ndarray:
    p = sigmoid(x / s)
    return 2.0 / s * p * (1.0 - p)


def approxsign_phi(x: np.ndarray) -> np.ndarray:
    return np.array([2 + 2 * v if -1 <= v < 0 else 2 - 2 * v if 0 <= v < 1 else 0.0 for v in x])


def approxsign_f(x: np.ndarray) -> np.ndarray:
    return np.array([2 * v + v * v if -1 <= v < 0 else 2 * v - v * v if 0 <= v < 1 else sign(np.array(v)) for v in x])


def clipped_ste_phi(x: np.ndarray) -> np.ndarray:
    return (np.abs(x) <= 1).astype(float)


def adaste_w(theta: np.ndarray, beta: float, alpha: float = 0.01) -> np.ndarray:
    return np.clip((theta + beta * (1 + alpha) * sign(theta)) / (1 + beta), -1, 1)


def adaste_grad(theta: float, g: float, beta: float, alpha: float = 0.01, official: bool = False) -> float:
    """dL/dθ for one entry, case by case as the spec lists them."""
    inward = np.sign(g) == np.sign(theta)
    a = abs(theta)
    if beta * alpha >= 1:
        if a > 1e-3 and abs(g) > 1e-3:
            return g * (min(max(1 / a, 0), 0.5) if inward else 0.0)
        return g * 1.0
    default = 1 / (1 + beta)
    if abs(g) <= 1e-3 or a <= 1e-6:
        return g * default
    if a > max(1e-6, 1 - beta * alpha):
        s = min(max((1 + 2 * beta + beta * alpha) / ((1 + beta) * a), 0), 0.5) if inward else 0.0
    elif a < 1 - beta * alpha:
        numerator = 2 * beta * (1 + alpha) + (-theta if official else a)
        s = min(max(numerator / ((1 + beta) * a), 0), 0.5) if inward else default
    else:
        s = default
    return g * s


# --- Libra-PB and indicators ---------------------------------------------------------------
def libra_pb(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Ŵ, s) per output channel (rows of the flattened weight)."""
    flat = w.reshape(w.shape[0], -1)
    standard = (flat - flat.mean(1, keepdims=True)) / flat.std(1, ddof=1, keepdims=True)
    scale = 2.0 ** np.round(np.log2(np.abs(standard).mean(1)))
    return standard.reshape(w.shape), scale


def estimating_error(weights: list[np.ndarray], f) -> float:
    return float(sum(np.linalg.norm((f(w) - sign(w)).ravel()) for w in weights))


def gradient_stability(grads: list[np.ndarray]) -> float:
    return float(sum(np.var(np.abs(g).ravel(), ddof=1) for g in grads))


# --- the PSA / DSTE test network (2 → 3 → 2 → 2) ---------------------------------------------
def log_softmax(a: np.ndarray) -> np.ndarray:
    shifted = a - a.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def dste_vector_grads(x0, W1, b1, W2, b2, W3, b3, u1, u2) -> dict[str, np.ndarray]:
    """Backprop of −log softmax(a3)_0 through sign samples with φ = 2σ'(a)."""
    a1 = W1 @ x0 + b1
    x1 = sign(sigmoid(a1) - u1)
    a2 = W2 @ x1 + b2
    x2 = sign(sigmoid(a2) - u2)
    a3 = W3 @ x2 + b3
    g3 = np.exp(log_softmax(a3)) - np.eye(len(a3))[0]
    g_x2 = W3.T @ g3
    g2 = g_x2 * dste_phi(a2)
    g_x1 = W2.T @ g2
    g1 = g_x1 * dste_phi(a1)
    return {"W1": np.outer(g1, x0), "b1": g1, "W2": np.outer(g2, x1), "b2": g2, "W3": np.outer(g3, x2), "b3": g3}


def psa_vector_grads(x0, W1, b1, W2, b2, W3, b3, u1, u2) -> dict[str, np.ndarray]:
    """PSA's gradient of −E[log softmax(a3)_0] for the sample the uniforms give.

    The q's are derivative-only, so each is kept as its Jacobian w.r.t. every parameter
    (a dict of arrays shaped [unit, *param.shape]) and the chain rule is applied by hand.
    """
    names = ["W1", "b1", "W2", "b2", "W3", "b3"]
    shapes = {n: v.shape for n, v in zip(names, [W1, b1, W2, b2, W3, b3])}

    def zeros(units: int) -> dict[str, np.ndarray]:
        return {n: np.zeros((units, *shapes[n])) for n in names}

    a1 = W1 @ x0 + b1
    p1 = sigmoid(a1)
    x1 = sign(p1 - u1)
    # q1 ≐ −x1·σ(a1): d/da1 = −x1·σ'(a1); a1 depends on W1, b1.
    dq1_da1 = -x1 * p1 * (1 - p1)
    dq1 = zeros(3)
    for j in range(3):
        dq1["W1"][j, j] = dq1_da1[j] * x0
        dq1["b1"][j, j] = dq1_da1[j]
    a2 = W2 @ x1 + b2
    p2 = sigmoid(a2)
    x2 = sign(p2 - u2)
    delta0 = -x2 * p2
    dq2 = zeros(2)
    for j in range(2):
        d_delta0 = -x2[j] * p2[j] * (1 - p2[j])
        dq2["W2"][j, j] = d_delta0 * x1
        dq2["b2"][j, j] = d_delta0
        for i in range(3):
            delta_ij = -x2[j] * sigmoid(a2[j] - 2 * W2[j, i] * x1[i])
            for n in names:
                dq2[n][j] += (delta_ij - delta0[j]) * dq1[n][i]
    # output: E = f(a)(1 − Σπ) + Σ_i f(a − 2 W[:, i] x_i) π_i, f = log softmax, loss = −E_0
    a3 = W3 @ x2 + b3
    state_p = np.where(x2 > 0, p2, 1 - p2)
    pi = (1 - state_p) / 2
    base = log_softmax(a3)
    flips = [log_softmax(a3 - 2 * W3[:, i] * x2[i]) for i in range(2)]
    grads = {n: np.zeros(shapes[n]) for n in names}
    # d(−E_0)/dq2_i = −(f_flip_i − f_base)_0
    for i in range(2):
        for n in names:
            grads[n] -= (flips[i][0] - base[0]) * dq2[n][i]
    # direct dependence on W3, b3 through f(a) and f(a_flip): d log_softmax_0 / da = e0 − softmax(a)
    weights = [1 - pi.sum()] + list(pi)
    args = [a3] + [a3 - 2 * W3[:, i] * x2[i] for i in range(2)]
    for k, (weight, arg) in enumerate(zip(weights, args)):
        d_a = -(np.eye(2)[0] - np.exp(log_softmax(arg))) * weight
        grads["b3"] += d_a
        x_used = x2.copy()
        if k > 0:
            x_used[k - 1] = -x_used[k - 1]
        grads["W3"] += np.outer(d_a, x_used)
    return grads
