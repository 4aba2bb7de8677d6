"""The `.bnz` container: round trip, size formula, and every hostile input one by one."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from binarize.errors import FormatError, OutputExistsError
from binarize.export.freeze import freeze
from binarize.packed import load_packed, save_packed
from binarize.packed.format import read_bnz


def split(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def test_round_trip_matches_frozen_model(small_bnz: Path, small_net: torch.nn.Module) -> None:
    model = small_net
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        expected = freeze(model)(x)
    packed = load_packed(small_bnz)
    actual = packed(x)
    assert torch.allclose(actual, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(actual.argmax(1), expected.argmax(1))
    metadata, tensors = read_bnz(small_bnz)
    assert metadata["format"] == "binarize.bnz" and metadata["version"] == "1"
    assert [n["op"] for n in json.loads(metadata["graph"])["nodes"]].count("binary.conv") == 2
    assert tensors["conv1.bits"].dtype == np.uint64 and tensors["conv1.bits"].shape == (16, 2)  # K = 72


def test_refuses_to_overwrite(small_bnz: Path, small_net: torch.nn.Module) -> None:
    with pytest.raises(OutputExistsError):
        save_packed(small_net, small_bnz)


def test_file_size_follows_the_formula(small_bnz: Path, small_net: torch.nn.Module) -> None:
    """1 bit per binary weight (rows padded to 64) + float32 for the rest + header."""
    model = small_net
    binary = {"conv1": (16, 72), "conv2": (16, 144), "fc1": (12, 64)}
    bits_bytes = sum(o * math.ceil(k / 64) * 8 for o, k in binary.values())
    alpha_bytes = sum(o for o, _ in binary.values()) * 4
    binary_names = {f"{n}.weight" for n in binary}
    floats = sum(p.numel() for n, p in model.state_dict().items()
                 if n not in binary_names and not n.endswith("num_batches_tracked") and "estimator" not in n)
    data = small_bnz.read_bytes()
    header_bytes = 8 + struct.unpack("<Q", data[:8])[0]
    formula = bits_bytes + alpha_bytes + 4 * floats + header_bytes
    assert abs(len(data) - formula) <= 0.01 * formula


def _edit_header(edit: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        header, body = split(data)
        edit(header)
        return join(header, body)
    return apply


def _edit_graph(edit: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def apply(header: dict) -> None:
        graph = json.loads(header["__metadata__"]["graph"])
        edit(graph)
        header["__metadata__"]["graph"] = json.dumps(graph)
    return _edit_header(apply)


def _set_meta(key: str, value: str) -> Callable[[bytes], bytes]:
    return _edit_header(lambda h: h["__metadata__"].__setitem__(key, value))


def _same_offsets(header: dict) -> None:
    header["conv1.alpha"]["data_offsets"] = header["conv2.alpha"]["data_offsets"]


def _drop_entry(header: dict) -> None:
    del header["conv1.alpha"]


def _retype_bits(header: dict) -> None:
    header["conv1.bits"]["dtype"] = "F32"
    header["conv1.bits"]["shape"] = [16, 4]


def _reshape_bits(header: dict) -> None:
    header["conv1.bits"]["shape"] = [2, 16]


def _remove_tensor(data: bytes) -> bytes:
    """Drops conv1.alpha and its bytes consistently: only the graph notices."""
    header, body = split(data)
    begin, end = header.pop("conv1.alpha")["data_offsets"]
    for name, entry in header.items():
        if name != "__metadata__" and entry["data_offsets"][0] >= end:
            entry["data_offsets"] = [o - (end - begin) for o in entry["data_offsets"]]
    return join(header, body[:begin] + body[end:])


def _set_pad_bit(data: bytes) -> bytes:
    header, body = split(data)
    begin, end = header["conv1.bits"]["data_offsets"]
    words = np.frombuffer(body[begin:end], dtype="<u8").copy()
    words[1] |= np.uint64(1 << 40)  # row 0, word 1 holds bits 64..71: bit 40 is padding
    return join(header, body[:begin] + words.tobytes() + body[end:])


def _unknown_op(graph: dict) -> None:
    graph["nodes"][3]["op"] = "function.os.system"


HOSTILE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda d: b"", "truncated"),
    "truncated-length": (lambda d: d[:5], "truncated"),
    "truncated-data": (lambda d: d[:-7], "truncated"),
    "truncated-header": (lambda d: d[:40], "past the end"),
    "header-length-past-file": (lambda d: struct.pack("<Q", len(d)) + d[8:], "past the end"),
    "header-length-huge": (lambda d: struct.pack("<Q", 2**63) + d[8:], "past the end"),
    "header-not-json": (lambda d: d[:8] + b"{not json" + d[17:], "not valid JSON"),
    "header-not-utf8": (lambda d: d[:8] + b"\xff\xfe" + d[10:], "UTF-8"),
    "header-array": (lambda d: join([], b""), "not a JSON object"),  # type: ignore[arg-type]
    "duplicate-keys": (lambda d: d[:8] + b'{"a":1,"a":2}' + b" " * (struct.unpack("<Q", d[:8])[0] - 13)
                       + d[8 + struct.unpack("<Q", d[:8])[0]:], "not valid JSON"),
    "hole": (_edit_header(_drop_entry), "hole"),
    "overlap": (_edit_header(_same_offsets), "overlaps"),
    "trailing-bytes": (lambda d: d + b"\0" * 8, "cover"),
    "unsupported-dtype": (_edit_header(lambda h: h["conv1.alpha"].__setitem__("dtype", "F16")), "dtype"),
    "wrong-dtype": (_edit_header(_retype_bits), "expected U64"),
    "wrong-shape": (_edit_header(_reshape_bits), "expected U64[16, 2]"),
    "offsets-mismatch-shape": (_edit_header(lambda h: h["conv1.alpha"].__setitem__("shape", [15])), "need"),
    "missing-tensor": (_remove_tensor, "missing tensor"),
    "nonzero-pad-bits": (_set_pad_bit, "pad bits"),
    "unknown-op": (_edit_graph(_unknown_op), "unknown op"),
    "dangling-reference": (_edit_graph(lambda g: g["nodes"][0]["args"].__setitem__(0, {"ref": "nowhere"})),
                           "before it is defined"),
    "graph-not-json": (_set_meta("graph", "[1, 2"), "not valid JSON"),
    "future-version": (_set_meta("version", "2"), "newer"),
    "unknown-version": (_set_meta("version", "one"), "unknown format version"),
    "not-bnz": (_set_meta("format", "safetensors"), "not a .bnz"),
    "bit-order": (_set_meta("bit_order", "msb-first"), "bit order"),
    "no-metadata": (_edit_header(lambda h: h.pop("__metadata__")), "__metadata__"),
    "bad-padding": (_edit_graph(lambda g: next(n for n in g["nodes"] if n["op"] == "binary.conv")["params"]
                                .__setitem__("padding", [9, 9])), "padding"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_is_one_format_error(case: str, small_bnz: Path, tmp_path: Path) -> None:
    mutate, message = HOSTILE[case]
    path = tmp_path / f"{case}.bnz"
    path.write_bytes(mutate(small_bnz.read_bytes()))
    with pytest.raises(FormatError) as info:
        load_packed(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_reader_never_unpickles(small_bnz: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the reader unpickled something")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_packed(small_bnz)(torch.randn(1, 3, 8, 8))
