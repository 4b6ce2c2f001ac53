"""Option decorators shared by several commands (same names everywhere, Pyserini-style where one exists).

Defaults and choices come from their one source: the flag declarations of :mod:`pyserini_qpeft.rerank.flags`
(shared with ``python -m pyserini_qpeft.search``), ``LMConfig``/``DEVICES``/``DTYPES``, ``ScorerConfig``, the
reranker registry and ``qpeft.module.VARIANTS``. Nothing here imports torch at decoration time.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence, TypeVar

import click

from ..rerank.flags import DEFAULT_DEPTH, Flag, field_default, lm_flags, rerank_batch_flag, reranker_flags

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["DEFAULT_DEPTH", "OutputPath", "checkpoint_lm_options", "click_option", "device_option",
           "dtype_option", "field_default", "given_on_command_line", "lm_options", "optimizer_options", "quiet_option", "reranker_options",
           "run_tag_word", "scale_out_options", "scale_out_shard", "scorer_option"]


class OutputPath(click.Path):
    """A path the command writes (``click.Path(dir_okay=False)``: a file, ``file_okay=False``: a folder), checked
    when the command line is parsed, i.e. before any work: an unwritable place is exit code 3 naming the path.

    ``replaces``: for a file, what an existing one must hold to be replaced (``artifacts.REPLACEABLE``: ``run``,
    ``json``, ``jsonl``); anything else there is refused (exit 3), so a rerun replaces its own output only."""

    def __init__(self, *args: Any, replaces: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.replaces = replaces

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..artifacts import check_output_path, check_replaceable_file

        value = os.fspath(value)  # the kind checks are check_output_path's (exit 3 naming the path, as for the rest)
        check_output_path(value, folder=not self.file_okay)
        if self.replaces is not None:
            check_replaceable_file(value, self.replaces)
        return value


def given_on_command_line(*names: str) -> list[str]:
    """Those of the current command's parameters ``names`` that the command line set (not their defaults)."""
    ctx = click.get_current_context()
    return [name for name in names if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]


