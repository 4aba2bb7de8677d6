"""Checks that a file binarize wrote still holds what was written: a SHA-256 of its content and
finite float tensors.

The digest is computed over plain data in a canonical order (mapping keys sorted, each tensor
as dtype, shape and raw bytes), so it does not depend on how ``torch.save`` lays the file out
and any changed byte of a tensor, key or setting changes it. It guards against damage (a bad
disk, a truncated copy), not against an attacker, who can recompute it: what keeps a file from
running code is that binarize never unpickles without ``--trust``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

#: Key of the digest in a sealed payload (every other key is covered by it).
DIGEST_KEY = "sha256"


def content_digest(value: Any) -> str:
    """Hex SHA-256 of ``value``: nested mappings, lists, tuples, tensors, arrays, str, bytes,
    numbers, bools and None (anything else is a programming error: `TypeError`)."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def seal(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` plus its digest under `DIGEST_KEY`."""
    content = {key: value for key, value in payload.items() if key != DIGEST_KEY}
    return content | {DIGEST_KEY: content_digest(content)}


def seal_matches(payload: Mapping[str, Any]) -> bool | None:
    """True when the recorded digest matches the content, False when it does not, None when
    ``payload`` records none."""
    recorded = payload.get(DIGEST_KEY)
    if recorded is None:
        return None
    return recorded == content_digest({key: value for key, value in payload.items() if key != DIGEST_KEY})


def first_non_finite(tensors: Iterable[tuple[str, Any]]) -> str | None:
    """The name of the first floating-point tensor (or array) holding NaN or ±Inf, else None."""
    for name, value in tensors:
        if isinstance(value, np.ndarray):
            broken = value.dtype.kind in "fc" and not bool(np.isfinite(value).all())
        else:
            broken = (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all())
        if broken:
            return name
    return None


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{flat.dtype}{tuple(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    elif isinstance(value, np.ndarray):
        digest.update(f"A{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, (str, bytes)):
        data = value.encode() if isinstance(value, str) else value
        digest.update(f"{type(value).__name__}{len(data)}:".encode() + data)
    elif value is None or isinstance(value, (bool, int, float, np.generic)):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    else:
        raise TypeError(f"cannot digest a {type(value).__name__}")
