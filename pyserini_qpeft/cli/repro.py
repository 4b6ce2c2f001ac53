"""`pyserini-qpeft repro beir`: run the reproduction matrix, print/write the table, check expected scores."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("repro")
def repro() -> None:
    """Reproduction matrices (conditions x datasets x expected scores)."""


@repro.command("beir")
@click.option("--dataset", required=True, help="BEIR dataset name (on $PYSERINI_QPEFT_DATA) or folder name.")
@click.option("--condition", "names", multiple=True, help="Only these conditions (repeatable); default all.")
@click.option("--profile", default="full", show_default=True,
              help="beir.yaml profile: full (top-20), deep (top-100), gpu (top-100, big budget, fp32), demo.")
@click.option("--checkpoint-from", default=None,
              help="Use checkpoints trained on this dataset (zero-shot transfer), e.g. --checkpoint-from scifact.")
@click.option("--dry-run", is_flag=True, help="Print the commands without running anything.")
@click.option("--check", is_flag=True, help="Exit 5 when a score leaves its expected tolerance.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@click.option("--baseline", default="bm25", show_default=True, help="Condition for per-query wins/losses.")
@click.option("--yaml", "yaml_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Another matrix file (default: the packaged beir.yaml).")
@click.option("--download", is_flag=True, help="Download the official BEIR zip if the dataset is not found locally.")
@click.option("--report-dir", type=click.Path(file_okay=False), default="runs", show_default=True)
def beir(dataset, names, profile, checkpoint_from, dry_run, check, as_json, baseline, yaml_path, download, report_dir) -> None:
    """Make what is missing for the conditions, evaluate on the test split, report and optionally check."""
    from ..data import BeirDataset, find_dataset
    from ..errors import InputError
    from ..repro.report import bar_chart, markdown_table, wins_losses, write_text
    from ..repro.runner import DEFAULT_YAML, Matrix, Planner, check_rows, evaluate_conditions, execute, \
        raise_on_failures, write_json

    matrix = Matrix.load(yaml_path or DEFAULT_YAML)
    unknown = [n for n in names if n not in matrix.conditions]
    if unknown:
        raise InputError(f"unknown condition(s) {unknown}; choose from {', '.join(matrix.conditions)}")
    conditions = [matrix.conditions[n] for n in (names or matrix.conditions)]
    ds = BeirDataset(find_dataset(dataset, download=download))
    splits = tuple(ds.splits())
    if checkpoint_from:
        splits = tuple(s for s in splits if s != "train") + ("train",)  # the checkpoint dataset has train
    planner = Planner(matrix, ds.name, profile=profile, train_dataset=checkpoint_from, splits=splits)
    skipped = [c.name for c in conditions if not planner.available(c.run)]
    if skipped:
        click.echo(f"# {ds.name} has no train split: skipping {', '.join(skipped)} "
                   "(use --checkpoint-from DATASET for zero-shot transfer)", err=True)
    echo = (lambda s: click.echo(s, err=True)) if as_json else click.echo
    timings = execute(planner, conditions, dry_run=dry_run, echo=echo)
    if dry_run:
        return
    qrels = ds.qrels("test")
    rows = evaluate_conditions(planner, [c for c in conditions if c.name not in skipped], qrels, matrix.metrics)
    suffix = matrix.profiles[profile].get("suffix", "")
    stem = Path(report_dir) / f"repro-{ds.name}{suffix}"
    table = markdown_table(rows, matrix.metrics, ds.name)
    base_cond = matrix.conditions.get(baseline)
    if base_cond and Path(planner.output(base_cond.run)).is_file():
        wl = wins_losses(Path(planner.output(base_cond.run)), rows, qrels)
        if wl:
            table += f"\nPer-query nDCG@10 against `{baseline}` (improved / hurt / tied):\n\n"
            table += "\n".join(f"- {name}: {v['improved']} / {v['hurt']} / {v['tied']}" for name, v in wl.items())
            table += "\n"
            for row in rows:
                row["vs_" + baseline] = wl.get(row["condition"])
    write_text(table, stem.with_suffix(".md"))
    write_json(rows, stem.with_suffix(".json"))
    bm25_row = next((r for r in rows if r["condition"] == "bm25"), None)
    bar_chart(rows, "ndcg@10", ds.name, stem.with_suffix(".png"),
              reference=bm25_row["ndcg@10"] if bm25_row else None)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(table)
        click.echo(f"# wrote {stem}.md, {stem}.json, {stem}.png")
    if check:
        raise_on_failures(check_rows(rows, matrix.conditions, ds.name, profile, planner.variables["xfer"]))
        click.echo("# check passed: every score within its tolerance", err=True)
