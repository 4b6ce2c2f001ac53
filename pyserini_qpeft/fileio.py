"""Atomic file output: write to a temp file in the same directory, then rename."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


def current_umask() -> int:
    """The process umask (mkstemp/mkdtemp create 0600/0700 files; outputs should get normal permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_dir(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished folder ``tmp`` to ``target``; an existing ``target`` is moved aside first and deleted
    only after the swap, so at every moment one complete version exists."""
    import shutil

    target = Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def publish_dir(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Give a temp dir made by ``mkdtemp`` normal permissions and rename it to ``target`` (replaced if present)."""
    os.chmod(tmp, 0o777 & ~current_umask())
    replace_dir(tmp, target)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Yield a file handle; on success the file appears at ``path`` at once, on error nothing is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
