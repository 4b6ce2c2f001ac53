"""`pyserini-qpeft fuse`: hybrid fusion of TREC runs (RRF or score interpolation, Pyserini's hybrid style), and the
first-stage interpolation of a rerank (or of several reranks of it, averaged) without running the LM again."""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable

import click

from .options import OutputPath, given_on_command_line

from ..search.fusion import (NORMALIZATIONS, average_reranks, check_rerank_covers, interpolate, interpolate_rerank,
                             rrf)

if TYPE_CHECKING:
    from ..types import Run

METHODS = ("rrf", "interpolation", "rerank-interpolation")
PYSERINI_K = 1000
"""`python -m pyserini.fusion`'s default --k: hits written per query."""


def _default(func: Callable[..., Any], name: str) -> Any:
    """The library function's default for ``name`` (one source for the flag's default)."""
    return inspect.signature(func).parameters[name].default


def _weight(text: str) -> float | dict:
    """``--alpha``: a weight in [0, 1], or a `select-interpolation` file (its record, whose dev-selected weight,
    method and normalization :func:`_resolve_weight` applies)."""
    import os

    from ..rerank.flags import interpolation_weight

    if isinstance(text, (int, float)):  # click passes the default through this type as well
        return float(text)
    if os.path.isfile(text):
        from ..errors import InputError
        from ..search.fusion import read_selection

        try:
            return {**read_selection(text), "path": text}
        except InputError as exc:
            raise ValueError(str(exc)) from None
    value = interpolation_weight(text)
    if value == "auto":
        raise ValueError("'auto' is for `rerank --interpolate`; give a weight or a selection file")
    return float(value)


def _resolve_weight(alpha: float | dict, method: str, normalization: str | None, default_normalization: str
                    ) -> tuple[float, str]:
    """``(weight, normalization)``: a selection file's weight only for the fusion it was selected for, with the
    normalization it was selected with (a different explicit ``--normalization`` is a usage error)."""
    from ..search.fusion import check_selection_method

    if not isinstance(alpha, dict):
        return alpha, normalization or default_normalization
    path = alpha["path"]
    try:
        check_selection_method(alpha, method, f"--alpha {path}")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    chosen = alpha.get("normalization", default_normalization)
    if normalization is not None and normalization != chosen:
        raise click.UsageError(f"--alpha {path} was selected with --normalization {chosen}, not {normalization}")
    return float(alpha["alpha"]), chosen


def average_named_reranks(first_stage: Run, reranks: list[Run], paths: tuple[str, ...], depth: int,
                          normalization: str) -> Run:
    """:func:`~pyserini_qpeft.search.fusion.average_reranks`, after checking that every rerank scores the first
    stage's top ``depth`` (InputError naming the file that does not); `fuse` and `select-interpolation` share it."""
    from ..errors import InputError

    for path, rerank in zip(paths, reranks):
        try:
            check_rerank_covers(first_stage, rerank, depth)
        except ValueError as exc:
            raise InputError(str(exc), path) from None
    return average_reranks(first_stage, reranks, depth, normalization)


