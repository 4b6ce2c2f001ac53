"""`pyserini-qpeft repro beir`: run the reproduction matrix, print/write the table, check expected scores."""
from __future__ import annotations

import click

from .options import OutputPath


@click.group("repro")
def repro() -> None:
    """Reproduction matrices (conditions x datasets x expected scores)."""


@repro.command("beir")
@click.option("--dataset", required=True, help="BEIR dataset name (on $PYSERINI_QPEFT_DATA) or folder name.")
@click.option("--condition", "names", multiple=True,
              help="Make (and --check) only these conditions (repeatable); default all. The report (table, --json, "
                   "runs/repro-*) also lists every other condition whose run is already finished, so a partial rerun "
                   "never drops a row from it.")
@click.option("--profile", default="full", show_default=True,
              help="beir.yaml profile: full (top-20), top5, deep (top-100), gpu (top-100, big budget, fp32), demo.")
@click.option("--seed-offset", type=click.IntRange(min=0), default=0, show_default=True,
              help="Train the trained conditions with their base seeds + K (a row's second seed: 1; 3 for the "
                   "LMORT ensemble, so no member is shared); their checkpoints and runs are named .seed+K.")
@click.option("--checkpoint-from", default=None,
              help="Use checkpoints trained on this dataset (zero-shot transfer), e.g. --checkpoint-from scifact.")
@click.option("--dry-run", is_flag=True, help="Print the commands without running anything.")
@click.option("--check", is_flag=True, help="Exit 5 when a score leaves its expected tolerance.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@click.option("--baseline", default=None, help="Condition for per-query wins/losses (default bm25).")
@click.option("--yaml", "yaml_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Another matrix file (default: the packaged beir.yaml).")
@click.option("--download", is_flag=True, help="Download the official BEIR zip if the dataset is not found locally.")
@click.option("--report-dir", type=OutputPath(file_okay=False), default="runs", show_default=True)
@click.option("--share-prefixes/--no-share-prefixes", default=True, show_default=True,
              help="Run reranks of the same candidates with the same options as one `rerank --also-rerank` pass "
                   "(each document's prefix once; every run byte-identical to its own rerank); their other needs, "
                   "e.g. a training, run first.")
def beir(dataset, names, profile, seed_offset, checkpoint_from, dry_run, check, as_json, baseline, yaml_path, download,
         report_dir, share_prefixes) -> None:
    """Make what is missing for the conditions, evaluate on the test split, report and optionally check."""
    from ..repro.beir import reproduce_beir
    from .main import run_in_process

    reproduce_beir(dataset, run_in_process, conditions=names, profile=profile, checkpoint_from=checkpoint_from,
                   dry_run=dry_run, check=check, as_json=as_json, baseline=baseline, yaml_path=yaml_path,
                   download=download, report_dir=report_dir, seed_offset=seed_offset, share_prefixes=share_prefixes,
                   out=click.echo, err=lambda text: click.echo(text, err=True))
