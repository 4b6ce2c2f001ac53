"""The one JSON metadata file of an artifact (:class:`MetaSpec`: file name, type field), read back with a clear
error; the package's JSON layout and its one JSON reader."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError, ModelError, QPeftError
from .files import atomic_write


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


def dump_json(data: Any, sort_keys: bool = True) -> str:
    """The package's JSON layout for files people read: 2-space indent, sorted keys (unless told to keep the
    objects' own order), a final newline."""
    return json.dumps(data, indent=2, sort_keys=sort_keys) + "\n"


def write_json(path: str | os.PathLike, data: Any, sort_keys: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically in the package's JSON layout (:func:`dump_json`; ``sort_keys=False``
    keeps the objects' own key order); returns the path."""
    with atomic_write(path) as out:
        out.write(dump_json(data, sort_keys))
    return Path(path)


def write_meta(folder: str | os.PathLike, spec: MetaSpec, meta: Mapping[str, Any]) -> Path:
    """Write ``meta`` plus the type field to ``folder/spec.file`` atomically; returns the file's path.

    Raises:
        ValueError: ``meta`` already holds another value under the type field.
    """
    if meta.get(spec.type_field, spec.type) != spec.type:
        raise ValueError(f"{spec.type_field}={meta[spec.type_field]!r} in {spec.label} metadata, expected "
                         f"{spec.type!r}")
    return write_json(Path(folder) / spec.file, {**meta, spec.type_field: spec.type})


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
