"""Save and load trained Q-PEFT modules: a folder with a JSON config, safetensors weights and a model card.

Layout of a checkpoint folder::

    qpeft_config.json        module_type "qpeft", variant, QPeftConfig, ScorerConfig, base model identity,
                             library versions, training args, dev metrics, trainable parameter count
    qpeft_model.safetensors  the module's own trainable weights only (never LM weights)
    README.md                a short model card

Loading dispatches on the saved ``module_type`` and ``variant`` fields (never on the path) and refuses a
checkpoint trained on another base model. No pickle is involved anywhere.
"""
from __future__ import annotations

import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts import (MetaSpec, check_base_model, load_weights, model_card, resolve_best, save_module_folder,
                         source_commit)
from ..artifacts import library_versions as _library_versions
from ..artifacts import read_meta as _read_meta
from ..errors import ModelError
from .config import RERANKER_NAMES

if TYPE_CHECKING:
    from ..lm.backbone import FrozenLM
    from .module import QPeftConfig
    from ..lm.scoring import ScorerConfig

logger = logging.getLogger(__name__)

MODULE_TYPE = "qpeft"
CONFIG_NAME = "qpeft_config.json"
WEIGHTS_NAME = "qpeft_model.safetensors"
FORMAT_VERSION = 1
META = MetaSpec(file=CONFIG_NAME, type_field="module_type", type=MODULE_TYPE, label="Q-PEFT checkpoint")


def library_versions() -> dict[str, str]:
    """The versions a checkpoint records (peft only when installed: only the prompt variant needs it)."""
    return _library_versions(extra=("peft",))


def module_state(module) -> dict[str, "object"]:
    """The module's persistent trainable tensors, contiguous, on CPU (what goes into the safetensors file)."""
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items() if k in trainable}
    missing = trainable - set(state)
    if missing:
        raise ModelError(f"trainable parameters missing from the state dict: {sorted(missing)}")
    return state


def _assert_no_lm_weights(state: dict, lm: "FrozenLM") -> None:
    import torch

    lm_ptrs = {p.data_ptr() for p in lm.model.parameters()}
    # a copy of the embedding (or LM head) matrix: its shape and values (the shape alone refused Q-PEFT-A's
    # in-projection, 3 x hidden rows, of a model whose vocabulary is 3 x hidden)
    matrices = [p for p in lm.model.parameters() if p.dim() == 2 and lm.vocab_size in p.shape]
    for name, tensor in state.items():
        if tensor.data_ptr() in lm_ptrs:
            raise ModelError(f"refusing to save LM weight {name!r} in a Q-PEFT checkpoint")
        if any(tensor.shape == m.shape and torch.equal(tensor.to(m.device, m.dtype), m) for m in matrices):
            raise ModelError(f"refusing to save {name!r} {tuple(tensor.shape)}: a copy of the LM's vocabulary "
                             f"matrix")


def _model_card(meta: dict) -> str:
    params = meta.get("parameters", {})
    share = (f" ({params['percent_of_lm']:.2f} % of the LM's {params['lm']:,})" if "percent_of_lm" in params else "")
    return model_card(f"Q-PEFT ({meta['variant']}) hint module", meta["base_model"]["model_id"],
                      f"{params.get('trainable', '?'):,}{share}", meta.get("training") or {}, meta.get("versions", {}),
                      meta.get("source_commit"), meta.get("dev_metrics") or {},
                      "Load with `pyserini_qpeft.qpeft.checkpoint.load_checkpoint(path, lm)`; rerank with "
                      f"`pyserini-qpeft rerank --reranker {RERANKER_NAMES[meta['variant']]} --reranker-checkpoint "
                      "PATH`.")


