"""Mutated packed files (bit flips anywhere, truncations, protobuf edits; fixed seed): each one
either loads and runs, or fails with one `FormatError`. Nothing else (crash, hang, other
exception) is allowed. Flips inside tensor data always fail: the checksum covers it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import pytest

from binarize.errors import FormatError
from binarize.packed import load_packed
from binarize.packed.format import CHECKSUM_KEY, tensor_checksum

CASES = 600


def _flip_bits(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _flip_data_bits(data: bytes, rng: random.Random) -> bytes:
    """Flips inside one initializer's raw bytes (the checksum must notice)."""
    model = onnx.ModelProto()
    model.ParseFromString(data)
    raw = rng.choice([t.raw_data for t in model.graph.initializer if len(t.raw_data) >= 8])
    start = data.index(raw)
    out = bytearray(data)
    out[start + rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def _edit_structure(data: bytes, rng: random.Random) -> bytes:
    """One random edit of a node or attribute, re-signed so that validation, not the checksum,
    must catch it."""
    model = onnx.ModelProto()
    model.ParseFromString(data)
    node = rng.choice(list(model.graph.node))
    choice = rng.randrange(5)
    if choice == 0 and node.attribute:
        attribute = rng.choice(list(node.attribute))
        if attribute.ints:
            attribute.ints[rng.randrange(len(attribute.ints))] = rng.choice([0, -1, 2, 7, 1 << 20, 1 << 40])
        elif attribute.type == onnx.AttributeProto.INT:
            attribute.i = rng.choice([0, -1, 3, 1 << 31])
        else:
            attribute.s = rng.choice([b"", b"gelu", b"relu", b"\xff"])
    elif choice == 1 and node.input:
        node.input[rng.randrange(len(node.input))] = rng.choice(["", "nowhere", node.output[0], "input"])
    elif choice == 2:
        node.op_type = rng.choice(["Conv", "BinaryLinear", "BinaryConv", "Unknown", "Loop"])
    elif choice == 3:
        node.domain = rng.choice(["", "binarize", "com.microsoft", "ai.onnx.ml"])
    else:
        tensor = rng.choice(list(model.graph.initializer))
        tensor.dims.append(rng.choice([0, 1, 2, 1 << 33]))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        CHECKSUM_KEY: tensor_checksum(model.graph)})
    return model.SerializeToString()


MUTATIONS = [_flip_bits, _flip_data_bits, _truncate, _edit_structure]


def test_fuzzed_files_load_cleanly_or_fail_with_one_format_error(small_bnz: Path, tmp_path: Path) -> None:
    rng = random.Random(20261130)
    original = small_bnz.read_bytes()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    outcomes = {"loaded": 0, "refused": 0}
    path = tmp_path / "fuzzed.bnz"
    for case in range(CASES):
        mutate = MUTATIONS[case % len(MUTATIONS)]
        path.write_bytes(mutate(original, rng))
        try:
            model = load_packed(path, threads=1)
            model(x)  # a loaded file must also run, or fail with a FormatError
            outcomes["loaded"] += 1
            assert mutate is not _flip_data_bits, f"case {case}: a flipped data bit went unnoticed"
        except FormatError as err:
            assert "\n" not in str(err), f"case {case} ({mutate.__name__})"
            outcomes["refused"] += 1
        except Exception as err:
            pytest.fail(f"case {case} ({mutate.__name__}) raised {type(err).__name__}: {err}")
    assert sum(outcomes.values()) == CASES
    assert outcomes["refused"] > 300, outcomes
