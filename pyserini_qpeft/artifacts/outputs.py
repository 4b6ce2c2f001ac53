"""Checks before any work on the outputs a command will write: writable, never over an input, never replacing what
is not ours, one writer at a time."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Mapping

from ..errors import InputError, QPeftError
from .files import temp_prefix
from .meta import MetaSpec, read_meta

logger = logging.getLogger(__name__)


def check_output_path(path: str | os.PathLike, folder: bool = False) -> None:
    """Fail before any work when ``path`` cannot be written (InputError naming the path, exit code 3).

    ``folder``: the output is a folder (else a file). The nearest existing ancestor must be a folder in which a file
    can be created (tried with a temporary file, which is removed at once: permission bits alone do not tell, e.g.
    for root or on read-only file systems); an existing ``path`` must be of the right kind.
    """
    path = Path(path).absolute()
    if path.exists() and path.is_dir() != folder:
        raise InputError(f"output {'folder' if folder else 'file'} path is an existing "
                         f"{'folder' if path.is_dir() else 'file'}", str(path))
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot create the output: {ancestor} is a file, not a folder", str(path))
    try:
        fd, probe = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=ancestor)
    except OSError as exc:
        raise InputError(f"cannot write the output: {exc.strerror or exc} in {ancestor}", str(path)) from None
    os.close(fd)
    os.unlink(probe)


REPLACEABLE = {"run": "run file (TREC or MS MARCO lines)", "json": "JSON file",
               "jsonl": "rank_llm Result JSON-lines file"}
"""What an existing output file may hold for a command to replace it (:func:`check_replaceable_file`)."""


def check_replaceable_file(path: str | os.PathLike, kind: str) -> None:
    """Refuse (InputError, exit code 3, before any work) to replace an existing file that is not an output of
    ``kind`` (:data:`REPLACEABLE`): a rerun replaces its own run or JSON, never a user's notes or data. Judged by
    the file's first line (a run, a JSON-lines file) or by its whole text (a JSON file); an empty file is free."""
    import json

    path = Path(path)
    if kind not in REPLACEABLE:
        raise ValueError(f"kind must be one of {sorted(REPLACEABLE)}, got {kind!r}")
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with open(path, encoding="utf-8") as handle:
            if kind == "json":
                ours = isinstance(json.loads(handle.read(1 << 20)), (dict, list))
            else:
                first = next((line for line in handle if line.strip()), "")
                ours = _run_line(first) if kind == "run" else _result_line(first)
    except (OSError, UnicodeDecodeError, ValueError):
        ours = False
    if not ours:
        raise InputError(f"exists and is not a {REPLACEABLE[kind]}; refusing to replace it (nothing was changed; "
                         f"choose another path, or delete it first)", str(path))


def _run_line(line: str) -> bool:
    """A TREC run line (``qid Q0 docid rank score tag``) or an MS MARCO one (``qid<TAB>docid<TAB>rank``)."""
    fields = line.split()
    try:
        if len(fields) == 6:
            int(fields[3])
            float(fields[4])
            return True
        if len(fields) == 3:
            int(fields[2])
            return True
    except ValueError:
        pass
    return False


def _result_line(line: str) -> bool:
    """A rank_llm Result line: a JSON object with ``query`` and ``candidates``."""
    import json

    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "query" in record and "candidates" in record


def refuse_output_over_inputs(outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """InputError (exit 3, before any work) when an output path is also an input (writing it would replace the
    input) or when two outputs are one file. Both map a flag to a path, a sequence of paths or None; an input value
    that names no existing file or folder (a dataset or a Pyserini name) is not a path and is skipped."""
    def paths(values: Mapping[str, Any]) -> list[tuple[str, Path]]:
        found = []
        for flag, value in values.items():
            for item in (value if isinstance(value, (list, tuple)) else [value]):
                if item is not None and str(item):
                    found.append((flag, Path(os.fspath(item)).expanduser()))
        return found

    def same(a: Path, b: Path) -> bool:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.absolute() == b.absolute()

    outs = paths(outputs)
    for i, (flag, out) in enumerate(outs):
        for other_flag, other in outs[i + 1:]:
            if same(out, other):
                raise InputError(f"{flag} and {other_flag} are the same file: one would replace the other", str(out))
        for in_flag, path in paths(inputs):
            if path.exists() and same(out, path):
                raise InputError(f"{flag} is also the {in_flag} input: writing it would replace that input; choose "
                                 f"another {flag}", str(out))


def lock_exclusively(path: str | os.PathLike, busy: str, source: str | os.PathLike | None = None,
                     encoding: str | None = None, wait: bool = False) -> IO:
    """``path`` opened for appending and locked (``flock``, exclusive, released when the handle closes or the
    process dies): one writer per output. InputError ``busy`` naming ``source`` (default ``path``) when another
    process holds it; with ``wait``, a warning ``busy`` instead, then the lock once that process lets go. A symbolic
    link at ``path`` is refused (InputError): opened through it, a job would create or append to a file wherever
    whoever planted the link chose."""
    import errno
    import fcntl

    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError("is a symbolic link; a lock or state file of ours never is (remove it)", str(path)) \
                from None
        raise
    handle = os.fdopen(fd, "a", encoding=encoding)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if wait:
            logger.warning("%s: %s", source if source is not None else path, busy)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            return handle
        handle.close()
        raise InputError(busy, str(source if source is not None else path)) from None
    return handle


def check_replaceable(target: str | os.PathLike, spec: MetaSpec, force: bool, flag: str = "--force") -> bool:
    """Whether ``target`` already holds an artifact of ``spec``'s kind; refuse to touch anything else.

    A missing path or an empty folder is free (False). An artifact of this kind may be replaced only with ``force``
    (without it: InputError naming ``flag``). Anything else -- a file, a user's folder, another tool's index -- is
    never replaced or deleted, whatever ``force`` says (InputError, exit code 3).
    """
    target = Path(target)
    if not (target.exists() or target.is_symlink()):
        return False
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        return False
    ours = target.is_dir() and (target / spec.file).is_file()
    if ours:
        try:
            read_meta(target, spec)
        except QPeftError:
            ours = False
    if not ours:
        kind = "folder" if target.is_dir() else "file"
        raise InputError(f"exists and is a {kind} that is not a {spec.label}; refusing to replace it "
                         "(nothing was changed; choose another path)", str(target))
    if not force:
        raise InputError(f"{spec.label} exists (pass {flag} to replace it)", str(target))
    return True


def resolve_best(path: str | os.PathLike, marker: str) -> Path:
    """``path`` when it holds ``marker`` (a checkpoint's config file), else ``path/best`` when that does (a training
    output folder, whose ``best/`` is what loading means); otherwise ``path`` unchanged (its loader reports it)."""
    path = Path(path)
    if not (path / marker).is_file() and (path / "best" / marker).is_file():
        return path / "best"
    return path
