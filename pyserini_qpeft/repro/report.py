"""Readable outputs of a reproduction: markdown table, PNG bar chart, per-query wins/losses with a paired
significance test, and the score of the queries whose relevant documents training saw apart from the rest."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..artifacts import atomic_write


def markdown_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], dataset: str,
                   scope: str = "test") -> str:
    """The repro report's Markdown table: one row per condition, ``metrics`` to 4 decimals ("n/a" if missing)."""
    head = ["condition", "first stage", "reranker", *metrics]
    lines = [f"### BEIR {dataset} ({scope})", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * len(metrics)) + "|"]
    for row in rows:
        cells = [row["condition"], row["first_stage"], row["reranker"]]
        cells += ["n/a" if row.get(m) is None else f"{row[m]:.4f}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_query_scores(rows: Sequence[Mapping[str, Any]], qrels, metric: str = "ndcg@10"
                     ) -> dict[str, dict[str, dict[str, float]]]:
    """Condition -> ``evaluate_per_query`` of its run (conditions whose run file exists)."""
    from ..evaluation import evaluate_per_query
    from ..types import read_run

    return {row["condition"]: evaluate_per_query(read_run(row["run"]), qrels, [metric])
            for row in rows if Path(row["run"]).is_file()}


def wins_losses(base: Mapping[str, Mapping[str, float]], per_query: Mapping[str, Mapping[str, Mapping[str, float]]],
                metric: str = "ndcg@10") -> dict[str, dict[str, float]]:
    """Per condition, :func:`~pyserini_qpeft.evaluation.compare_per_query` against ``base``'s per-query values: how
    many test queries improved / were hurt / tied, the mean difference (``delta``) and the two-sided paired
    randomization test's ``p``."""
    from ..evaluation import compare_per_query

    return {name: compare_per_query(base, other, metric) for name, other in per_query.items()}


def _comparison(v: Mapping[str, float]) -> str:
    """One :func:`~pyserini_qpeft.evaluation.compare_per_query` result as the report writes it."""
    return f"{v['improved']} / {v['hurt']} / {v['tied']}; {v['delta']:+.4f}, p = {v['p']:.4f}"


def seen_unseen(per_query: Mapping[str, Mapping[str, Mapping[str, float]]], qrels, seen_qrels,
                metric: str = "ndcg@10") -> tuple[dict[str, int], dict[str, dict[str, float | None]]]:
    """The test queries split as ``evaluate --seen-qrels`` splits them (``seen``: a relevant document is also
    relevant to a query of ``seen_qrels``, the training split; ``unseen``: the rest): the group sizes, and per
    condition the mean ``metric`` of each group (None for an empty group)."""
    from ..evaluation import mean_metrics, split_by_seen_documents

    groups = split_by_seen_documents(qrels, seen_qrels)
    sizes = {g: len(q) for g, q in groups.items()}
    means = {name: {g: mean_metrics(values, [metric], q)[metric] if q else None for g, q in groups.items()}
             for name, values in per_query.items()}
    return sizes, means


