"""Atomic files and folders: written under a temporary name next to the target (the writer's process id in it),
given the permissions a plain ``open``/``mkdir`` would give under the umask, renamed into place; what a killed
process left is swept by the next writer."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator


logger = logging.getLogger(__name__)


def current_umask() -> int:
    """The process umask (mkstemp/mkdtemp create 0600/0700 files; outputs should get normal permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@functools.lru_cache(maxsize=1)
def host_tag() -> str:
    """This machine in a temporary's name (8 hex digits of its host name's sha1): a process id means something on
    one host only, and a folder on a shared file system is written from several."""
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode("utf-8")).hexdigest()[:8]


def _temporary_pattern(target_name: str | None = None) -> re.Pattern:
    """The names of temporary siblings of ``target_name`` (of any target when None): ``.NAME.PID-HOST.*.tmp``
    (:func:`temp_prefix`) or a folder moved aside, ``.NAME.oldPID-HOST`` (:func:`replace_dir`); names written before
    the host tag have none (``.NAME.PID.*.tmp``, ``.NAME.oldPID``). Groups ``pid`` and ``host`` (None when absent)."""
    name = re.escape(target_name) if target_name is not None else ".+"
    writer, moved = (rf"(?P<{pid}>\d+)(?:-(?P<{host}>[0-9a-f]{{8}}))?" for pid, host in (("pid", "host"),
                                                                                        ("oldpid", "oldhost")))
    return re.compile(rf"\.{name}\.(?:{writer}\.(?P<rest>.+)\.tmp|old{moved})")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` has the form of a temporary sibling this module makes (see :func:`sweep_stale`)."""
    return bool(_temporary_pattern().fullmatch(name))


def temp_prefix(target: str | os.PathLike) -> str:
    """Name prefix of this process's temporary siblings of ``target``: ``.NAME.PID-HOST.`` (see :func:`sweep_stale`)."""
    return f".{Path(target).name}.{os.getpid()}-{host_tag()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale(target: str | os.PathLike) -> list[Path]:
    """Remove temporary siblings of ``target`` left by a process of ours that no longer runs; returns them.

    A job killed hard (SIGKILL, the JVM exiting on Ctrl-C, a power cut) cannot clean up after itself, so every
    writer sweeps before it starts. Only names this module makes are touched: ``.NAME.PID-HOST.*.tmp`` and
    ``.NAME.oldPID-HOST``, and only when process PID is gone from this host; another host's are left alone (from
    here it cannot tell whether their writer still runs: a job on another node of a shared file system lost its
    temporary folder mid-write).
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return []
    pattern = _temporary_pattern(target.name)
    removed = []
    for entry in parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if not match:
            continue
        pid = int(match.group("pid") or match.group("oldpid"))
        host = match.group("host") or match.group("oldhost")
        if host is None and match.group("rest") and re.match(r"\d+(-[0-9a-f]{8})?\.", match.group("rest")):
            continue  # as well a temporary of a sibling named NAME.<digits> (".x.9.PID-HOST.abc.tmp" of "x.9")
        if (host is not None and host != host_tag()) or pid == os.getpid() or _alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        logger.warning("removed %s, left behind by an interrupted job (process %d)", entry, pid)
        removed.append(entry)
    return removed


def replace_dir(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished folder ``tmp`` to ``target``.

    An existing ``target`` is moved aside first and deleted only after the swap (and moved back if the swap
    fails), so at every moment one complete version exists.
    """
    target = Path(target)
    if not (target.exists() or target.is_symlink()):
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.old{os.getpid()}-{host_tag()}")
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def _normal_permissions(folder: Path) -> None:
    """Give ``folder`` and everything below it the permissions ``mkdir``/``open`` give under the current umask.

    Some writers create private files (``mkdtemp`` folders are 0700, safetensors' ``save_file`` writes 0600);
    a published artifact should be as readable as any other output. Executable bits are kept.
    """
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            if os.path.islink(path):  # chmod would change the link's target
                continue
            wide = 0o777 if os.path.isdir(path) or os.stat(path).st_mode & 0o111 else 0o666
            os.chmod(path, wide & ~mask)


def publish_dir(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Give a finished temp folder (and its contents) normal permissions and rename it to ``target`` (replaced
    if present). :func:`staging_dir` does this for you."""
    _normal_permissions(Path(tmp))
    replace_dir(tmp, target)


@contextlib.contextmanager
def staging_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name next to ``target``, then swap it in.

    Yields an empty folder on the same file system as ``target``. When the ``with`` block succeeds the folder
    gets the permissions ``mkdir`` gives under the current umask and replaces ``target`` (see
    :func:`replace_dir`); when it raises, the temporary folder is removed and an existing ``target`` is left
    untouched. Everything inside gets normal permissions too (see :func:`_normal_permissions`).

    Example::

        with staging_dir(out) as tmp:
            (tmp / "meta.json").write_text(...)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        publish_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Yield a file handle; on success the file appears at ``path`` at once, on error nothing is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:  # a failed write: name it
            raise with_filename(exc, path) from exc
        raise


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """The sha256 (hex) of a file's bytes, read in ``block``-byte pieces."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(block), b""):
            digest.update(piece)
    return digest.hexdigest()


def with_filename(exc: OSError, path: str | os.PathLike) -> OSError:
    """``exc`` naming ``path`` (a failed buffered write, e.g. a full disk, raises an OSError without a file name)."""
    return exc if exc.filename is not None or exc.errno is None else OSError(exc.errno, exc.strerror, str(path))
