"""The packed file as bytes: an ONNX model with binarize metadata and a checksum (SPEC §1–2).

`read_packed` parses a file and hands it to `binarize.packed.validate` before anything else
sees it; `tensor_checksum` is the SHA-256 the writer stores and the reader compares.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

from binarize.errors import FormatError

FORMAT_KEY = "binarize.format"
FORMAT_NAME = "binarize.packed"
VERSION_KEY = "binarize.format_version"
FORMAT_VERSION = 1
CHECKSUM_KEY = "binarize.sha256"
CONFIG_KEY = "binarize.config"
SUFFIX = ".bnz"
#: protobuf's own message limit; a larger file cannot be an ONNX model anyway
MAX_FILE_BYTES = (1 << 31) - 1
FIX = "re-export the model with `binarize export MODEL --packed OUT.bnz`"


def tensor_checksum(graph: Any) -> str:
    """SHA-256 over every initializer in file order: name, data type, dims and raw bytes, each
    length-prefixed (little-endian) so that no two different tensor lists hash alike."""
    digest = hashlib.sha256()
    for tensor in graph.initializer:
        name = tensor.name.encode()
        digest.update(struct.pack("<Q", len(name)) + name)
        digest.update(struct.pack("<iQ", tensor.data_type, len(tensor.dims)))
        digest.update(struct.pack(f"<{len(tensor.dims)}q", *tensor.dims))
        digest.update(struct.pack("<Q", len(tensor.raw_data)) + tensor.raw_data)
    return digest.hexdigest()


def parse_packed(data: bytes) -> Any:
    """Bytes → a validated `onnx.ModelProto` (one `FormatError` for any defect)."""
    import onnx
    from google.protobuf.message import DecodeError

    from binarize.packed.validate import validate

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as err:
        raise FormatError(f"not an ONNX model ({type(err).__name__})", FIX) from None
    validate(model)
    return model


def read_packed(path: str | Path) -> Any:
    """Reads and validates a packed file; returns its `onnx.ModelProto`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FormatError(f"{path} has {size} bytes, more than an ONNX model can", FIX)
        data = path.read_bytes()
    except OSError as err:
        raise FormatError(f"cannot read {path} ({err.strerror})", "check the path") from None
    return parse_packed(data)
