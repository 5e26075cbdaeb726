"""Checksummed, atomic, locked on-disk caches (trained teachers and helper models, synthetic sets).

An entry is ``<name>.pt`` (loaded with ``weights_only=True``) with ``<name>.sha256`` beside it. An entry
whose checksum does not match, or that cannot be read, is rebuilt, never loaded. Writes go to a temporary
file first, so a crash never leaves half a file under the final name; a lock file lets concurrent trials
wait for the first builder instead of building the same entry twice.

Imports torch only inside the functions that read or write entries: the CLI's crash handler uses
``cache_dir`` and must work when torch itself fails to import.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from kdtune.errors import KdtuneError

try:  # advisory locks are POSIX-only; elsewhere concurrent builders just duplicate work
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def cache_dir(configured: str | None) -> Path:
    """``configured``, else $KDTUNE_CACHE_DIR, else ~/.cache/kdtune, as an absolute path."""
    raw = configured or os.environ.get("KDTUNE_CACHE_DIR") or "~/.cache/kdtune"
    return Path(raw).expanduser().resolve()


def cached(path: Path, compute: Callable[[], dict[str, Any]], *, what: str) -> tuple[dict[str, Any], bool]:
    """(payload, from_cache): the intact entry at ``path``, else ``compute()`` saved there."""
    with locked(path, what=what):
        payload = load_checked(path, what=what)
        if payload is not None:
            return payload, True
        payload = compute()
        save_atomic(path, payload, what=what)
        return payload, False


@contextmanager
def locked(path: Path, *, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s entry (creating its folder) for the block."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 - closed below
    except OSError as err:
        raise KdtuneError(_unwritable(what, path, err)) from None
    with handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def load_checked(path: Path, *, what: str) -> dict[str, Any] | None:
    """The entry at ``path`` if present and intact, else None (a damaged entry is logged)."""
    import torch

    sums = path.with_suffix(".sha256")
    if not path.exists() or not sums.exists():
        return None
    if sums.read_text().strip() != _checksum(path):
        log.warning("%s %s is corrupt (checksum mismatch); rebuilding it", what, path)
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable entry is rebuilt
        log.warning("%s %s is unreadable (%s); rebuilding it", what, path, err)
        return None


def save_atomic(path: Path, payload: Any, *, what: str, checksum: bool = True) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, rename, then write the checksum (unless
    ``checksum`` is false: a file that is not a cache entry, such as a finished trial's student weights).

    Readers never see half a file; a failure removes the temporary and raises a one-line KdtuneError.
    """
    import torch

    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        if checksum:
            path.with_suffix(".sha256").write_text(_checksum(path) + "\n")
    except OSError as err:
        raise KdtuneError(_unwritable(what, path, err)) from None
    finally:
        if tmp is not None:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _unwritable(what: str, path: Path, err: OSError) -> str:
    return (
        f"cannot write the {what} under {path.parent} ({err.strerror or type(err).__name__}); "
        "free disk space or set output.cache / KDTUNE_CACHE_DIR to a writable directory"
    )
