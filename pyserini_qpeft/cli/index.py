"""`pyserini-qpeft index`: a BEIR-flat Lucene index under indexes/."""
from __future__ import annotations

from pathlib import Path

import click

from .options import OutputPath


def default_index_dir(name: str) -> Path:
    return Path("indexes") / f"lucene-beir-{name}-flat"


@click.command("index")
@click.option("--dataset", help="BEIR dataset name (found on $PYSERINI_QPEFT_DATA) or folder.")
@click.option("--corpus", "corpus_path", type=click.Path(exists=True),
              help="BEIR/Pyserini JSONL, docid<TAB>text TSV (MS MARCO's collection.tsv) or TREC CAR paragraph CBOR.")
@click.option("--index", "index_dir", type=OutputPath(file_okay=False), help="Output folder (default indexes/lucene-beir-<name>-flat).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even if the index exists.")
@click.option("--download", is_flag=True, help="Download the official BEIR zip if the dataset is not found locally.")
@click.option("--language", default="en", show_default=True,
              help="Anserini's analyzer (Pyserini's -language: de, fr, es, zh, ja, ar, ...; en = Porter-stemmed "
                   "English). Recorded in the index: `search --bm25` analyses queries with it; `python -m "
                   "pyserini_qpeft.search lucene` needs Pyserini's own --language with the same code.")
def index(dataset: str | None, corpus_path: str | None, index_dir: str | None, threads: int, force: bool,
          download: bool, language: str) -> None:
    """Build a BEIR-flat Lucene index (title + text in one field, raw JSON stored). Idempotent: an index built
    from the same corpus is reused; one built from another corpus is refused (exit 3) unless --force."""
    from ..data import find_dataset
    from ..search import build_index

    if bool(dataset) == bool(corpus_path):
        raise click.UsageError("give exactly one of --dataset or --corpus")
    from ..search.lucene import LANGUAGE

    if not LANGUAGE.fullmatch(language):
        raise click.BadParameter(f"{language!r}: a code such as en, de, zh (Anserini's -language)",
                                 param_hint="--language")
    if dataset:
        source = find_dataset(dataset, download=download)
        name = source.name
    else:
        source = Path(corpus_path)
        name = source.stem if source.is_file() else source.name
    target = Path(index_dir) if index_dir else default_index_dir(name)
    built = build_index(source, target, threads=threads, force=force, language=language)
    click.echo(str(built))