class _FuseCommand(click.Command):
    """Also reads Pyserini's ``--runs A B C`` (``python -m pyserini.fusion``) as ``--run A --run B --run C``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        taking = False
        for arg in args:
            if arg == "--runs":
                taking = True
            elif taking and not arg.startswith("-"):
                out += ["--run", arg]
            else:
                taking = False
                out.append(arg)
        return super().parse_args(ctx, out)


@click.command("fuse", cls=_FuseCommand)
@click.option("--run", "runs", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="Input runs (repeat, or Pyserini's --runs A B ...). interpolation: exactly two, sparse first; "
                   "rerank-interpolation: the first-stage run, then its rerank, or several reranks of it (e.g. "
                   "training seeds), averaged as one reranker (mean of their normalised scores) before the "
                   "interpolation.")
@click.option("--method", type=click.Choice(METHODS), default="rrf", show_default=True,
              help="rerank-interpolation: a*norm(first stage) + (1-a)*norm(reranker) over the reranked --depth, "
                   "hits below keep their first-stage order (what `rerank --interpolate` writes).")
@click.option("--rrf.k", "rrf_k", type=click.IntRange(min=0), default=_default(rrf, "rrf_k"), show_default=True,
              help="RRF constant (Pyserini's --rrf.k).")
@click.option("--alpha", type=_weight, default=_default(interpolate, "alpha"), show_default=True,
              metavar="WEIGHT|FILE",
              help="interpolation: weight of the sparse / first-stage run, or a `select-interpolation` file (its "
                   "dev-selected weight and normalization; it must have been selected for this --method).")
@click.option("--normalization", type=click.Choice(NORMALIZATIONS), default=None,
              help=f"Per-query score normalisation (default: {_default(interpolate, 'normalization')} for "
                   f"interpolation, {_default(interpolate_rerank, 'normalization')} for rerank-interpolation).")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help=f"rrf, interpolation: pool depth, the hits of each run that count (Pyserini's --depth; default "
                   f"{_default(rrf, 'depth')}); rerank-interpolation: the reranked depth (required).")
@click.option("--k", "top_k", type=click.IntRange(min=1), default=None,
              help="Hits written per query (Pyserini's --k; default 1000 for rrf and interpolation, every hit of the "
                   "first stage for rerank-interpolation).")
@click.option("--runtag", default=None, help="Run tag (default hybrid-<method>).")
@click.option("--output", required=True, type=OutputPath(dir_okay=False, replaces="run"))
def fuse(runs, method, rrf_k, alpha, normalization, depth, top_k, runtag, output) -> None:
    """Fuse runs into one run."""
    from ..artifacts import refuse_output_over_inputs
    from ..types import is_trec_word, read_run

    refuse_output_over_inputs({"--output": output}, {"--run": list(runs),
                                                     "--alpha": alpha["path"] if isinstance(alpha, dict) else None})

    if runtag is not None and not is_trec_word(runtag):
        raise click.BadParameter(f"{runtag!r}: one word, no whitespace", param_hint="--runtag")
    if method == "rrf":  # RRF ranks: a weight or normalisation given for it would be silently ignored
        ignored = [f"--{name}" for name in given_on_command_line("alpha", "normalization")]
        if ignored:
            raise click.UsageError(f"{' and '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to "
                                   f"--method rrf (it fuses ranks: --rrf.k, "
                                   f"--depth, --k); use --method interpolation or rerank-interpolation")
    loaded = [read_run(path) for path in runs]
    if method == "rrf":
        fused = rrf(loaded, rrf_k=rrf_k, depth=depth or _default(rrf, "depth"), k=top_k or PYSERINI_K)
    else:
        if method == "interpolation" and len(loaded) != 2:
            raise click.UsageError(f"--method {method} takes exactly two --run")
        if len(loaded) < 2:
            raise click.UsageError(f"--method {method} takes the first-stage run and at least one rerank of it")
        if method == "interpolation":
            weight, norm = _resolve_weight(alpha, method, normalization, _default(interpolate, "normalization"))
            fused = interpolate(loaded[0], loaded[1], alpha=weight, normalization=norm,
                                depth=depth or _default(interpolate, "depth"), k=top_k or PYSERINI_K)
        else:
            if depth is None:
                raise click.UsageError("--method rerank-interpolation needs --depth (the rerank depth)")
            weight, norm = _resolve_weight(alpha, method, normalization,
                                           _default(interpolate_rerank, "normalization"))
            if isinstance(alpha, dict):
                from ..search.fusion import covered_depth, other_depth_note

                note = other_depth_note(alpha.get("depth"), covered_depth(loaded[0], depth))
                if note:
                    click.echo(f"warning: --alpha {alpha['path']}: {note}", err=True)
            if len(loaded) > 2:
                reranked = average_named_reranks(loaded[0], loaded[1:], runs[1:], depth, norm)
            else:
                reranked = loaded[1]
            try:
                fused = interpolate_rerank(loaded[0], reranked, weight, depth, norm)
            except ValueError as exc:
                from ..errors import InputError

                raise InputError(str(exc), runs[1]) from None
    # pyserini.fusion's methods write their fused scores in full, as it does (near-ties keep their order: at 6
    # decimals they tied and went by docid); the rerank interpolation keeps `rerank`'s 6 decimals
    fused.write(output, tag=runtag or f"hybrid-{method}", depth=top_k, exact_scores=method != "rerank-interpolation")
    click.echo(output)
