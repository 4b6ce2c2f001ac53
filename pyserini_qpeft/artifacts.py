"""On-disk artifacts: atomic files and folders, one metadata format, the base-model check, library versions.

Every artifact the package writes (Q-PEFT and LMORT checkpoints, FAISS and Lucene index folders, runs, reports)
goes through this module:

* :func:`atomic_write` for one file and :func:`staging_dir` for a folder: written under a temporary name next
  to the target, given the permissions a plain ``open``/``mkdir`` would give under the current umask, then
  renamed into place; on error nothing is left behind and an older version stays intact. Temporary names carry
  the writer's process id, and what a killed process left is swept by the next writer (:func:`sweep_stale`).
* :func:`write_meta` / :func:`read_meta`: the one JSON metadata file of an artifact (``indent=2,
  sort_keys=True``) with a type field (see :class:`MetaSpec`), read back with a clear error when it is missing,
  corrupt or of another type.
* :func:`check_base_model`: refuses to use an artifact made with another frozen LM (exit code 6).
* :func:`library_versions`: the library versions an artifact records.

Nothing heavy is imported here (no torch, no faiss).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Mapping

from .errors import InputError, ModelError, QPeftError

if TYPE_CHECKING:
    from .lm.backbone import FrozenLM

logger = logging.getLogger(__name__)

# Packages every artifact records; an artifact adds its own (peft, faiss-cpu, pyserini) via ``extra``.
CORE_PACKAGES = ("pyserini_qpeft", "torch", "transformers")


# --------------------------------------------------------------------------------------------------------------
# Atomic files and folders


def current_umask() -> int:
    """The process umask (mkstemp/mkdtemp create 0600/0700 files; outputs should get normal permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    process holds it; with ``wait``, a warning ``busy`` instead, then the lock once that process lets go."""
    import fcntl

    handle = open(path, "a", encoding=encoding)
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


def _temporary_pattern(target_name: str | None = None) -> re.Pattern:
    """The names of temporary siblings of ``target_name`` (of any target when None): ``.NAME.PID.*.tmp``
    (:func:`temp_prefix`) or a folder moved aside, ``.NAME.oldPID`` (:func:`replace_dir`); the PID is group 1 or 2."""
    name = re.escape(target_name) if target_name is not None else ".+"
    return re.compile(rf"\.{name}\.(?:(\d+)\..+\.tmp|old(\d+))")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` has the form of a temporary sibling this module makes (see :func:`sweep_stale`)."""
    return bool(_temporary_pattern().fullmatch(name))


def temp_prefix(target: str | os.PathLike) -> str:
    """Name prefix of this process's temporary siblings of ``target``: ``.NAME.PID.`` (see :func:`sweep_stale`)."""
    return f".{Path(target).name}.{os.getpid()}."


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
    writer sweeps before it starts. Only names this module makes are touched: ``.NAME.PID.*.tmp`` and
    ``.NAME.oldPID``, and only when process PID is gone.
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
        pid = int(match.group(1) or match.group(2))
        if pid == os.getpid() or _alive(pid):
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
    old = target.with_name(f".{target.name}.old{os.getpid()}")
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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------------------------
# Metadata files


@dataclass(frozen=True)
class MetaSpec:
    """Name and type of one kind of artifact's metadata file.

    Attributes:
        file: file name inside the artifact folder (``qpeft_config.json``, ``meta.json``).
        type_field: the key holding the type (``module_type`` for checkpoints, ``type`` for indexes).
        type: its value (``qpeft``, ``dense-index``).
        label: what the artifact is called in error messages ("Q-PEFT checkpoint").
        error: the exception raised for a missing, corrupt or mistyped file (``ModelError`` for models, exit
            code 6; ``InputError`` for indexes, exit code 3).
        untyped_ok: accept a file without the type field (written before the field existed).
    """

    file: str
    type_field: str
    type: str
    label: str
    error: type[QPeftError] = ModelError
    untyped_ok: bool = False

    def fail(self, message: str, where: str | os.PathLike) -> QPeftError:
        """The error to raise for ``message`` about ``where`` (a file or folder)."""
        if issubclass(self.error, InputError):
            return self.error(message, str(where))
        return self.error(f"{where}: {message}")


def read_json(path: str | os.PathLike, what: str, error: type[QPeftError] = InputError) -> Any:
    """The JSON value in the file ``path``; ``error`` ("<what>: <reason>", naming the file) when it cannot be read,
    is not UTF-8 or is not JSON (a truncated or hand-edited file), instead of a traceback."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = f"{what}: {exc}"
        if issubclass(error, InputError):
            raise error(message, str(path)) from None
        raise error(f"{path}: {message}") from None


def dump_json(data: Any) -> str:
    """The package's JSON layout for files people read: 2-space indent, sorted keys, a final newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_meta(folder: str | os.PathLike, spec: MetaSpec, meta: Mapping[str, Any]) -> Path:
    """Write ``meta`` plus the type field to ``folder/spec.file`` atomically; returns the file's path.

    Raises:
        ValueError: ``meta`` already holds another value under the type field.
    """
    if meta.get(spec.type_field, spec.type) != spec.type:
        raise ValueError(f"{spec.type_field}={meta[spec.type_field]!r} in {spec.label} metadata, expected "
                         f"{spec.type!r}")
    path = Path(folder) / spec.file
    with atomic_write(path) as out:
        out.write(dump_json({**meta, spec.type_field: spec.type}))
    return path


def read_meta(folder: str | os.PathLike, spec: MetaSpec) -> dict[str, Any]:
    """The metadata of the artifact in ``folder``.

    Raises:
        spec.error: no ``spec.file`` in ``folder``, unreadable or corrupt JSON, not a JSON object, or a type
            field naming another kind of artifact.
    """
    folder = Path(folder)
    path = folder / spec.file
    if not path.is_file():
        raise spec.fail(f"not a {spec.label} (no {spec.file})", folder)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise spec.fail(f"unreadable {spec.label} metadata: {exc}", path) from exc
    except json.JSONDecodeError as exc:
        raise spec.fail(f"corrupt JSON ({exc})", path) from exc
    if not isinstance(meta, dict):
        raise spec.fail(f"{spec.type_field} is None, expected {spec.type!r} (not a JSON object)", path)
    found = meta.get(spec.type_field)
    if found != spec.type and not (found is None and spec.untyped_ok):
        raise spec.fail(f"{spec.type_field} is {found!r}, expected {spec.type!r}", path)
    return meta


# --------------------------------------------------------------------------------------------------------------
# Base model and library versions


def check_base_model(saved: Mapping[str, Any] | None, lm: "FrozenLM | Mapping[str, Any]", source: str | os.PathLike,
                     made: str = "trained on") -> None:
    """Refuse an artifact made with another frozen LM.

    Args:
        saved: the LM identity the artifact recorded (``FrozenLM.identity()`` at save time).
        lm: the loaded LM, or its identity.
        source: the artifact, for the message.
        made: how the artifact used its LM, for the message ("trained on", "encoded with", "analysed with").

    Raises:
        ModelError: the identities differ (exit code 6); the message names both models and the differing keys.
    """
    saved = dict(saved or {})
    current = dict(lm.identity() if hasattr(lm, "identity") else lm)
    if saved == current:
        return
    saved_weights, current_weights = saved.pop("weights", None), current.pop("weights", None)
    shape = sorted(k for k in set(saved) | set(current) if k != "model_id" and saved.get(k) != current.get(k))
    if saved_weights and current_weights and not shape:
        if saved_weights == current_weights:
            return  # the same weight files, wherever they are now (a moved folder, a Hub name and its snapshot)
        raise ModelError(f"{source}: {made} base model {saved.get('model_id')!r} whose weight files differ from "
                         f"those of the loaded {current.get('model_id')!r} (fingerprint {saved_weights} vs "
                         f"{current_weights}): the model was changed or replaced since; load the weights it was "
                         f"made with (--model), or make it again")
    if not shape and _same_model(saved.get("model_id"), current.get("model_id")):
        return  # recorded before weights were (or without them): the same name or the same folder
    differs = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    raise ModelError(f"{source}: {made} base model {saved.get('model_id')!r}, but the loaded LM is "
                     f"{current.get('model_id')!r} (differs in {', '.join(differs)}: saved "
                     f"{ {k: saved.get(k) for k in differs} }, loaded { {k: current.get(k) for k in differs} }); "
                     f"pass the matching --model (Python: LMConfig(model=...))")


def _same_model(a: Any, b: Any) -> bool:
    """Whether two recorded model ids name the same model: equal, or the same existing folder (a trailing slash, a
    relative path recorded by an older version)."""
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def check_finite_weights(state: Mapping[str, Any], source: str | os.PathLike) -> None:
    """Refuse weights holding NaN or Inf (they would turn every score into NaN): ModelError, exit code 6.

    ``state`` maps names to tensors (duck-typed: ``is_floating_point``, ``isfinite``; torch is not imported here).
    """
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if bad:
        raise ModelError(f"{source}: weights hold NaN or Inf values ({', '.join(sorted(bad)[:5])}"
                         f"{' ...' if len(bad) > 5 else ''}); this checkpoint cannot score anything (retrain it)")


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of :data:`CORE_PACKAGES` and ``extra`` (distribution names); absent ones are left out.

    Read from package metadata, so nothing is imported (recording versions never loads torch).
    """
    import importlib.metadata as md

    from . import __version__

    versions: dict[str, str] = {}
    for name in (*CORE_PACKAGES, *extra):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            if name == "pyserini_qpeft":  # a source checkout that is not installed
                versions[name] = __version__
    return versions


@functools.lru_cache(maxsize=1)
def source_commit() -> str | None:
    """The git commit of this package's source checkout (``-dirty`` appended when tracked files differ from it);
    None for an installed wheel or without git. Recorded in trained checkpoints and their model cards."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def provenance_lines(record: Mapping[str, Any], versions: Mapping[str, Any], commit: str | None) -> list[str]:
    """A model card's "Data and provenance" list: dataset and split, the hard-negative run, training and dev query
    counts, seed and dev carve, code version and commit. ``record`` holds the checkpoint's training record
    (``dataset``, ``split``, ``negatives``, ``train_queries``, ``dev_queries``, ``train_config``); absent entries
    are left out."""
    config = record.get("train_config") or {}
    lines = [f"- dataset: `{record['dataset']}`, split `{record.get('split', '?')}`" if record.get("dataset") else "",
             f"- hard negatives from: `{record['negatives']}`" if record.get("negatives") else "",
             f"- {record['train_queries']} training queries"
             + (f" (at most {config['max_train_queries']} used per epoch: --max-train-queries)"
                if config.get("max_train_queries") else "")
             + f", {record.get('dev_queries', '?')} dev queries carved from them"
             if "train_queries" in record else "",
             f"- seed {config['seed']} (dev carve seed {config.get('dev_seed') or config['seed']})"
             if "seed" in config else "",
             f"- code: pyserini_qpeft {versions.get('pyserini_qpeft', '?')}"
             + (f", commit `{commit}`" if commit else "")]
    return [line for line in lines if line]


def model_card(title: str, base_model: str, parameters: str, record: Mapping[str, Any], versions: Mapping[str, Any],
               commit: str | None, dev_metrics: Mapping[str, Any], usage: str) -> str:
    """A trained checkpoint's ``README.md``: what it is, its frozen base model, its trainable parameters, the command,
    data and code that produced it (:func:`provenance_lines`; ``record['command']``), its dev metrics, how to use
    it."""
    lines = [f"# {title}", "", f"Base model (frozen, not included): `{base_model}`", "",
             f"Trainable parameters: {parameters}", ""]
    if record.get("command"):
        lines += ["Training command:", "", "```", record["command"], "```", ""]
    lines += ["Data and provenance:", "", *provenance_lines(record, versions, commit), ""]
    if dev_metrics:
        lines += ["Dev metrics (checkpoint selection; carved from the training queries):", ""]
        lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in sorted(dev_metrics.items())]
        lines.append("")
    return "\n".join([*lines, usage, ""])


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

