"""`pyserini-qpeft evaluate`: metrics equal to trec_eval's, as a table or JSON."""
from __future__ import annotations

import json

import click

from .options import sample_options


@click.command("evaluate")
@click.option("--qrels", required=True, help="Pyserini-style name (beir-v1.0.0-scifact-test), TREC or BEIR qrels file.")
@click.option("--run", "run_path", required=True, type=click.Path(), help="TREC run file.")
@click.option("-m", "--metric", "metrics", multiple=True,
              help="ndcg@10, recall@100, recall@1000, mrr@10, map, hit@10, recall@10, precision@k ... (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: metric -> value.")
@click.option("--per-query", is_flag=True, help="Also print per-query values.")
@click.option("--seen-qrels", default=None,
              help="Also evaluate two groups of queries: 'seen' (a relevant document is also relevant in these qrels, "
                   "e.g. beir-v1.0.0-scifact-train, what a trained model learnt from) and 'unseen' (the rest). The "
                   "evaluated queries' own judgments there are left out: a dev run of training queries against the "
                   "training qrels is split by the other training queries.")
@click.option("--only-run-queries", is_flag=True,
              help="Evaluate only the judged queries the run contains (trec_eval without -c), e.g. a dev run "
                   "(`dev-split`) against its training split's qrels.")
@click.option("--compare-to", "baseline_path", type=click.Path(), default=None,
              help="Also compare RUN with this run (e.g. BM25's) on the same queries: per metric, the mean difference, "
                   "queries improved / hurt / tied, and a two-sided paired randomization test's p (10,000 sign flips, "
                   "seeded). The queries are RUN's (with --only-run-queries) or the qrels' (else); a query missing from "
                   "this run scores 0 on its side.")
@sample_options
def evaluate(qrels: str, run_path: str, metrics: tuple[str, ...], as_json: bool, per_query: bool,
             seen_qrels: str | None, only_run_queries: bool, baseline_path: str | None, sample_queries: int | None,
             sample_seed: int) -> None:
    """Evaluate RUN against QRELS (trec_eval -c semantics: judged queries missing from the run score 0); with
    --sample-queries, against the judged queries of that sample only (as `search --sample-queries` drew them)."""
    from ..data import load_qrels, sample_topics
    from ..evaluation import DEFAULT_METRICS, evaluate_per_query, mean_metrics, split_by_seen_documents
    from ..types import Query, read_run

    judged = load_qrels(qrels)
    if sample_queries is not None:
        kept = {q.qid for q in sample_topics([Query(qid, "") for qid in judged], sample_queries, sample_seed)}
        judged = {qid: rels for qid, rels in judged.items() if qid in kept}
    run = read_run(run_path)
    if only_run_queries:
        judged = {qid: rels for qid, rels in judged.items() if qid in run}
        if not judged:
            from ..errors import InputError

            raise InputError(f"none of the run's {len(run.qids())} queries is judged in {qrels}", run_path)
    names = tuple(metrics) or DEFAULT_METRICS
    every = evaluate_per_query(run, judged, names)  # once; the means of all queries and of each group come from it
    scores = mean_metrics(every, names)
    per = every if per_query else None
    groups = split_by_seen_documents(judged, load_qrels(seen_qrels)) if seen_qrels else {}
    by_group = {g: mean_metrics(every, names, q) for g, q in groups.items() if q}
    compared = {}
    if baseline_path is not None:
        from ..evaluation import compare_per_query

        base = evaluate_per_query(read_run(baseline_path), judged, names)
        compared = {name: compare_per_query(base, every, name) for name in names}
    if as_json:
        out = {name: round(value, 4) for name, value in scores.items()}
        if per is not None or groups:
            out = {"all": out}
        for g, values in by_group.items():
            out[g] = {**{name: round(value, 4) for name, value in values.items()}, "queries": len(groups[g])}
        if per is not None:
            out["per_query"] = {q: {m: round(v, 4) for m, v in vals.items()} for q, vals in per.items()}
        if compared:
            out = out if "all" in out else {"all": out}
            out["compare_to"] = {"run": baseline_path, **{name: {k: round(v, 4) if isinstance(v, float) else v
                                                                 for k, v in c.items()} for name, c in compared.items()}}
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
