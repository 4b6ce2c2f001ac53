"""`pyserini-qpeft search`: BM25 (Lucene) or dense (FAISS) first stage, then an optional LLM reranker."""
from __future__ import annotations

from typing import Any

import click

from ..search.lucene import BM25Config
from .options import (OutputPath, field_default, given_on_command_line, output_format_option, quiet_option,
                      reranker_options, run_tag_word, sample_options)


def _bm25(name: str) -> Any:
    """Default of a BM25 flag: :class:`~pyserini_qpeft.search.BM25Config`'s."""
    return field_default(BM25Config, name)


@click.command("search")
@click.option("--bm25", "bm25", is_flag=True, help="BM25 over a Lucene index (the default).")
@click.option("--dense", "dense", is_flag=True, help="Dense search over a FAISS index made by `encode`.")
@click.option("--index", "index_dir", required=True, help="Lucene (--bm25) or FAISS (--dense) index folder; for --bm25 "
              "also a Pyserini prebuilt index name (msmarco-v1-passage), downloaded once into $PYSERINI_CACHE.")
@click.option("--topics", required=True, help="Pyserini-style topics name, TSV, BEIR queries.jsonl, CAR outlines or a TREC <top> topic file.")
@click.option("--output", required=True, type=OutputPath(dir_okay=False, replaces="run"), help="Output run (written atomically).")
@output_format_option
@sample_options
@click.option("--hits", type=click.IntRange(min=1), default=_bm25("hits"), show_default=True)
@click.option("--remove-query", is_flag=True, help="Drop hits whose docid equals the query id (BEIR convention).")
@click.option("--k1", type=click.FloatRange(min=0), default=_bm25("k1"), show_default=True, help="BM25 k1.")
@click.option("--b", type=click.FloatRange(0, 1), default=_bm25("b"), show_default=True, help="BM25 b.")
@click.option("--threads", type=click.IntRange(min=1), default=_bm25("threads"), show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=_bm25("batch_size"), show_default=True, help="Queries per search batch.")
@click.option("--query-encoder-model", default=None,
              help="--dense: load the index's query encoder LM from here instead of the place `encode` recorded "
                   "(e.g. a moved model folder; it must hold the same weights).")
@click.option("--query-encoder-checkpoint", "query_encoder_checkpoints", multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="--dense on an LMORT index: its checkpoint folder instead of the place `encode` recorded (moved or "
                   "copied; it must hold the recorded weights). Repeat for an ensemble, in the recorded order.")
@click.option("--corpus", help="Document text for reranking (default: the Lucene index's stored raw text; for a "
                                "dense index, the corpus `encode` recorded in its meta.json).")
@click.option("--run-tag", default=None, callback=run_tag_word, help="Run tag (6th column, one word); default names "
              "the pipeline.")
@reranker_options
@quiet_option
def search(bm25, dense, index_dir, topics, output, output_format, sample_queries, sample_seed, hits, remove_query, k1, b,
           threads, batch_size, query_encoder_model, query_encoder_checkpoints, corpus, run_tag, reranker, reranker_checkpoint, rerank_depth,
           interpolate, max_passage_tokens, max_query_tokens, prompt, rerank_batch_size, model, device, dtype,
           quiet) -> None:
    """Search TOPICS and write a run (TREC or MS MARCO); with --reranker, rerank the top --rerank-depth hits in the
    same step."""
    from ..artifacts import refuse_output_over_inputs
    from ..data import load_topics, sample_topics

    if bm25 and dense:
        raise click.UsageError("--bm25 and --dense exclude each other: one first stage per search")
    mode = "dense" if dense else "bm25"
    bm25_only = [f"--{name}" for name in given_on_command_line("k1", "b") if mode == "dense"]
    if bm25_only:  # they would be silently ignored
        raise click.UsageError(f"{' and '.join(bm25_only)} {'is' if len(bm25_only) == 1 else 'are'} BM25's, not "
                               f"--dense's")
    refuse_output_over_inputs({"--output": output}, {"--topics": topics, "--index": index_dir, "--corpus": corpus})
    for flag, given in (("--query-encoder-model", query_encoder_model),
                        ("--query-encoder-checkpoint", query_encoder_checkpoints)):
        if given and mode != "dense":
            raise click.UsageError(f"{flag} is for --dense (BM25 has no query encoder)")
    if mode == "dense" and reranker != "identity" and not corpus:
        from ..search.dense import index_corpus

        corpus = index_corpus(index_dir)  # the corpus `encode` recorded (refused before the search when gone)
    queries = load_topics(topics)
    if sample_queries is not None:
        queries = sample_topics(queries, sample_queries, sample_seed)
    if mode == "bm25":
        from ..search import BM25Config, bm25_search

        run = bm25_search(index_dir, queries, BM25Config(k1=k1, b=b, hits=hits, threads=threads,
                                                         batch_size=batch_size, remove_query=remove_query),
                          progress=not quiet)
    else:
        from ..search.encoders import dense_search

        run = dense_search(index_dir, queries, k=hits, progress=not quiet, device=device, dtype=dtype,
                           remove_query=remove_query, model=query_encoder_model,
                           checkpoints=query_encoder_checkpoints or None)
    if reranker == "identity":
        run.write(output, tag=run_tag or mode, output_format=output_format)
    else:
        from ..rerank.pipeline import make_reranker, open_docstore, rerank_and_write, run_docids

        docs = open_docstore(corpus=corpus, index=index_dir, needed=run_docids(run, rerank_depth))
        model_reranker = make_reranker(reranker, reranker_checkpoint, model, device, dtype, max_passage_tokens,
                                       rerank_batch_size, prompt, max_query_tokens=max_query_tokens)
        rerank_and_write(model_reranker, queries, run, docs, rerank_depth, output, progress=not quiet,
                         tag=run_tag or f"{mode}+{reranker}", interpolate=interpolate, output_format=output_format)
    click.echo(output)
