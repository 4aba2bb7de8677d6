"""evaluate_file: accuracy, agreement, size and latency keys on a model with known answers."""

import pytest
import torch
from torch.nn import functional as F

from binarize.analysis.deployed import DeployedModel, evaluate_file, load_deployed, random_batches
from binarize.errors import ConfigError, ModelSourceError


class ReadsClassFromInput(DeployedModel):
    """Predicts class x[:, 0] (as one-hot logits, clamped to 0..3), so the inputs set accuracy."""

    kind = "test"

    def __init__(self, path):
        super().__init__(path)
        self.thread_calls = []

    def __call__(self, x):
        return F.one_hot(x[:, 0].long().clamp(0, 3), 4).float()

    def set_threads(self, threads):
        self.thread_calls.append(threads)


def test_accuracy_agreement_and_latency(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x" * 1234)
    inputs = torch.zeros(10, 2)
    inputs[:, 0] = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    labels = inputs[:, 0].long().clone()
    labels[6:] = (labels[6:] + 1) % 4  # 4 of 10 predictions wrong
    reference_classes = inputs[:, 0].long().clone()
    reference_classes[:3] = (reference_classes[:3] + 2) % 4  # disagrees on 3 of 10

    batches = [(inputs[:5], labels[:5]), (inputs[5:], labels[5:])]
    model = ReadsClassFromInput(path)
    # The reference answers batch by batch, in order.
    batch_refs = iter([reference_classes[:5], reference_classes[5:]])
    result = evaluate_file(
        model, batches, (2,),
        reference=lambda x: F.one_hot(next(batch_refs), 4).float() * 2.0,
        batch_size=4, repeats=2, threads=[1, 3],
    )
    assert result.examples == 10 and result.accuracy == pytest.approx(60.0)
    assert result.agreement == pytest.approx(0.7)
    assert result.max_abs_diff == pytest.approx(2.0)  # 2·one-hot vs one-hot where classes agree
    assert result.size_bytes == 1234 and result.kind == "test"
    assert set(result.latency_ms) == {"batch1_threads1", "batch1_threads3", "batch4_threads1", "batch4_threads3"}
    assert {1, 3} <= set(model.thread_calls)
    assert result.layer_ms is None


def test_unlabelled_random_inputs_and_empty_data(tmp_path):
    path = tmp_path / "m"
    path.write_bytes(b"")
    batches = list(random_batches(7, (2,), batch_size=3))
    assert [len(x) for x, _ in batches] == [3, 3, 1] and all(y is None for _, y in batches)
    result = evaluate_file(ReadsClassFromInput(path), batches, (2,), repeats=1)
    assert result.accuracy is None and result.agreement is None and result.examples == 7
    with pytest.raises(ConfigError, match="no examples"):
        evaluate_file(ReadsClassFromInput(path), [], (2,), repeats=1)


def test_load_deployed_errors(tmp_path):
    with pytest.raises(ModelSourceError, match="not found"):
        load_deployed(tmp_path / "missing.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelSourceError, match="cannot read .* as ONNX"):
        load_deployed(tmp_path / "broken.onnx")
