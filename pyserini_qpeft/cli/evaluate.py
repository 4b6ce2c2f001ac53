"""`pyserini-qpeft evaluate`: metrics equal to trec_eval's, as a table or JSON."""
from __future__ import annotations

import json

import click

from .options import sample_options


COVERAGE_WARNING = 0.9
"""``evaluate`` warns when the run holds fewer than this share of the judged queries (the rest score 0)."""


@click.command("evaluate")
@click.option("--qrels", required=True, help="Pyserini-style name (beir-v1.0.0-scifact-test), TREC or BEIR qrels file.")
@click.option("--run", "run_paths", required=True, multiple=True, type=click.Path(),
              help="TREC run file. Repeat it for one system's runs over training seeds: every per-query value (and "
                   "so every mean and --compare-to's test) is then the average over them, the seed-averaged system.")
@click.option("-m", "--metric", "metrics", multiple=True,
              help="ndcg@10, recall@100, recall@1000, mrr@10, map, hit@10, recall@10, precision@k ... or trec_eval's "
                   "names (ndcg_cut.10, P.5); repeatable, or comma-separated (ndcg@10,recall@100; P.5,10 as "
                   "trec_eval: P.5 and P.10).")
@click.option("-l", "--relevance-level", type=click.IntRange(min=1), default=1, show_default=True,
              help="Lowest judgment that counts as relevant, as trec_eval's -l (TREC DL passage: Pyserini reports MAP "
                   "and recall with -l 2); nDCG uses the graded judgments whatever the level.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: metric -> value; with --per-query, --seen-qrels, --compare-to or several "
                   "--run, {\"all\": {metric: value}, ...} with \"per_query\", \"seen\"/\"unseen\", "
                   "\"compare_to\", \"averaged_over\" beside it.")
@click.option("--per-query", is_flag=True, help="Also print per-query values.")
@click.option("--seen-qrels", default=None,
              help="Also evaluate two groups of queries: 'seen' (a relevant document is also relevant in these qrels, "
                   "e.g. beir-v1.0.0-scifact-train, what a trained model learnt from) and 'unseen' (the rest). The "
                   "evaluated queries' own judgments there are left out: a dev run of training queries against the "
                   "training qrels is split by the other training queries.")
@click.option("--only-run-queries", is_flag=True,
              help="Evaluate only the judged queries the run contains (trec_eval without -c), e.g. a dev run "
                   "(`dev-split`) against its training split's qrels.")
@click.option("--compare-to", "baseline_paths", multiple=True, type=click.Path(),
              help="Also compare RUN with this run (e.g. BM25's) on the same queries: per metric, the mean difference, "
                   "queries improved / hurt / tied, and a two-sided paired randomization test's p (10,000 sign flips, "
                   "seeded). The queries are RUN's (with --only-run-queries) or the qrels' (else); a query missing from "
                   "this run scores 0 on its side. Repeatable as --run is: the baseline's seed average.")
