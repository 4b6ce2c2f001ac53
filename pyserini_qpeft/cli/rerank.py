"""`pyserini-qpeft rerank`: rerank an existing TREC run (or rank_llm requests)."""
from __future__ import annotations

import click

from ..rerank.flags import ALSO_RERANK_EXCLUDES
from .options import (OutputPath, output_format_option, quiet_option, reranker_options, scale_out_options,
                      scale_out_shard)


def _excluded_given(ctx: click.Context) -> list[str]:
    """The :data:`ALSO_RERANK_EXCLUDES` options set away from their defaults in ``ctx``."""
    return [opt for param in ctx.command.params for opt in param.opts
            if opt in ALSO_RERANK_EXCLUDES and ctx.params.get(param.name) != param.default]


@click.command("rerank")
@click.option("--run", "run_path", type=click.Path(exists=True, dir_okay=False),
              help="Run to rerank: TREC, or MS MARCO (qid<TAB>docid<TAB>rank).")
@click.option("--topics", help="Pyserini-style topics name, TSV (qid<TAB>text), BEIR queries.jsonl, CAR outlines or a TREC <top> topic file.")
@click.option("--index", "index_dir", help="Lucene index with stored raw documents (document text source): a folder "
              "or a Pyserini prebuilt index name.")
@click.option("--corpus", help="Corpus JSONL / docid<TAB>text TSV / CAR paragraph CBOR / BEIR dataset name (document "
              "text source).")
@click.option("--requests", "requests_path", type=click.Path(exists=True, dir_okay=False),
              help="Instead of --run/--topics/--corpus: rank_llm Request JSONL (query + candidates with their text).")
@click.option("--output", required=True, type=OutputPath(dir_okay=False, replaces="run"), help="Output run (written atomically).")
@output_format_option
@click.option("--output-jsonl", type=OutputPath(dir_okay=False, replaces="jsonl"), default=None,
              help="Also write the result as rank_llm Result JSONL (candidates reordered, with the new scores).")
@click.option("--also-rerank", "also", type=(str, str, OutputPath(dir_okay=False, replaces="run")), multiple=True,
              metavar="NAME CHECKPOINT OUTPUT",
              help="Also rerank the same hits with reranker NAME (CHECKPOINT, or - for none) into OUTPUT, in the "
                   "same pass: query-likelihood rerankers with --reranker's model and passage prompt share each "
                   "document's prefix forward (most of the cost), and every output is byte-identical to its own "
                   "rerank. Repeatable.")
@scale_out_options("Score only this share of the work", "OUTPUT.shard-K-of-N")
@reranker_options
@quiet_option
def rerank(run_path, topics, index_dir, corpus, requests_path, output, output_format, output_jsonl, also, shard_id,
           shard_num, merge_shards, engine, workers, ray_address, gpus_per_worker, reranker, reranker_checkpoint,
           rerank_depth, interpolate, max_passage_tokens, max_query_tokens, prompt, rerank_batch_size, model, device,
           dtype, quiet) -> None:
    """Rerank the top --rerank-depth hits of RUN; hits below keep their order. Interrupted jobs resume."""
    excluded = _excluded_given(click.get_current_context()) if also else []
    if excluded:
        raise click.UsageError(f"--also-rerank writes plain reranked runs in one local pass: it does not combine "
                               f"with {', '.join(excluded)} (fuse each run afterwards)")
    shard = scale_out_shard(shard_id, shard_num, merge_shards, engine)
    if shard is not None and output_jsonl:
        raise click.UsageError("a shard writes no run: --output-jsonl belongs to the merge step")
    if output_jsonl and output_format != "trec":
        raise click.UsageError("--output-jsonl carries the new scores, which an MS MARCO run does not keep: drop "
                               "--output-format msmarco (or convert the TREC run afterwards)")
    from ..artifacts import refuse_output_over_inputs

    refuse_output_over_inputs({"--output": output, "--output-jsonl": output_jsonl,
                               "--also-rerank": [out for _, _, out in also]},
                              {"--run": run_path, "--topics": topics, "--index": index_dir, "--corpus": corpus,
                               "--requests": requests_path, "--reranker-checkpoint": reranker_checkpoint})
    from ..rerank.base import DictDocStore
    from ..rerank.pipeline import (check_run_in_corpus, check_topics_cover_run, make_reranker, open_docstore,
                                   rerank_and_write, run_docids, shard_state)
    from ..rerank.requests import read_requests, results_from_run, write_results
    from ..types import read_run

    requests = None
    if requests_path:
        if run_path or topics or index_dir or corpus:
            raise click.UsageError("--requests carries queries, candidates and text: drop --run/--topics/--index/--corpus")
        requests = read_requests(requests_path)
        run, queries, docs = requests.run, requests.queries, DictDocStore(requests.docs, requests_path)
    else:
        if not run_path or not topics:
            raise click.UsageError("give --run and --topics (or --requests)")
        if index_dir and corpus:
            raise click.UsageError("--index and --corpus both give document text: pass one")
        from ..data import load_topics

        run = read_run(run_path)
        queries = load_topics(topics)
        check_topics_cover_run(queries, run)
        # a corpus file: only the documents the rerank reads (all hits' for --output-jsonl) stay in memory
        docs = open_docstore(corpus=corpus, index=index_dir,
                             needed=run_docids(run, None if output_jsonl else rerank_depth))
        check_run_in_corpus(run, docs, None if output_jsonl else rerank_depth, run_path)
    model_reranker = make_reranker(reranker, reranker_checkpoint, model, device, dtype, max_passage_tokens,
                                   rerank_batch_size, prompt, max_query_tokens=max_query_tokens)
    if engine == "ray":
        from ..rerank.distributed import job_from_flags, rerank_on_ray

        job = job_from_flags(queries, run, docs, rerank_depth, output, reranker, reranker_checkpoint, model, device,
                             dtype, max_passage_tokens, rerank_batch_size, prompt, max_query_tokens)
        merge_shards = len(rerank_on_ray(job, workers, address=ray_address, gpus_per_worker=gpus_per_worker))
    if also:
        from ..rerank.pipeline import rerank_and_write_together

        others = [make_reranker(name, None if ckpt == "-" else ckpt, model, device, dtype, max_passage_tokens,
                                rerank_batch_size, prompt, lm=getattr(model_reranker, "lm", None),
                                max_query_tokens=max_query_tokens)
                  for name, ckpt, _ in also]
        rerank_and_write_together([model_reranker, *others], queries, run, docs, rerank_depth,
                                  [output, *(out for _, _, out in also)], progress=not quiet,
                                  output_format=output_format)
        click.echo("\n".join([str(output), *(str(out) for _, _, out in also)]))
        return
    # with --output-jsonl the scores' state files stay until the JSONL is written too (a failure there, e.g. a
    # full disk, then costs no rescoring)
    left = rerank_and_write(model_reranker, queries, run, docs, rerank_depth, output, progress=not quiet,
                            interpolate=interpolate, shard=shard, merge_shards=merge_shards,
                            output_format=output_format, keep_state=bool(output_jsonl))
    if shard is not None:
        click.echo(str(shard_state(output, *shard)))
        return
    if output_jsonl:
        reranked = read_run(output)
        write_results(requests or results_from_run(queries, reranked, docs), reranked, output_jsonl)
        for path in left:
            path.unlink(missing_ok=True)
    click.echo(output)
