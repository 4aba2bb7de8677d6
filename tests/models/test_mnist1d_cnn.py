"""The 1-D CNN end to end: binary Conv1d through convert, fine-tune, ONNX and the packed runtime."""

from __future__ import annotations

import io

import numpy as np
import torch
from torch.utils.data import TensorDataset

from binarize import BinarizeConfig, LayerConfig, convert
from binarize.export.onnx import export_onnx, inference_session, run_session
from binarize.models import create
from binarize.nn import BinaryConv1d
from binarize.nn.frozen import freeze
from binarize.packed import load_packed, save_packed
from binarize.sources import build_architecture
from binarize.train import FinetuneConfig, finetune


def test_zoo_model_matches_the_baseline_cnn_geometry():
    model = build_architecture("binarize:mnist1d_cnn")
    assert model(torch.randn(3, 1, 40)).shape == (3, 10)
    assert [m.kernel_size[0] for m in (model.conv1, model.conv2, model.conv3)] == [5, 3, 3]
    assert model.fc.in_features == 64 * 5  # 40 → 19 → 10 → 5 positions


def test_mnist1d_cnn_converts_finetunes_and_exports_with_parity(tmp_path):
    float_model = create("mnist1d_cnn", width=8)
    binary = convert(float_model, BinarizeConfig(layer=LayerConfig("reste", input_estimator="reste")))
    binary_layers = {name for name, m in binary.named_modules() if isinstance(m, BinaryConv1d)}
    assert binary_layers == {"conv2", "conv3"}  # first conv and classifier stay float
    generator = torch.Generator().manual_seed(0)
    signals = torch.randn(64, 1, 40, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    before = binary.conv2.weight.detach().clone()
    finetune(binary, TensorDataset(signals, labels), config=FinetuneConfig(epochs=1, batch_size=16, device="cpu", log_every=10**6),
             stream=io.StringIO())
    assert not torch.equal(before, binary.conv2.weight)  # the binary Conv1d's latent weights trained
    binary.eval()
    x = torch.randn(7, 1, 40, generator=generator)
    with torch.no_grad():
        expected = binary(x)
        assert torch.allclose(freeze(binary)(x), expected, atol=1e-5)

    onnx = export_onnx(binary, tmp_path / "mnist1d.onnx", (x[:2],))
    assert onnx.passed
    actual = run_session(inference_session(onnx.path, threads=1), (x,))
    np.testing.assert_allclose(actual, expected.numpy(), atol=1e-4, rtol=0)

    save_packed(binary, tmp_path / "mnist1d.bnz", (x[:2],))
    packed = load_packed(tmp_path / "mnist1d.bnz")
    packed_out = torch.as_tensor(np.asarray(packed(x)))
    assert torch.allclose(packed_out, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert packed_out.argmax(1).tolist() == expected.argmax(1).tolist()
