"""The packed file as bytes: an ONNX model with binarize metadata and a checksum (SPEC §1–2).

The names and version the metadata carries, and `tensor_checksum`, the SHA-256 the writer
stores and the reader (`binarize.packed.validate.read_packed`) compares.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

FORMAT_KEY = "binarize.format"
FORMAT_NAME = "binarize.packed"
VERSION_KEY = "binarize.format_version"
FORMAT_VERSION = 1
CHECKSUM_KEY = "binarize.sha256"
CONFIG_KEY = "binarize.config"
SUFFIX = ".bnz"
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
