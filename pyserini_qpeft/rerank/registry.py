"""Rerankers by name: built-ins, :func:`register_reranker` and third-party plugins (entry points).

Every reranker is made by a factory with one signature (:class:`RerankerFactory`)::

    factory(*, lm=None, checkpoint=None, scorer_overrides=None) -> Reranker

* ``lm``: the frozen LM, or how to load it (``FrozenLM``, ``LMConfig``, a model name/path, or None for the
  default). Factories that need a model load it with :func:`pyserini_qpeft.rerank.load_lm`; the others ignore
  it, so passing an ``LMConfig`` never loads a model for nothing.
* ``checkpoint``: trained weights (a folder). Rerankers without trained parameters refuse one (InputError);
  trained ones require it.
* ``scorer_overrides``: :class:`~pyserini_qpeft.lm.scoring.ScorerConfig` fields to change (e.g. ``batch_size``).

The registry is complete whenever it is consulted: built-ins are listed here as ``"module:attribute"`` strings
and imported only when built (so ``import pyserini_qpeft.rerank`` imports no torch), and packages add rerankers
through the entry point group ``pyserini_qpeft.rerankers`` (PyTerrier-style plugins), e.g. in ``setup.py``::

    entry_points={"pyserini_qpeft.rerankers": ["my-reranker = my_package.rerank:make_my_reranker"]}

A built-in or registered name wins over an entry point of the same name (the plugin is skipped with a warning).
"""
from __future__ import annotations

import functools
import importlib
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, TypeVar, Union

from ..errors import InputError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from ..lm.backbone import FrozenLM, LMConfig
    from .base import Reranker

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pyserini_qpeft.rerankers"


class RerankerFactory(Protocol):
    """The one signature every reranker factory has (see the module docstring)."""

    def __call__(self, *, lm: "FrozenLM | LMConfig | str | None" = None,
                 checkpoint: str | os.PathLike | None = None,
                 scorer_overrides: Mapping[str, Any] | None = None) -> "Reranker": ...


F = TypeVar("F", bound=Callable[..., Any])
# A factory, or "module:attribute" naming one (imported when first built).
FactoryRef = Union[RerankerFactory, str]

BUILTIN_RERANKERS: dict[str, str] = {
    "identity": "pyserini_qpeft.rerank.base:make_identity",
    "upr": "pyserini_qpeft.rerank.lm:make_upr",
    "upr-instruct": "pyserini_qpeft.rerank.lm:make_upr_instruct",
    "qpeft-retr": "pyserini_qpeft.qpeft.rerankers:make_qpeft_retr",
    "qpeft-attn": "pyserini_qpeft.qpeft.rerankers:make_qpeft_attn",
    "prompt-tuning": "pyserini_qpeft.qpeft.rerankers:make_prompt_tuning",
}
_registered: dict[str, FactoryRef] = dict(BUILTIN_RERANKERS)


@functools.lru_cache(maxsize=1)
def _plugins() -> dict[str, "EntryPoint"]:
    """Entry points of :data:`ENTRY_POINT_GROUP` (read once per process; loaded only when built)."""
    from importlib.metadata import entry_points

    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            logger.warning("reranker plugin %r is declared twice (%s, %s); using the first", ep.name,
                           found[ep.name].value, ep.value)
            continue
        found.setdefault(ep.name, ep)
    return found


def _table() -> dict[str, "FactoryRef | EntryPoint"]:
    table: dict[str, FactoryRef | EntryPoint] = {}
    for name, ep in _plugins().items():
        if name in _registered:
            logger.warning("reranker plugin %s = %s is shadowed by the built-in/registered %r", name, ep.value, name)
            continue
        table[name] = ep
    table.update(_registered)
    return table


def register_reranker(name: str, factory: FactoryRef | None = None) -> Any:
    """Register ``factory`` (a :class:`RerankerFactory` or a ``"module:attribute"`` string) under ``name``.

    Without ``factory`` it is a decorator. Registering another factory under a taken name is a ValueError.
    """

    def add(target: F) -> F:
        if name in _registered and _registered[name] is not target and _registered[name] != target:
            raise ValueError(f"reranker {name!r} is already registered")
        _registered[name] = target
        return target

    if factory is not None:
        return add(factory)
    return add


def unregister_reranker(name: str) -> None:
    """Forget a reranker added with :func:`register_reranker` (built-ins and plugins stay)."""
    if name in BUILTIN_RERANKERS:
        raise ValueError(f"reranker {name!r} is built in")
    _registered.pop(name, None)


def reranker_names() -> list[str]:
    """Every reranker name (built-in, registered, plugin), sorted. Imports no reranker module."""
    return sorted(_table())


def get_reranker_factory(name: str) -> RerankerFactory:
    """The factory registered as ``name`` (its module is imported now); InputError when unknown."""
    table = _table()
    ref = table.get(name)
    if ref is None:
        raise InputError(f"unknown reranker {name!r}; choose from {', '.join(sorted(table))}")
    if isinstance(ref, str):
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)
    from importlib.metadata import EntryPoint

    if isinstance(ref, EntryPoint):
        return ref.load()
    return ref


def build_reranker(name: str, *, lm: "FrozenLM | LMConfig | str | None" = None,
                   checkpoint: str | os.PathLike | None = None,
                   scorer_overrides: Mapping[str, Any] | None = None) -> "Reranker":
    """Build the reranker ``name`` with the one factory signature (see the module docstring).

    Raises:
        InputError: unknown name, or a checkpoint the reranker cannot use / lacks.
    """
    return get_reranker_factory(name)(lm=lm, checkpoint=checkpoint, scorer_overrides=scorer_overrides)
