"""Mutated `.bnz` files (bit flips, truncations, header edits; fixed seed): each one either loads
and runs, or fails with one `FormatError`. Nothing else (crash, hang, other exception) is allowed."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from binarize.errors import FormatError
from binarize.packed import PackedModel, load_packed

CASES = 1200


def _flip_bits(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        position = rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def _flip_data_bits(data: bytes, rng: random.Random) -> bytes:
    """Flips inside the tensor bytes: weights change (a valid load) or pad bits get set."""
    start = 8 + struct.unpack("<Q", data[:8])[0]
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(start, len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def _mutate_json(value: Any, rng: random.Random) -> Any:
    """One random structural edit somewhere inside ``value`` (returns the new value)."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        if rng.random() < 0.15:
            value.pop(key)
        else:
            value[key] = _mutate_json(value[key], rng)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        index = rng.randrange(len(value))
        if rng.random() < 0.15:
            value.pop(index)
        else:
            value[index] = _mutate_json(value[index], rng)
        return value
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice([value + 1, value - 1, -value, 0, 2**31, 10**6, value * 64])
    if isinstance(value, str):
        return rng.choice(["", value + "x", "U64", "F32", "module.Conv2d", "binary.linear", value[:-1]])
    return rng.choice([None, 0, "x", [], {}, 1.5])


def _edit_header(data: bytes, rng: random.Random) -> bytes:
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    metadata = header["__metadata__"]
    if rng.random() < 0.5:  # edit inside the graph (a JSON string inside the JSON header)
        metadata["graph"] = json.dumps(_mutate_json(json.loads(metadata["graph"]), rng))
    else:
        header = _mutate_json(header, rng)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + length :]


def _edit_header_text(data: bytes, rng: random.Random) -> bytes:
    length = struct.unpack("<Q", data[:8])[0]
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[8 + rng.randrange(length)] = rng.choice(b'{}[]",:0123456789 aeZ\\')
    return bytes(out)


MUTATIONS = [_flip_bits, _flip_data_bits, _truncate, _edit_header, _edit_header_text]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny ops on a shared machine: one thread avoids thread-pool contention dominating."""
    threads = torch.get_num_threads()
    PackedModel.set_num_threads(1)
    yield
    PackedModel.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_fuzzed_files_load_cleanly_or_fail_with_one_format_error(small_bnz: Path, tmp_path: Path) -> None:
    rng = random.Random(20261121)
    original = small_bnz.read_bytes()
    x = torch.randn(2, 3, 8, 8)
    outcomes = {"loaded": 0, "refused": 0}
    path = tmp_path / "fuzzed.bnz"
    for case in range(CASES):
        mutate = MUTATIONS[case % len(MUTATIONS)]
        path.write_bytes(mutate(original, rng))
        try:
            model = load_packed(path)
            model(x)  # a loaded file must also run, or fail with a FormatError
            outcomes["loaded"] += 1
        except FormatError as err:
            assert "\n" not in str(err), f"case {case} ({mutate.__name__})"
            outcomes["refused"] += 1
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {case} ({mutate.__name__}) raised {type(err).__name__}: {err}")
    assert sum(outcomes.values()) == CASES
    assert outcomes["loaded"] > 150 and outcomes["refused"] > 500, outcomes