def save_checkpoint(path: str | os.PathLike, module, config: "QPeftConfig", lm: "FrozenLM",
                    scorer_config: "ScorerConfig", extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically (temp folder + rename; an existing folder is replaced).

    Args:
        path: the folder to create.
        module: the trained ``QPeftModule``.
        config: its ``QPeftConfig``.
        lm: the frozen base LM (its identity is recorded).
        scorer_config: the prompt/scoring settings the module was trained with.
        extra: more metadata: ``training`` (args, ``command``), ``dev_metrics``, anything JSON-serialisable.

    Returns:
        The checkpoint folder.
    """
    from .module import parameter_report

    path = Path(path)
    state = module_state(module)
    _assert_no_lm_weights(state, lm)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "module_type": MODULE_TYPE,
        "variant": config.variant,
        "qpeft_config": config.to_dict(),
        "scorer_config": scorer_config.to_dict(),
        "base_model": lm.identity(),
        "lm_precision": getattr(lm, "precision", None),  # --dtype and, for auto on a CPU, the probe's ratio
        "versions": library_versions(),
        "source_commit": source_commit(),
        "parameters": parameter_report(module, lm),
        "weights": {"file": WEIGHTS_NAME, "keys": sorted(state)},
    }
    for key, value in (extra or {}).items():
        if key in meta:
            raise ValueError(f"extra metadata may not override {key!r}")
        meta[key] = value
    save_module_folder(path, state, WEIGHTS_NAME, META, meta, _model_card(meta))
    logger.info("saved %s checkpoint (%d tensors) to %s", config.variant, len(state), path)
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself when it holds a checkpoint, else its ``best/`` sub-folder (a training output folder)."""
    return resolve_best(path, CONFIG_NAME)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's ``qpeft_config.json``; ModelError when it is missing, corrupt or not a Q-PEFT module."""
    return _read_meta(resolve_checkpoint(path), META)


def base_model_name(path: str | os.PathLike) -> str | None:
    """The ``--model`` that loads the LM the checkpoint at ``path`` was trained on (None: no readable Q-PEFT
    checkpoint there; loading it then says why)."""
    from ..errors import QPeftError
    from ..lm.backbone import model_for_identity

    try:
        model_id = read_meta(path).get("base_model", {}).get("model_id")
    except (QPeftError, OSError, AttributeError):
        return None
    return model_for_identity(model_id) if isinstance(model_id, str) and model_id else None


def lm_model_for(checkpoint: str | os.PathLike | None, model: str | None = None) -> str:
    """The ``--model`` a command with ``checkpoint`` loads: ``model`` when given, else the checkpoint's base model,
    else the packaged default."""
    from ..lm.backbone import DEFAULT_MODEL

    if model:
        return model
    recorded = base_model_name(checkpoint) if checkpoint else None
    if recorded and os.path.isabs(recorded) and not os.path.exists(recorded):
        raise ModelError(f"{checkpoint} was trained on the LM in {recorded} (recorded in its {CONFIG_NAME}), which is "
                         f"not there any more: pass --model with the folder it moved to (the same weights are "
                         f"checked)")
    return recorded or DEFAULT_MODEL


def _scorer_config(data: dict) -> "ScorerConfig":
    from ..lm.scoring import ScorerConfig

    known = {f.name for f in fields(ScorerConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        logger.warning("ignoring unknown scorer settings in checkpoint: %s", unknown)
    return ScorerConfig(**{k: v for k, v in data.items() if k in known})


def load_checkpoint(path: str | os.PathLike, lm: "FrozenLM") -> tuple[Any, "QPeftConfig", "ScorerConfig", dict]:
    """Load a checkpoint onto ``lm``. ``path`` is a checkpoint folder or a training output folder (its ``best/``).

    Returns:
        ``(module, qpeft_config, scorer_config, meta)``; the module is in eval mode on the LM's device.

    Raises:
        ModelError: not a checkpoint, a different base model, missing/extra/mis-shaped weights.
    """
    from .module import VARIANTS, QPeftConfig, build_module

    path = resolve_checkpoint(path)
    meta = read_meta(path)
    variant = meta.get("variant")
    if variant not in VARIANTS:
        raise ModelError(f"{path}: unknown Q-PEFT variant {variant!r} (known: {', '.join(VARIANTS)})")
    check_base_model(meta.get("base_model"), lm, path)
    try:
        config = QPeftConfig.from_dict(meta["qpeft_config"])
        if config.variant != variant:
            raise ModelError(f"{path}: variant {variant!r} disagrees with qpeft_config {config.variant!r}")
        scorer_config = _scorer_config(meta.get("scorer_config", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: bad checkpoint config: {exc}") from exc
    module = build_module(lm, config)
    state = load_weights(path / WEIGHTS_NAME, module_state(module), f"a {variant} module")
    module.load_state_dict(state, strict=True)
    module.eval()
    return module, config, scorer_config, meta