@sample_options
def evaluate(qrels: str, run_paths: tuple[str, ...], metrics: tuple[str, ...], relevance_level: int, as_json: bool,
             per_query: bool, seen_qrels: str | None, only_run_queries: bool, baseline_paths: tuple[str, ...],
             sample_queries: int | None, sample_seed: int) -> None:
    """Evaluate RUN against QRELS (trec_eval -c semantics: judged queries missing from the run score 0); with
    --sample-queries, against the judged queries of that sample only (as `search --sample-queries` drew them).
    Several --run: their per-query average (one system over seeds), likewise for --compare-to."""
    from ..data import load_qrels, sample_topics
    from ..evaluation import (DEFAULT_METRICS, average_per_query, evaluate_per_query, mean_metrics, metric_list,
                              split_by_seen_documents)
    from ..types import Query, read_run

    from ..errors import InputError
    from ..evaluation import parse_metric

    try:  # a bad metric is a usage error (exit 2), said before the qrels and runs are read
        names = tuple(metric_list(metrics)) if metrics else DEFAULT_METRICS
        for name in names:
            parse_metric(name)
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="'-m' / '--metric'") from None
    judged = load_qrels(qrels)
    if sample_queries is not None:
        kept = {q.qid for q in sample_topics([Query(qid, "") for qid in judged], sample_queries, sample_seed)}
        judged = {qid: rels for qid, rels in judged.items() if qid in kept}
    runs = [read_run(path) for path in run_paths]
    if only_run_queries:  # the judged queries any of the runs contains
        judged = {qid: rels for qid, rels in judged.items() if any(qid in run for run in runs)}
        if not judged:
            listed = len({qid for run in runs for qid in run.qids()})
            whose = "the runs'" if len(runs) > 1 else "the run's"
            raise InputError(f"none of {whose} {listed} queries is judged in {qrels}", ", ".join(run_paths))
    overlap = sum(1 for qid in judged if any(qid in run for run in runs))
    if judged and not overlap:  # every query scores 0: a run of other queries (another split, another sample)
        click.echo(f"warning: none of the {len(judged)} judged queries of {qrels} is in the run; every one scores "
                   f"0 (is it another dataset's or the other split's run, or another --sample-seed?)", err=True)
    elif overlap < COVERAGE_WARNING * len(judged):  # e.g. a --sample-queries run evaluated without the sample
        click.echo(f"warning: the run holds {overlap} of the {len(judged)} judged queries of {qrels}; the other "
                   f"{len(judged) - overlap} score 0, as trec_eval -c counts them (a sampled run? pass its "
                   f"--sample-queries/--sample-seed, or --only-run-queries)", err=True)
    # once; the means of all queries and of each group come from it
    every = average_per_query([evaluate_per_query(run, judged, names, relevance_level) for run in runs])
    scores = mean_metrics(every, names)
    per = every if per_query else None
    groups = split_by_seen_documents(judged, load_qrels(seen_qrels)) if seen_qrels else {}
    by_group = {g: mean_metrics(every, names, q) for g, q in groups.items() if q}
    compared = {}
    if baseline_paths:
        from ..evaluation import compare_per_query

        base = average_per_query([evaluate_per_query(read_run(path), judged, names, relevance_level)
                                  for path in baseline_paths])
        compared = {name: compare_per_query(base, every, name) for name in names}
    if as_json:
        out = {name: round(value, 4) for name, value in scores.items()}
        if per is not None or groups or len(run_paths) > 1:
            out = {"all": out}
        if len(run_paths) > 1:
            out["averaged_over"] = list(run_paths)
        for g, values in by_group.items():
            out[g] = {**{name: round(value, 4) for name, value in values.items()}, "queries": len(groups[g])}
        if per is not None:
            out["per_query"] = {q: {m: round(v, 4) for m, v in vals.items()} for q, vals in per.items()}
        if compared:
            out = out if "all" in out else {"all": out}
            which = {"run": baseline_paths[0]} if len(baseline_paths) == 1 else {"runs": list(baseline_paths)}
            out["compare_to"] = {**which, **{name: {k: round(v, 4) if isinstance(v, float) else v for k, v in c.items()}
                                             for name, c in compared.items()}}
        click.echo(json.dumps(out, sort_keys=False))
        return
    if per is not None:
        for qid, values in per.items():
            for name, value in values.items():
                click.echo(f"{name:<14}{qid:<16}{value:.4f}")
    for name, value in scores.items():
        click.echo(f"{name:<14}{'all':<16}{value:.4f}")
    for g, values in by_group.items():
        for name, value in values.items():
            click.echo(f"{name:<14}{f'{g}({len(groups[g])})':<16}{value:.4f}")
    for name, c in compared.items():
        click.echo(f"{name:<14}{'vs-baseline':<16}{c['delta']:+.4f}  improved {c['improved']} / hurt {c['hurt']} / "
                   f"tied {c['tied']}  p = {c['p']:.4f} (paired randomization, {c['trials']:,} sign flips)")
