"""Writing output files: checked up front, written atomically (a temporary file beside the
target, renamed on success), with the user's umask, and every OS failure as one clear line."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from binarize.errors import BinarizeError, OutputError, OutputExistsError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


def os_error(exc: OSError, path: str | Path | None = None) -> BinarizeError:
    """The one-line error for an OS failure while writing ``path`` (default: the error's file)."""
    where = path if path is not None else (exc.filename or "an output file")
    if exc.errno in _NO_SPACE:
        return OutputError(f"no space left on the disk to write {where}", "free some space or write to another disk")
    if exc.errno in _NO_PERMISSION:
        reason = "the file system is read-only" if exc.errno == errno.EROFS else "permission denied"
        return OutputError(f"cannot write {where} ({reason})", "choose a folder you can write to")
    if exc.errno == errno.EISDIR:
        return OutputError(f"{where} is a folder", "give a file path, e.g. inside that folder")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return OutputError(f"a parent of {where} is a file, not a folder", "remove that file or choose another path")
    return OutputError(f"cannot write {where} ({exc.strerror or exc})", "check the path and the disk")


def check_output(path: Path, *, force: bool, folder: bool = False) -> None:
    """Refuses up front what writing ``path`` later would fail on: an existing output without
    ``force``, a folder where a file goes (or the reverse), a parent that is a file, a parent
    folder without write permission. ``folder``: ``path`` is a run folder, not a file."""
    if path.exists():
        if path.is_dir() != folder:
            what, fix = ("a file", "give a folder path") if folder else ("a folder", "give a file path, e.g. inside it")
            raise OutputError(f"{path} is {what}", fix)
        if not folder and not force:
            raise OutputExistsError(f"{path} exists", "pass --force to overwrite it or choose another path")
    parent = next(p for p in path.absolute().parents if p.exists() or p == p.parent)
    if not parent.is_dir():
        raise OutputError(f"{parent} is a file, not a folder", f"remove it or choose another path than {path}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {parent} (permission denied)", "choose a folder you can write to")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path in ``path``'s folder (same suffix) to write to.

    When the block ends normally the file is synced, given the permissions a plain ``open``
    would (0666 less the umask; the temporary file starts at 0600) and renamed onto ``path``;
    otherwise it is removed. Readers therefore never see a half-written file, and a failed
    write leaves any existing ``path`` untouched. An `OSError` (full disk, no permission, a
    folder in the way), also one wrapped in another error, becomes an `OutputError` naming ``path``.
    """
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
        os.close(handle)
        temporary = Path(name)
        yield temporary
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except Exception as exc:
        cause = _os_cause(exc)
        if cause is None:
            raise
        raise os_error(cause, path) from None
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def _os_cause(exc: BaseException | None) -> OSError | None:
    """The `OSError` behind ``exc``: writers (the ONNX exporters) wrap it in their own errors."""
    for _ in range(8):  # a few links deep; chains can loop
        if exc is None or isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask
