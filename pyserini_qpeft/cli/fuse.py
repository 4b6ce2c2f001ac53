"""`pyserini-qpeft fuse`: hybrid fusion of TREC runs (RRF or score interpolation, Pyserini's hybrid style)."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import click

from ..search.fusion import NORMALIZATIONS, interpolate, rrf


def _default(func: Callable[..., Any], name: str) -> Any:
    """The library function's default for ``name`` (one source for the flag's default)."""
    return inspect.signature(func).parameters[name].default


@click.command("fuse")
@click.option("--run", "runs", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="Input runs (repeat). For --method interpolation: exactly two, sparse first.")
@click.option("--method", type=click.Choice(["rrf", "interpolation"]), default="rrf", show_default=True)
@click.option("--k", "rrf_k", type=click.IntRange(min=1), default=_default(rrf, "k"), show_default=True,
              help="RRF constant.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=_default(interpolate, "alpha"), show_default=True,
              help="interpolation: weight of the sparse run.")
@click.option("--normalization", type=click.Choice(NORMALIZATIONS), default=_default(interpolate, "normalization"),
              show_default=True)
@click.option("--depth", type=click.IntRange(min=1), default=_default(rrf, "depth"), show_default=True)
@click.option("--output", required=True, type=click.Path(dir_okay=False))
def fuse(runs, method, rrf_k, alpha, normalization, depth, output) -> None:
    """Fuse first-stage runs into one hybrid run."""
    from ..types import read_run

    loaded = [read_run(path) for path in runs]
    if method == "rrf":
        fused = rrf(loaded, k=rrf_k, depth=depth)
    else:
        if len(loaded) != 2:
            raise click.UsageError("--method interpolation takes exactly two --run (sparse, dense)")
        fused = interpolate(loaded[0], loaded[1], alpha=alpha, normalization=normalization, depth=depth)
    fused.write(output, tag=f"hybrid-{method}")
    click.echo(output)
