"""Atomic writes and checksums.

Every file neurodecode writes goes through :func:`atomic_write` (or
:func:`atomic_path`): the content goes to a temporary sibling, is flushed and
fsynced, then renamed over the target, so a killed process leaves either the old
file or the new one, never half of one.

A killed process does leave its temporary sibling behind. Temporary names carry the
writer's host and process id (``.<name>.ndtmp-<host>-<pid>-<random><suffix>``), so the
next run that writes into the same folder removes the ones whose process is gone
(:func:`clean_orphans`, called once per folder and process by :func:`atomic_path`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "write_json", "sha256_file", "sha256_bytes", "clean_orphans",
           "temp_tag", "check_writable"]

_TAG = ".ndtmp-"
_TAG_RE = re.compile(r"\.ndtmp-([0-9a-f]{8})-(\d+)-")
#: Temporaries of another host are removed only once this old (its processes cannot be checked from here).
FOREIGN_TEMP_AGE_S = 24 * 3600
_CLEANED: set[str] = set()


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_tag() -> str:
    """The marker of this process's temporary files: ``.ndtmp-<host>-<pid>-``."""
    return f"{_TAG}{_host()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep
    return True


def clean_orphans(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Remove temporary files and folders left in ``folder`` by killed neurodecode processes.

    A temporary of this host is removed when its process is gone; one of another host
    (a shared file system) when older than :data:`FOREIGN_TEMP_AGE_S`. Live writers are
    never touched. Errors (a read-only folder) are ignored: cleaning is best effort.

    Parameters
    ----------
    folder : path-like
        The folder to clean.
    recursive : bool
        Clean sub-folders too.

    Returns
    -------
    removed : list of pathlib.Path
    """
    from .logging import logger

    removed: list[Path] = []
    host = _host()
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TAG_RE.search(entry.name) if entry.name.startswith(".") else None
        if m is not None:
            same_host = m.group(1) == host
            try:
                orphan = (not _pid_alive(int(m.group(2)))) if same_host else \
                    now - entry.stat(follow_symlinks=False).st_mtime > FOREIGN_TEMP_AGE_S
                if orphan:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except OSError:
                continue
        elif recursive and entry.is_dir(follow_symlinks=False):
            removed += clean_orphans(entry.path, recursive=True)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted run in %s", len(removed), folder)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` if needed and check a file can be created in it (before any long computation).

    Raises the ``OSError`` the system gives (read-only, permission, full disk...), naming the path;
    leaves nothing behind. Also removes the temporaries of killed runs there (:func:`clean_orphans`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_orphans(folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".write-check{temp_tag()}")
    os.close(fd)
    os.unlink(tmp)
    return folder


@contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    Use this when a library (h5py, safetensors, PIL...) needs a file name. On an
    exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    parent = str(target.parent)
    if parent not in _CLEANED:
        _CLEANED.add(parent)
        clean_orphans(parent)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}{temp_tag()}", suffix=suffix or ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        os_error = None if isinstance(exc, OSError) else _as_os_error(exc, target)
        if os_error is not None:
            raise os_error from exc
        raise


_ERRNO_PATTERNS = (re.compile(r"code: (\d+)"), re.compile(r"os error (\d+)"), re.compile(r"errno = (\d+)"),
                   re.compile(r"\[Errno (\d+)\]"))


def _as_os_error(exc: BaseException, target: Path) -> OSError | None:
    """An ``OSError`` for a writer library's own exception about the file system (safetensors' ``IoError``,
    torch's "file write failed"), so every write error reaches the user the same way; ``None`` otherwise."""
    if not isinstance(exc, Exception):
        return None
    text = str(exc)
    for pattern in _ERRNO_PATTERNS:
        m = pattern.search(text)
        if m and int(m.group(1)) in errno.errorcode:
            code = int(m.group(1))
            return OSError(code, os.strerror(code), str(target))
    if "write failed" in text.lower() or "no space" in text.lower():
        try:
            full = shutil.disk_usage(target.parent).free < (1 << 20)
        except OSError:
            full = False
        if full:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    return None


@contextmanager
def atomic_write(target: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; atomically rename it to ``target`` on success."""
    with atomic_path(target) as tmp:
        if "b" in mode:
            with open(tmp, mode) as fh:
                yield fh
        else:
            with open(tmp, mode, encoding=encoding) as fh:
                yield fh


def write_json(target: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Atomically write ``obj`` as JSON (sorted keys, trailing newline)."""
    with atomic_write(target) as fh:
        json.dump(obj, fh, indent=indent, sort_keys=True, default=_json_default)
        fh.write("\n")
    return Path(target)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()
