"""`pyserini-qpeft dev-split` and `pyserini-qpeft select-interpolation`: choose the first-stage interpolation weight
on dev queries carved from a training split (the same carve as `train qpeft`), never on test."""
from __future__ import annotations

import json

import click

from .options import OutputPath, dev_carve_option, field_default, quiet_option

from ..search.fusion import FUSION_METHODS


def _q(name: str):
    from ..qpeft.step import QPeftTrainConfig

    return field_default(QPeftTrainConfig, name)


@click.command("dev-split")
@click.option("--dataset", required=True, help="BEIR dataset name (on $PYSERINI_QPEFT_DATA) or folder.")
@click.option("--split", default="train", show_default=True, help="Training split (the test split is refused).")
@click.option("--negatives", "negatives_run", required=True, type=click.Path(exists=True, dir_okay=False),
              help="First-stage run over the split's queries (as given to `train qpeft --negatives`).")
@click.option("--dev-size", type=click.IntRange(min=1), default=None,
              help="Dev queries (default: `train qpeft`'s, a share of the training queries).")
@click.option("--seed", type=int, default=None, help="Seed of the carve (default: `train qpeft`'s).")
@dev_carve_option
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False), default=None,
              help="Instead of --dev-size/--seed: the dev queries a `train qpeft` / `train lmort` output (or its "
                   "best/) records, e.g. to select an LMORT hybrid's weight on LMORT's own dev queries.")
@click.option("--output", required=True, type=OutputPath(dir_okay=False, replaces="run"),
              help="The first-stage run restricted to the dev queries (TREC).")
@quiet_option
def dev_split(dataset, split, negatives_run, dev_size, seed, dev_carve, checkpoint, output, quiet) -> None:
    """Write the first-stage run of the dev queries that `train qpeft --dev-size N --seed S --dev-carve C` would
    carve (or that a trained --checkpoint held out)."""
    from ..artifacts import refuse_output_over_inputs
    from ..data import BeirDataset

    refuse_output_over_inputs({"--output": output}, {"--negatives": negatives_run})
    from ..training.data import checkpoint_dev_qids, check_split, dev_first_stage
    from ..types import Run, read_run

    if checkpoint is not None:
        if dev_size is not None or seed is not None or dev_carve != _q("dev_carve"):
            raise click.UsageError("--checkpoint gives the dev queries: drop --dev-size/--seed/--dev-carve")
        check_split(split)
        full = read_run(negatives_run)
        qids = checkpoint_dev_qids(checkpoint)
        missing = [q for q in qids if q not in full]
        if missing:
            from ..errors import InputError

            raise InputError(f"{len(missing)} of the checkpoint's {len(qids)} dev queries (e.g. {missing[0]}) are "
                             f"not in the run", negatives_run)
        run = Run({q: full[q] for q in qids}, tag=full.tag)
    else:
        run = dev_first_stage(BeirDataset.find(dataset), split, read_run(negatives_run),
                              dev_size if dev_size is not None else _q("dev_size"),
                              seed if seed is not None else _q("seed"), progress=not quiet, carve=dev_carve)
    run.write(output)
    click.echo(output)


@click.command("select-interpolation")
@click.option("--first-stage", required=True, type=click.Path(exists=True, dir_okay=False),
              help="First-stage (for a hybrid: sparse) run of the dev queries (`dev-split`); its queries are the "
                   "ones that count.")
@click.option("--reranked", "--dense", "reranked", required=True, multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="The reranker's run of the same dev queries (`rerank --run <first stage> ...`); repeated: several "
                   "reranks averaged as one reranker, as `fuse --method rerank-interpolation` with several reranks. "
                   "With --method interpolation the dense run, once (it may hold more queries: only the first "
                   "stage's count).")
@click.option("--method", type=click.Choice(FUSION_METHODS), default="rerank-interpolation", show_default=True,
              help="The fusion the weight is for (as `fuse --method`): a rerank of the first stage's top --depth, "
                   "or a hybrid of two full runs.")
@click.option("--qrels", required=True, help="Qrels of the training split (Pyserini name or file).")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help="The rerank depth (required for rerank-interpolation); interpolation: the fused depth "
                   "(default 1000, as `fuse`).")
@click.option("--metric", default="ndcg@10", show_default=True)
@click.option("--normalization", type=click.Choice(["zscore", "minmax", "none"]), default="zscore", show_default=True)
@click.option("--output", required=True, type=OutputPath(dir_okay=False, replaces="json"),
              help="JSON with the chosen weight (read by `rerank --interpolate FILE`, `fuse --alpha FILE`).")
def select_interpolation(first_stage, reranked, method, qrels, depth, metric, normalization, output) -> None:
    """Pick the first-stage weight in 0, 0.05, ..., 1 that maximises METRIC on the dev queries (ties: nearest 0.5)."""
    from ..artifacts import refuse_output_over_inputs, write_json

    refuse_output_over_inputs({"--output": output}, {"--first-stage": first_stage, "--reranked": list(reranked),
                                                     "--qrels": qrels})
    from ..data import load_qrels, parse_pyserini_name
    from ..errors import InputError
    from ..search.fusion import covered_depth, interpolate, select_alpha, selection_record
    from ..training.data import FORBIDDEN_SPLITS
    from ..types import Run, read_run
    from .fuse import _default, average_named_reranks

    if depth is None:
        if method == "rerank-interpolation":
            raise click.UsageError("--method rerank-interpolation needs --depth (the rerank depth)")
        depth = _default(interpolate, "depth")
    if method == "interpolation" and len(reranked) != 1:
        raise click.UsageError("--method interpolation takes one --dense run")
    first, reranks = read_run(first_stage), [read_run(path) for path in reranked]
    judged = load_qrels(qrels)
    named = parse_pyserini_name(str(qrels))
    if named is not None and named[1] in FORBIDDEN_SPLITS:
        click.echo(f"warning: --qrels {qrels} selects the weight on {named[1]} queries; report test numbers of a "
                   f"weight chosen on dev queries carved from training (`dev-split`)", err=True)
    try:
        if len(reranks) == 1:
            rr = reranks[0]
        else:  # averaged over the judged (dev) queries, the only ones select_alpha counts
            dev_first = Run({q: first[q] for q in first.qids() if q in judged}, tag=first.tag)
            rr = average_named_reranks(dev_first, reranks, reranked, depth, normalization)
        alpha, table = select_alpha(first, rr, judged, depth, normalization=normalization, metric=metric,
                                    method=method)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if method == "rerank-interpolation":  # the depth the dev reranks covered (the run may hold fewer hits)
        depth = covered_depth(first, depth)
    record = selection_record(alpha, table, metric, depth, normalization,
                              sum(1 for q in first.qids() if q in judged), method=method, first_stage=first_stage,
                              reranked=reranked[0] if len(reranked) == 1 else list(reranked), qrels=qrels)
    write_json(output, record)
    alone = "reranker_alone" if method == "rerank-interpolation" else "dense_alone"
    click.echo(json.dumps({"alpha": alpha, metric: table[alpha], alone: table[0.0],
                           "first_stage_alone": table[1.0], "output": output}))
