"""Reading and writing the `.bnz` container: a safetensors file with our metadata.

The reader checks the whole header itself (length, JSON, dtypes, shapes, offsets that tile the
data buffer exactly) before any tensor bytes are handed to `safetensors`, and never unpickles.
Every defect becomes one `FormatError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from binarize._files import atomic_path
from binarize.errors import FormatError, OutputExistsError

FORMAT_NAME = "binarize.bnz"
FORMAT_VERSION = 1
BIT_ORDER = "unfold-rows/uint64-le/bit k%64 of word k//64/set=-1/pad=0"
METADATA_KEYS = frozenset({"format", "version", "bit_order", "graph", "config", "producer"})

#: safetensors dtype name → NumPy dtype (the only ones a .bnz file may hold)
DTYPES: dict[str, np.dtype] = {
    "U64": np.dtype("<u8"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "BOOL": np.dtype("bool"),
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
MAX_DIMS = 8

_FIX = "re-export the model with `binarize export MODEL --packed OUT.bnz`"


def _bad(what: str, fix: str = _FIX) -> FormatError:
    return FormatError(what, fix)


def write_bnz(path: str | Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str], *,
              force: bool = False) -> Path:
    """Writes ``tensors`` and ``metadata`` as a `.bnz` (safetensors) file; atomic on success."""
    from safetensors.numpy import save  # only the writer needs it eagerly

    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists", "pass --force (force=True) to overwrite it")
    payload = save({name: np.ascontiguousarray(t) for name, t in tensors.items()}, metadata=dict(metadata))
    with atomic_path(path) as temporary:
        temporary.write_bytes(payload)
    return path


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def parse_json(text: str | bytes, what: str) -> Any:
    """Strict JSON (no duplicate keys, no NaN/Infinity literals) or a `FormatError`."""
    def no_constants(name: str) -> Any:
        raise ValueError(f"non-standard constant {name}")

    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=no_constants)
    except (ValueError, RecursionError, UnicodeDecodeError) as err:
        raise _bad(f"{what} is not valid JSON ({str(err)[:80]})") from None


def read_bnz(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Validated ``(metadata, tensors)`` of a `.bnz` file (see SPEC.md for every rule)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FormatError(f"cannot read {path}: {err.strerror}", "check the path") from None
    header, data_start = _check_header(data)
    metadata = _check_metadata(header.pop("__metadata__", None))
    specs = _check_tensor_entries(header, len(data) - data_start)
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except Exception as err:  # safetensors' own checks; ours are stricter, so this is a backstop
        raise _bad(f"safetensors refused the file ({str(err)[:80]})") from None
    if set(tensors) != set(specs):
        raise _bad("safetensors read a different set of tensors than the header lists")
    return metadata, tensors


def _check_header(data: bytes) -> tuple[dict[str, Any], int]:
    if len(data) < 8:
        raise _bad(f"file is truncated ({len(data)} bytes, no header length)")
    length = int.from_bytes(data[:8], "little")
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise _bad(f"header length {length} runs past the end of the {len(data)}-byte file (truncated?)")
    try:
        text = data[8 : 8 + length].decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("header is not UTF-8 JSON") from None
    if not text.startswith("{"):
        raise _bad("header is not a JSON object")
    header = parse_json(text, "header")
    if not isinstance(header, dict):
        raise _bad("header is not a JSON object")
    return header, 8 + length


def _check_metadata(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _bad("missing or malformed __metadata__ (a .bnz file needs format, version and graph)")
    if metadata.get("format") != FORMAT_NAME:
        raise _bad(f"not a .bnz file (format {str(metadata.get('format'))[:40]!r})")
    version = metadata.get("version", "")
    if not version.isdigit() or int(version) < 1:
        raise _bad(f"unknown format version {version[:20]!r}")
    if int(version) > FORMAT_VERSION:
        raise FormatError(
            f"format version {int(version)} is newer than this reader's {FORMAT_VERSION}",
            "upgrade binarize to read this file",
        )
    if set(metadata) != METADATA_KEYS:
        raise _bad(f"metadata keys {sorted(metadata)} differ from {sorted(METADATA_KEYS)}")
    if metadata["bit_order"] != BIT_ORDER:
        raise _bad(f"unknown bit order {metadata['bit_order'][:60]!r}")
    return metadata


def _check_tensor_entries(header: Mapping[str, Any], data_length: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    specs: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _bad(f"tensor entry {name[:60]!r} must have exactly dtype, shape, data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise _bad(f"tensor {name[:60]!r} has unsupported dtype {str(dtype)[:20]!r}")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
            type(d) is int and 0 <= d < 2**40 for d in shape
        ):
            raise _bad(f"tensor {name[:60]!r} has an invalid shape")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(
            type(o) is int and 0 <= o <= data_length for o in offsets
        ):
            raise _bad(f"tensor {name[:60]!r} has offsets outside the {data_length}-byte data buffer (truncated file?)")
        begin, end = offsets
        if end - begin != math.prod(shape) * DTYPES[dtype].itemsize:
            raise _bad(f"tensor {name[:60]!r}: offsets span {end - begin} bytes, shape and dtype need "
                       f"{math.prod(shape) * DTYPES[dtype].itemsize}")
        spans.append((begin, end, name))
        specs[name] = (dtype, tuple(shape))
    spans.sort()
    for (_, previous_end, _), (begin, _, name) in zip(spans, spans[1:]):
        if begin < previous_end:
            raise _bad(f"tensor {name[:60]!r} at byte {begin} overlaps the previous tensor")
    position = 0
    for begin, end, name in spans:
        if begin != position:
            raise _bad(f"tensor {name[:60]!r} at byte {begin} leaves a hole before it")
        position = end
    if position != data_length:
        raise _bad(f"tensors cover {position} of the {data_length} data bytes (truncated or padded file)")
    return specs


def tensor_specs(tensors: Mapping[str, np.ndarray]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``name → (safetensors dtype, shape)`` of loaded tensors."""
    names = {dtype: name for name, dtype in DTYPES.items()}
    return {name: (names[t.dtype], tuple(t.shape)) for name, t in tensors.items()}
