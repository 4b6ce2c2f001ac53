"""A trained module's folder: safetensors weights, the JSON metadata file and a model card, written and read one
way for Q-PEFT and LMORT checkpoints (each module builds its own metadata and card)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import ModelError
from .checks import check_finite_weights
from .files import atomic_write, staging_dir
from .meta import MetaSpec, write_meta

CARD_NAME = "README.md"


def save_module_folder(path: str | os.PathLike, state: Mapping[str, Any], weights_name: str, spec: MetaSpec,
                       meta: Mapping[str, Any], card: str, keep_other_files: bool = False) -> Path:
    """Write ``state`` (name -> contiguous CPU tensor) to ``weights_name``, ``meta`` to ``spec.file`` and ``card`` to
    README.md in ``path``.

    The folder is built aside and swapped in whole (:func:`~pyserini_qpeft.artifacts.staging_dir`). With
    ``keep_other_files``, a folder that holds more than those three files (a training output folder with its state)
    keeps the rest: the three are then replaced one at a time, each atomically, the metadata last, so a folder with
    metadata always has matching weights. The weights file's safetensors header holds one metadata key,
    ``module_type`` = ``spec.type`` (safetensors writes several in a per-process random order: files differing in
    bytes for the same weights).
    """
    from safetensors.torch import save

    path = Path(path)
    weights = save(dict(state), metadata={"module_type": spec.type})
    own = {spec.file, weights_name, CARD_NAME}
    if keep_other_files and path.is_dir() and any(p.name not in own for p in path.iterdir()):
        with atomic_write(path / weights_name, mode="wb") as out:
            out.write(weights)
        with atomic_write(path / CARD_NAME) as out:
            out.write(card)
        write_meta(path, spec, meta)
        return path
    with staging_dir(path) as tmp:
        (tmp / weights_name).write_bytes(weights)
        write_meta(tmp, spec, meta)
        (tmp / CARD_NAME).write_text(card, encoding="utf-8")
    return path


def load_weights(file: str | os.PathLike, expected: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Read a module's safetensors weights for loading into a freshly built module.

    Args:
        file: the ``*.safetensors`` file.
        expected: the built module's tensors by name (only their ``shape`` is read).
        kind: what the weights must fit, for the messages ("a retr module", "an LMORT tuner").

    Returns:
        name -> CPU tensor, the same keys and shapes as ``expected``, every value finite.

    Raises:
        ModelError (exit code 6): the file is missing or unreadable, keys are missing or unexpected, a shape
        differs, or a value is NaN/Inf.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(file)
    if not file.is_file():
        raise ModelError(f"{file.parent}: weights file {file.name} is missing")
    try:
        state = load_file(str(file), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{file}: corrupt weights: {exc}") from exc
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(f"{file}: weights do not match {kind}: missing {missing}, unexpected {unexpected}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ModelError(f"{file}: {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
    check_finite_weights(state, file)
    return state
