"""Native binary kernels: exact integer accumulators against PyTorch on every dispatch path,
the fused epilogue against a NumPy formula, and an import that needs neither torch nor numba."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from binarize.packed import kernels
from binarize.packed.bits import pack_signs


@pytest.fixture(params=kernels.PATHS)
def path(request: pytest.FixtureRequest):
    """Runs a test once per dispatch path this build and CPU can run (portable included)."""
    kernels.force_path(request.param)
    yield request.param
    kernels.force_path(None)


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1.0, -1.0)


def _input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Gaussian input with some exact zeros (sign(0) = +1) and negative zeros (also +1)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    flat = x.view(-1)
    flat[::7] = 0.0
    flat[3::11] = -0.0
    return x


def _conv_layer(channels: int, out: int, kernel: tuple[int, int], groups: int, seed: int, **kwargs):
    signs = _sign(torch.randn(out, channels // groups, *kernel, generator=torch.Generator().manual_seed(seed)))
    layer = kernels.BinaryConv(pack_signs(signs.reshape(out, -1).numpy()), in_channels=channels, kernel=kernel,
                               groups=groups, **kwargs)
    return layer, signs


CONV_CASES = [
    # channels, out, (H, W), kernel, stride, (top, left, bottom, right), dilation, groups
    (64, 16, (9, 10), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),  # K = 576: whole words
    (3, 5, (7, 8), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),  # K = 27 < 64, stride 2
    (130, 20, (6, 7), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),  # three words per tap, dilation
    (16, 8, (8, 9), (3, 3), (2, 1), (1, 1, 1, 1), (1, 1), 4),  # groups, unequal strides
    (8, 8, (7, 7), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),  # depthwise
    (12, 6, (5, 5), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),  # 1x1 strided shortcut
    (10, 7, (9, 11), (5, 5), (3, 3), (2, 2, 2, 2), (1, 1), 1),  # 5x5, odd sizes
    (24, 40, (6, 13), (2, 3), (1, 2), (0, 2, 1, 0), (1, 1), 1),  # asymmetric padding
    (20, 9, (1, 17), (1, 5), (1, 1), (0, 2, 0, 2), (1, 2), 1),  # conv1d as 1xk
    (256, 33, (4, 5), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),  # K = 2304
    (16, 16, (10, 12), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),  # row windows: a kernel row in one word
    (32, 24, (9, 8), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),  # row windows of two words, stride 2
    (16, 8, (9, 11), (3, 3), (2, 2), (2, 2, 2, 2), (2, 2), 2),  # one-word row windows: groups, stride, dilation
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c[:2] + c[3:4] + c[-1:])))
def test_conv_accumulators_equal_pytorch(case: tuple, path: str) -> None:
    channels, out, size, kernel, stride, padding, dilation, groups = case
    layer, signs = _conv_layer(channels, out, kernel, groups, seed=1, stride=stride, padding=padding,
                               dilation=dilation, scale=np.ones(out, np.float32))
    x = _input((2, channels, *size), seed=2)
    top, left, bottom, right = padding
    expected = F.conv2d(F.pad(_sign(x), [left, right, top, bottom]).double(), signs.double(), None, stride, 0,
                        dilation, groups)
    actual = layer.accumulate(x.numpy())
    assert actual.dtype == np.int32
    assert np.array_equal(actual, expected.numpy().astype(np.int32))


@pytest.mark.parametrize("features", [(70, 9), (64, 130), (600, 33), (5, 17)])
def test_linear_accumulators_equal_pytorch(features: tuple[int, int], path: str) -> None:
    k, out = features
    x = _input((3, k), seed=3)
    signs = _sign(torch.randn(out, k, generator=torch.Generator().manual_seed(4)))
    layer = kernels.BinaryLinear(pack_signs(signs.numpy()), in_features=k, scale=np.ones(out, np.float32))
    actual = layer.accumulate(x.numpy())
    assert actual.dtype == np.int32 and actual.shape == (3, out)
    assert np.array_equal(actual, (_sign(x).double() @ signs.double().T).numpy().astype(np.int32))


def _reference_epilogue(dot, scale, shift, residual, activation, slope):
    y = dot.astype(np.float32) * scale + shift + residual
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "hardtanh":
        return np.clip(y, -1, 1)
    if activation == "prelu":
        return np.where(y >= 0, y, y * slope)
    return y


@pytest.mark.parametrize("activation", ["none", "relu", "hardtanh", "prelu"])
def test_conv_epilogue_matches_numpy(activation: str, path: str) -> None:
    rng = np.random.default_rng(5)
    out = 19
    scale, shift, slope = (rng.standard_normal(out).astype(np.float32) * 0.05 for _ in range(3))
    layer, _ = _conv_layer(40, out, (3, 3), 1, seed=6, padding=(1, 0, 1, 2), scale=scale, shift=shift,
                           activation=activation, slope=slope)
    x = _input((2, 40, 7, 9), seed=7).numpy()
    dot = layer.accumulate(x)
    residual = rng.standard_normal(dot.shape).astype(np.float32)
    c = (1, out, 1, 1)
    expected = _reference_epilogue(dot, scale.reshape(c), shift.reshape(c), residual, activation, slope.reshape(c))
    np.testing.assert_allclose(layer(x, residual), expected, rtol=1e-6, atol=1e-6)
    no_residual = _reference_epilogue(dot, scale.reshape(c), shift.reshape(c), 0, activation, slope.reshape(c))
    np.testing.assert_allclose(layer(x), no_residual, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("activation", ["none", "prelu"])
def test_linear_epilogue_matches_numpy(activation: str, path: str) -> None:
    rng = np.random.default_rng(8)
    k, out = 200, 21
    scale, shift, slope = (rng.standard_normal(out).astype(np.float32) for _ in range(3))
    layer = kernels.BinaryLinear(pack_signs(np.where(rng.random((out, k)) < 0.5, -1, 1)), in_features=k,
                                 scale=scale, shift=shift, activation=activation, slope=slope)
    x = _input((4, k), seed=9).numpy()
    residual = rng.standard_normal((4, out)).astype(np.float32)
    expected = _reference_epilogue(layer.accumulate(x), scale, shift, residual, activation, slope)
    np.testing.assert_allclose(layer(x, residual), expected, rtol=1e-6, atol=1e-5)


def test_paths_threads_and_bad_arguments() -> None:
    assert kernels.active_path() == kernels.PATHS[0]
    with pytest.raises(ValueError, match="unknown kernel path"):
        kernels.force_path("nonexistent")
    before = kernels.get_num_threads()
    kernels.set_num_threads(2)
    assert kernels.get_num_threads() == 2
    kernels.set_num_threads(before)
    with pytest.raises(ValueError, match="activation"):
        kernels.BinaryLinear(np.zeros((2, 1), np.uint64), in_features=3, scale=np.ones(2, np.float32),
                             activation="gelu")
    with pytest.raises(ValueError, match="bits has shape"):
        kernels.BinaryLinear(np.zeros((2, 2), np.uint64), in_features=3, scale=np.ones(2, np.float32))


def test_results_do_not_depend_on_thread_count() -> None:
    layer, _ = _conv_layer(64, 48, (3, 3), 1, seed=10, padding=(1, 1, 1, 1), scale=np.ones(48, np.float32))
    x = _input((1, 64, 15, 15), seed=11).numpy()
    before = kernels.get_num_threads()
    try:
        kernels.set_num_threads(1)
        one = layer.accumulate(x)
        kernels.set_num_threads(3)
        assert np.array_equal(layer.accumulate(x), one)
    finally:
        kernels.set_num_threads(before)


def test_concurrent_calls_from_python_threads_agree() -> None:
    """The GIL is released during compute: calls from several Python threads share the pool."""
    layer, _ = _conv_layer(96, 40, (3, 3), 1, seed=12, padding=(1, 1, 1, 1), scale=np.ones(40, np.float32))
    inputs = [_input((1, 96, 12, 11), seed=20 + i).numpy() for i in range(4)]
    expected = [layer.accumulate(x) for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(layer.accumulate, inputs * 5))
    assert all(np.array_equal(r, expected[i % 4]) for i, r in enumerate(results))


def test_weights_stay_packed_and_input_layout_is_free() -> None:
    out, channels = 64, 256
    layer, signs = _conv_layer(channels, out, (3, 3), 1, seed=13, padding=(1, 1, 1, 1),
                               scale=np.ones(out, np.float32))
    packed_bytes = out * channels * 9 // 8
    assert packed_bytes <= layer.nbytes < 1.25 * packed_bytes  # no float (or byte) copy of the weights
    x = _input((1, 6, 7, channels), seed=14).permute(0, 3, 1, 2)  # channels-last strides
    expected = F.conv2d(_sign(x).double(), signs.double(), None, 1, 1)
    assert np.array_equal(layer.accumulate(x.numpy()), expected.numpy().astype(np.int32))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_runs_layers() -> None:
    """A forked child (e.g. a data-loader worker) has none of the parent's pool threads: its calls
    must still finish, with the same numbers."""
    layer, _ = _conv_layer(64, 48, (3, 3), 1, seed=15, padding=(1, 1, 1, 1), scale=np.ones(48, np.float32))
    x = _input((1, 64, 15, 15), seed=16).numpy()
    kernels.set_num_threads(2)
    expected = layer.accumulate(x)  # the pool threads exist now
    pid = os.fork()
    if pid == 0:  # child: exit status says whether the call finished with the right numbers
        os._exit(0 if np.array_equal(layer.accumulate(x), expected) else 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("a kernel call in a forked child did not finish")


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'numba'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
# the kernels' own imports only: the package __init__ (the runtime) is tested by its own suite
import types, binarize
package = types.ModuleType('binarize.packed')
package.__path__ = [binarize.__path__[0] + '/packed']
sys.modules['binarize.packed'] = package
import numpy as np
from binarize.packed import kernels
layer = kernels.BinaryConv(np.zeros((3, 1), np.uint64), in_channels=2, kernel=(3, 3), padding=(1, 1, 1, 1),
                           scale=np.ones(3, np.float32))
print(int(layer.accumulate(np.ones((1, 2, 4, 4), np.float32))[0, 0, 1, 1]), kernels.active_path(),
      'torch' in sys.modules, 'numba' in sys.modules)
"""


def test_kernels_import_and_run_without_torch_or_numba(tmp_path) -> None:
    # cwd outside the checkout, whose source tree (first on sys.path for `python -c`) has no compiled kernels
    result = subprocess.run([sys.executable, "-c", BLOCKER], check=False, capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    value, active, torch_loaded, numba_loaded = result.stdout.split()
    assert (value, active, torch_loaded, numba_loaded) == ("18", kernels.PATHS[0], "False", "False")
