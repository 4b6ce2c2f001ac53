"""`pyserini-qpeft rerank`: rerank an existing TREC run."""
from __future__ import annotations

import click

from .options import OutputPath, quiet_option, reranker_options


@click.command("rerank")
@click.option("--run", "run_path", required=True, type=click.Path(exists=True, dir_okay=False), help="TREC run to rerank.")
@click.option("--topics", required=True, help="Pyserini-style topics name, TSV (qid<TAB>text), BEIR queries.jsonl or CAR outlines.")
@click.option("--index", "index_dir", help="Lucene index with stored raw documents (document text source).")
@click.option("--corpus", help="Corpus JSONL / CAR paragraph CBOR / BEIR dataset name (document text source).")
@click.option("--output", required=True, type=OutputPath(dir_okay=False), help="Output TREC run (written atomically).")
@reranker_options
@quiet_option
def rerank(run_path, topics, index_dir, corpus, output, reranker, reranker_checkpoint, rerank_depth,
           interpolate, max_passage_tokens, rerank_batch_size, model, device, dtype, quiet) -> None:
    """Rerank the top --rerank-depth hits of RUN; hits below keep their order. Interrupted jobs resume."""
    from ..data import load_topics
    from ..types import read_run
    from ..rerank.pipeline import check_topics_cover_run, make_reranker, open_docstore, rerank_and_write

    run = read_run(run_path)
    queries = load_topics(topics)
    check_topics_cover_run(queries, run)
    docs = open_docstore(corpus=corpus, index=index_dir)
    model_reranker = make_reranker(reranker, reranker_checkpoint, model, device, dtype, max_passage_tokens,
                                   rerank_batch_size)
    rerank_and_write(model_reranker, queries, run, docs, rerank_depth, output, progress=not quiet,
                     interpolate=interpolate)
    click.echo(output)
