"""Readable outputs of a reproduction: markdown table, PNG bar chart, per-query wins/losses."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..artifacts import atomic_write


def markdown_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], dataset: str,
                   timings: Mapping[str, float] | None = None, scope: str = "test") -> str:
    head = ["condition", "first stage", "reranker", *metrics]
    lines = [f"### BEIR {dataset} ({scope})", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * len(metrics)) + "|"]
    for row in rows:
        cells = [row["condition"], row["first_stage"], row["reranker"]]
        cells += ["n/a" if row.get(m) is None else f"{row[m]:.4f}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def wins_losses(baseline_run: Path, rows: Sequence[Mapping[str, Any]], qrels, metric: str = "ndcg@10"
                ) -> dict[str, dict[str, int]]:
    """Per condition: how many test queries improved / were hurt / tied against the baseline run."""
    from ..evaluation import evaluate_per_query, per_query_comparison
    from ..types import read_run

    base = evaluate_per_query(read_run(baseline_run), qrels, [metric])
    out = {}
    for row in rows:
        path = Path(row["run"])
        if not path.is_file() or path == baseline_run:
            continue
        other = evaluate_per_query(read_run(path), qrels, [metric])
        cmp = per_query_comparison(base, other, metric)
        out[row["condition"]] = {k: len(v) for k, v in cmp.items()}
    return out


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
                 baseline_run: Path | None = None, scope: str = "test") -> str:
    """Write ``<stem>.md`` (table + per-query wins/losses against ``baseline``), ``<stem>.json`` and ``<stem>.png``;
    returns the markdown. Rows get a ``vs_<baseline>`` entry when ``baseline_run`` exists. ``scope`` names the
    queries evaluated (``test``, or the sample)."""
    from .runner import write_json

    table = markdown_table(rows, metrics, dataset, scope=scope)
    if baseline_run is not None and baseline_run.is_file():
        wl = wins_losses(baseline_run, rows, qrels)
        if wl:
            table += f"\nPer-query nDCG@10 against `{baseline}` (improved / hurt / tied):\n\n"
            table += "\n".join(f"- {name}: {v['improved']} / {v['hurt']} / {v['tied']}" for name, v in wl.items())
            table += "\n"
            for row in rows:
                row["vs_" + baseline] = wl.get(row["condition"])
    def path(ext: str) -> Path:  # not with_suffix: a stem like "repro-x.seed+1" has no suffix to replace
        return stem.with_name(stem.name + ext)

    write_text(table, path(".md"))
    write_json(rows, path(".json"))
    bm25_row = next((r for r in rows if r["condition"] == "bm25"), None)
    bar_chart(rows, "ndcg@10", dataset, path(".png"), reference=bm25_row["ndcg@10"] if bm25_row else None, scope=scope)
    return table