def bar_chart(rows: Sequence[Mapping[str, Any]], metric: str, dataset: str, path: Path,
              reference: float | None = None, scope: str = "test") -> None:
    """Horizontal bars of ``metric`` per condition (conditions without a run are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.get(metric) is not None]
    if not shown:
        return
    names = [r["condition"] for r in shown][::-1]
    values = [r[metric] for r in shown][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(shown) + 1.6), dpi=120)
    colors = ["#4C72B0" if r["reranker"] == "none" else "#DD8452" for r in shown][::-1]
    bars = ax.barh(names, values, color=colors)
    for bar, value in zip(bars, values):
        ax.text(bar.get_width() + 0.005, bar.get_y() + bar.get_height() / 2, f"{value:.4f}", va="center", fontsize=9)
    ax.set_ylim(-0.6, len(shown) - 0.05)  # headroom inside the axes for the reference label (never on the title)
    if reference is not None:
        ax.axvline(reference, color="gray", linestyle="--", linewidth=1)
        ax.text(reference, len(shown) - 0.3, " BM25", color="gray", fontsize=8, va="center")
    ax.set_xlim(0, max(values) * 1.15)
    ax.set_xlabel(metric)
    ax.set_title(f"BEIR {dataset} {scope}: {metric} per condition (blue: first stage, orange: reranked)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, mode="wb") as out:
        fig.savefig(out, format="png")
    plt.close(fig)


def write_text(text: str, path: Path) -> None:
    """``text`` written atomically."""
    with atomic_write(path) as out:
        out.write(text)


def write_report(rows: list[dict[str, Any]], metrics: Sequence[str], dataset: str,
                 qrels: Mapping[str, Mapping[str, int]], stem: Path, baseline: str,
                 baseline_run: Path | None = None, scope: str = "test",
                 seen_qrels: Mapping[str, Mapping[str, int]] | None = None,
                 compare_to: Mapping[str, Sequence[str]] | None = None) -> str:
    """Write ``<stem>.md`` (table + per-query wins/losses against ``baseline``, + nDCG@10 of the queries whose
    relevant documents are relevant in ``seen_qrels`` and of the rest), ``<stem>.json`` and ``<stem>.png``; returns
    the markdown. Rows get a ``vs_<baseline>`` entry when ``baseline_run`` exists and ``ndcg@10_seen`` /
    ``ndcg@10_unseen`` with ``seen_qrels`` (the dataset's training qrels: what a trained row may have learnt).
    ``compare_to``: condition -> the other conditions it is also tested against when both are in the table (e.g. a
    trained reranker against zero-shot UPR on the same footing); rows get ``compared_to`` {other: result}.
    ``scope`` names the queries evaluated (``test``, or the sample)."""
    from ..evaluation import RANDOMIZATION_TRIALS
    from .check import write_rows_json

    table = markdown_table(rows, metrics, dataset, scope=scope)
    has_baseline = baseline_run is not None and baseline_run.is_file()
    # every run is read and evaluated per query once, and only when the wins/losses or the seen/unseen split use it
    per_query = per_query_scores(rows, qrels) if has_baseline or seen_qrels or compare_to else {}
    if has_baseline:
        own = [r["condition"] for r in rows if r["condition"] in per_query and Path(r["run"]) == baseline_run]
        if own:  # the baseline is a reported row: its run is evaluated already
            base = per_query[own[0]]
        else:
            base = per_query_scores([{"condition": baseline, "run": baseline_run}], qrels)[baseline]
        wl = wins_losses(base, {name: values for name, values in per_query.items() if name not in own})
        if wl:
            table += (f"\nPer-query nDCG@10 against `{baseline}` (improved / hurt / tied; the mean difference and a "
                      f"two-sided paired randomization test's p, {RANDOMIZATION_TRIALS:,} sign flips, one test per row, "
                      f"not corrected for the number of rows):\n\n")
            table += "\n".join(f"- {name}: {_comparison(v)}" for name, v in wl.items()) + "\n"
            for row in rows:
                row["vs_" + baseline] = wl.get(row["condition"])
    pairs = [(name, other) for name in per_query for other in (compare_to or {}).get(name, ()) if other in per_query]
    if pairs:
        from ..evaluation import compare_per_query

        results = {pair: compare_per_query(per_query[pair[1]], per_query[pair[0]], "ndcg@10") for pair in pairs}
        table += ("\nPer-query nDCG@10 against the same footing's reference rows (the same counts and test, "
                  "`A vs B`: A's gain over B):\n\n")
        table += "\n".join(f"- {name} vs {other}: {_comparison(v)}" for (name, other), v in results.items()) + "\n"
        for row in rows:
            mine = {other: v for (name, other), v in results.items() if name == row["condition"]}
            if mine:
                row["compared_to"] = mine
    if seen_qrels and per_query:
        sizes, means = seen_unseen(per_query, qrels, seen_qrels)
        table += (f"\nnDCG@10 seen ({sizes['seen']} queries with a relevant document that is also relevant to a "
                  f"training query) / unseen (the other {sizes['unseen']}):\n\n")
        table += "\n".join(f"- {name}: " + " / ".join("n/a" if v is None else f"{v:.4f}" for v in m.values())
                            for name, m in means.items()) + "\n"
        for row in rows:
            for group, value in means.get(row["condition"], {}).items():
                row[f"ndcg@10_{group}"] = value
    def path(ext: str) -> Path:  # not with_suffix: a stem like "repro-x.seed+1" has no suffix to replace
        return stem.with_name(stem.name + ext)

    write_text(table, path(".md"))
    write_rows_json(rows, path(".json"))
    bm25_row = next((r for r in rows if r["condition"] == "bm25"), None)
    charted = "ndcg@10" if "ndcg@10" in metrics else metrics[0]  # a matrix (--yaml) may report other metrics
    bar_chart(rows, charted, dataset, path(".png"), reference=bm25_row.get(charted) if bm25_row else None,
              scope=scope)
    return table
