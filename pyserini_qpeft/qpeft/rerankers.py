"""The Q-PEFT rerankers ``qpeft-retr``, ``qpeft-attn`` and ``prompt-tuning`` (built-ins of the reranker registry).

Each is built from a trained checkpoint (``--reranker-checkpoint PATH``, a checkpoint folder or a training output
folder whose ``best/`` is used); the variant stored in the checkpoint must match the requested name. Importing
this module is cheap (no torch); the checkpoint is loaded when a reranker is built. The factories have the
registry's one signature (:class:`pyserini_qpeft.rerank.RerankerFactory`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import InputError
from .config import NAME_TO_VARIANT

if TYPE_CHECKING:
    from ..lm.backbone import FrozenLM, LMConfig
    from ..rerank import LMReranker

logger = logging.getLogger(__name__)

# ScorerConfig fields that word the prompt: fixed by training, never overridden at rerank time
PROMPT_FIELDS = ("template", "question_prefix", "instruction")


def build_qpeft_reranker(name: str, lm: "FrozenLM | LMConfig | str | None" = None,
                         checkpoint: str | os.PathLike | None = None,
                         scorer_overrides: Mapping[str, Any] | None = None) -> "LMReranker":
    """An :class:`~pyserini_qpeft.rerank.LMReranker` with the hint module of ``checkpoint``.

    Args:
        name: ``qpeft-retr``, ``qpeft-attn`` or ``prompt-tuning``.
        lm: a ``FrozenLM`` (or what :func:`~pyserini_qpeft.rerank.load_lm` accepts); must be the checkpoint's
            base model. None: that base model, loaded with the default device and dtype.
        checkpoint: checkpoint folder (required).
        scorer_overrides: ScorerConfig fields to change (e.g. batch_size); the prompt is the checkpoint's (an
            override that words it otherwise is refused: the module never saw that prompt).

    Raises:
        InputError: no checkpoint given, or a prompt other than the checkpoint's. ModelError: wrong variant or base
        model, unreadable checkpoint.
    """
    if checkpoint is None:
        raise InputError(f"reranker {name!r} needs a trained module: pass --reranker-checkpoint PATH "
                         f"(see `pyserini-qpeft train qpeft`)")
    from ..rerank import LMReranker, load_lm
    from ..rerank.lm import given_batch_sizes
    from .checkpoint import lm_model_for, load_checkpoint
    from .module import check_variant

    lm = load_lm(lm if lm is not None else lm_model_for(checkpoint))
    module, qpeft_config, scorer_config, meta = load_checkpoint(checkpoint, lm)
    check_variant(NAME_TO_VARIANT[name], qpeft_config.variant, str(checkpoint))
    if scorer_overrides:
        for key in PROMPT_FIELDS:
            if key in scorer_overrides and scorer_overrides[key] != getattr(scorer_config, key):
                from ..lm.prompts import prompt_name

                trained = prompt_name(scorer_config) or f"{key} {getattr(scorer_config, key)!r}"
                raise InputError(f"{checkpoint} was trained with the {trained} prompt; drop --prompt or pass "
                                 f"--prompt {trained} (scoring with a wording the module never saw)")
        for key in ("max_passage_tokens", "hint_passage_tokens", "max_query_tokens"):  # allowed, never silently
            if key in scorer_overrides and scorer_overrides[key] != getattr(scorer_config, key):
                logger.warning("%s was trained with %s %s; scoring with %s (the module reads other text than it "
                               "learnt on, and the interpolation weight it carries was selected at %s)", checkpoint,
                               key, getattr(scorer_config, key), scorer_overrides[key], getattr(scorer_config, key))
        scorer_config = dataclasses.replace(scorer_config, **scorer_overrides)
    # the first-stage weight selected on the training run's dev queries (checkpoints written since it exists)
    return LMReranker(lm, scorer_config, hint_module=module, name=name, interpolation=meta.get("interpolation"),
                      given_batch_sizes=given_batch_sizes(scorer_overrides))


def make_qpeft_retr(*, lm: "FrozenLM | LMConfig | str | None" = None, checkpoint: str | os.PathLike | None = None,
                    scorer_overrides: Mapping[str, Any] | None = None) -> "LMReranker":
    """Factory of ``qpeft-retr`` (Q-PEFT-R) from ``checkpoint``."""
    return build_qpeft_reranker("qpeft-retr", lm, checkpoint, scorer_overrides)


def make_qpeft_attn(*, lm: "FrozenLM | LMConfig | str | None" = None, checkpoint: str | os.PathLike | None = None,
                    scorer_overrides: Mapping[str, Any] | None = None) -> "LMReranker":
    """Factory of ``qpeft-attn`` (Q-PEFT-A) from ``checkpoint``."""
    return build_qpeft_reranker("qpeft-attn", lm, checkpoint, scorer_overrides)


def make_prompt_tuning(*, lm: "FrozenLM | LMConfig | str | None" = None,
                       checkpoint: str | os.PathLike | None = None,
                       scorer_overrides: Mapping[str, Any] | None = None) -> "LMReranker":
    """Factory of ``prompt-tuning`` (query-independent soft prompt baseline) from ``checkpoint``."""
    return build_qpeft_reranker("prompt-tuning", lm, checkpoint, scorer_overrides)