def run_tag_word(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback of ``--run-tag``: one non-empty word (a TREC run's 6th column), else a usage error (exit 2)."""
    if value is not None and (not value or any(c.isspace() for c in value)):
        raise click.BadParameter(f"must be one word without spaces, got {value!r}")
    return value


def click_option(flag: Flag, **overrides: Any) -> Callable[[F], F]:
    """A click option from a :class:`~pyserini_qpeft.rerank.flags.Flag` (``overrides`` replace click kwargs)."""
    if flag.choices is not None:
        kind: Any = click.Choice(flag.choices)
    elif flag.existing_dir:
        kind = click.Path(exists=True, file_okay=False)
    elif flag.type is int:
        kind = click.IntRange(min=flag.min) if flag.min is not None else int
    else:
        kind = flag.type
    kwargs = {"type": kind, "default": flag.default, "help": flag.help, "show_default": flag.default is not None}
    kwargs.update(overrides)
    return click.option(flag.flag, flag.dest, **kwargs)


def _flag(flags: Sequence[Flag], name: str) -> Flag:
    return next(f for f in flags if f.flag == name)


def device_option(func: F) -> F:
    """``--device`` (choices ``lm.backbone.DEVICES``, default ``LMConfig.device``)."""
    return click_option(_flag(lm_flags(), "--device"))(func)


def dtype_option(func: F) -> F:
    """``--dtype`` (choices ``lm.backbone.DTYPES``, default ``LMConfig.dtype``)."""
    return click_option(_flag(lm_flags(), "--dtype"))(func)


def _allow_remote_code(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        from ..lm.backbone import allow_remote_code

        allow_remote_code()


def trust_remote_code_option(func: F) -> F:
    """``--trust-remote-code``: let every model this command loads (and its Ray workers) run the code it ships
    (transformers' ``trust_remote_code``; sets ``$PYSERINI_QPEFT_TRUST_REMOTE_CODE``). Not passed to the command."""
    return click.option("--trust-remote-code", is_flag=True, expose_value=False, is_eager=True,
                        callback=_allow_remote_code,
                        help="Allow models whose config maps to code shipped with them (transformers' "
                             "trust_remote_code). Off by default: only run code you trust.")(func)


def lm_options(func: F) -> F:
    """--model/--device/--dtype (and --trust-remote-code) for commands that load the frozen LLM."""
    for flag in reversed(lm_flags()):
        func = click_option(flag)(func)
    return trust_remote_code_option(func)


def checkpoint_lm_options(func: F) -> F:
    """:func:`lm_options` for commands that use a trained checkpoint: ``--model`` defaults to its base model."""
    for flag in reversed(lm_flags(from_checkpoint=True)):
        func = click_option(flag)(func)
    return trust_remote_code_option(func)


def reranker_options(func: F) -> F:
    """--reranker and friends (shared by `search` and `rerank`, and with ``python -m pyserini_qpeft.search``),
    plus :func:`lm_options`. An unknown reranker name is a usage error (exit code 2) before any work."""
    shared = {f.flag: f for f in reranker_flags()}
    for name in ("--rerank-depth", "--interpolate", "--reranker-checkpoint", "--reranker", "--max-query-tokens",
                 "--max-passage-tokens", "--prompt"):
        func = click_option(shared[name])(func)
    func = click_option(rerank_batch_flag())(func)
    return checkpoint_lm_options(func)


def budget_options(func: F) -> F:
    """``--max-passage-tokens`` and ``--max-query-tokens`` as `rerank` declares them (default: the checkpoint's)."""
    shared = {f.flag: f for f in reranker_flags()}
    for name in ("--max-query-tokens", "--max-passage-tokens"):
        func = click_option(shared[name])(func)
    return func


def scorer_option(field: str, *decls: str, **kwargs: Any) -> Callable[[F], F]:
    """An option whose default is ``ScorerConfig.<field>`` (``--max-passage-tokens`` etc. unless ``decls``)."""
    from ..lm.scoring import ScorerConfig

    decls = decls or ("--" + field.replace("_", "-"),)
    kwargs.setdefault("show_default", True)
    return click.option(*decls, default=field_default(ScorerConfig, field), **kwargs)


def quiet_option(func: F) -> F:
    """-q/--quiet: no progress bars."""
    return click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(func)


def output_format_option(func: F) -> F:
    """--output-format trec|msmarco (Pyserini's flag; ``search`` and ``rerank``): the written run's format."""
    from ..types import OUTPUT_FORMATS

    return click.option("--output-format", type=click.Choice(OUTPUT_FORMATS), default="trec", show_default=True,
                        help="Run format, as Pyserini's flag: TREC, or MS MARCO's qid<TAB>docid<TAB>rank (ranks "
                             "only; read back by rerank, evaluate and fuse).")(func)


def sample_options(func: F) -> F:
    """--sample-queries N / --sample-seed S (``search`` and ``evaluate``): only the N queries with the smallest
    sha256("S:qid") (:func:`~pyserini_qpeft.data.sample_topics`), the same sample on every machine."""
    func = click.option("--sample-seed", type=int, default=0, show_default=True,
                        help="Seed of --sample-queries.")(func)
    return click.option("--sample-queries", type=click.IntRange(min=1), default=None,
                        help="Only N of the queries: those with the smallest sha256(\"SEED:qid\") (the same sample "
                             "on every machine). `evaluate` samples the judged queries: the same sample as `search`'s "
                             "when the topics are the judged queries (Pyserini's BEIR names). Default: all.")(func)


def eval_every_option(default: Callable[[str], Any]) -> Callable[[F], F]:
    """``--eval-every N`` of a training command (``TrainConfig.eval_every``; ``default`` as for
    :func:`optimizer_options`)."""
    return click.option("--eval-every", type=click.IntRange(min=1), default=default("eval_every"),
                        help="Also evaluate dev every N optimizer steps inside an epoch; best/ may then be a mid-epoch "
                             "checkpoint (epoch-E-step-S/). The training is unchanged, only the selection sees more "
                             "points (default: epoch ends only).")


def dev_carve_option(func: F) -> F:
    """--dev-carve random|unseen (``train qpeft``, ``train lmort``, ``dev-split``): which training queries may be
    dev queries (``training.data.DEV_CARVES``)."""
    from ..training.config import TrainConfig
    from ..training.data import DEV_CARVES

    return click.option("--dev-carve", type=click.Choice(DEV_CARVES), default=TrainConfig.default("dev_carve"),
                        show_default=True,
                        help="Dev queries from any training query (random), or only from those whose relevant "
                             "documents are relevant to no other training query (unseen: dev then measures what "
                             "training does for documents it never saw as relevant, like SciFact test queries "
                             "whose documents were never relevant in training).")(func)


def optimizer_options(default: Callable[[str], Any], batch_help: str) -> Callable[[F], F]:
    """``--epochs``, ``--batch-size``, ``--lr``, ``--weight-decay``, ``--lr-schedule`` of a training command;
    ``default(name)`` gives each default (the method's ``TrainConfig`` subclass)."""
    from ..training.config import LR_SCHEDULES

    def decorate(func: F) -> F:
        for option in reversed([
            click.option("--epochs", type=click.IntRange(min=1), default=default("epochs"), show_default=True),
            click.option("--batch-size", type=click.IntRange(min=1), default=default("batch_size"),
                         show_default=True, help=batch_help),
            click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=default("lr"),
                         show_default=True),
            click.option("--weight-decay", type=click.FloatRange(min=0), default=default("weight_decay"),
                         show_default=True),
            click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=default("lr_schedule"),
                         show_default=True, help="After the warmup: constant, or linear decay to 0 at the last "
                                                 "planned step."),
        ]):
            func = option(func)
        return func

    return decorate



def scale_out_options(work: str, shard_output: str) -> Callable[[F], F]:
    """``--shard-id/--shard-num/--merge-shards`` and ``--engine/--workers/--ray-address/--gpus-per-worker`` of a
    command whose ``work`` can be split (``encode``, ``rerank``); shard K writes ``shard_output``. Check the values
    with :func:`scale_out_shard`."""

    def decorate(func: F) -> F:
        for option in reversed([
            click.option("--shard-id", type=click.IntRange(min=0), default=None,
                         help=f"{work} (0-based; with --shard-num), e.g. $SLURM_ARRAY_TASK_ID."),
            click.option("--shard-num", type=click.IntRange(min=1), default=None,
                         help=f"Number of shares; each shard writes {shard_output}, then --merge-shards N writes "
                              "OUTPUT."),
            click.option("--merge-shards", type=click.IntRange(min=1), default=None,
                         help="Write OUTPUT from the N finished shards (byte-identical to a serial run; nothing is "
                              "computed)."),
            click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                         help="ray: run the job's shards on a Ray Data pool of --workers actors (a shard is retried "
                              "if its actor dies), then merge; needs pip install 'pyserini_qpeft[distributed]'."),
            click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
                         help="Actors for --engine ray (each loads the model once; 4 shards per actor)."),
            click.option("--ray-address", default=None,
                         help="An existing Ray cluster (default: start one on this machine)."),
            click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True),
        ]):
            func = option(func)
        return func

    return decorate


def scale_out_shard(shard_id: int | None, shard_num: int | None, merge_shards: int | None,
                    engine: str) -> tuple[int, int] | None:
    """The ``(k, n)`` shard the flags ask for (None: the whole job); a usage error for inconsistent flags or for
    ``--engine ray`` without Ray installed."""
    if (shard_id is None) != (shard_num is None):
        raise click.UsageError("--shard-id and --shard-num go together")
    if shard_id is not None and shard_id >= shard_num:
        raise click.UsageError(f"--shard-id must be below --shard-num ({shard_num}), got {shard_id}")
    if shard_id is not None and merge_shards:
        raise click.UsageError("a shard is not a merge: --merge-shards belongs to the merge step")
    if engine == "ray":
        if shard_id is not None or merge_shards:
            raise click.UsageError("--engine ray shards and merges by itself: drop --shard-id/--merge-shards")
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise click.UsageError("--engine ray needs Ray: pip install 'pyserini_qpeft[distributed]'")
    return (shard_id, shard_num) if shard_id is not None else None
