"""`pyserini-qpeft encode`: a corpus -> a Pyserini-compatible FAISS index folder (index, docid, meta.json)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .options import (OutputPath, device_option, dtype_option, quiet_option, scale_out_options, scale_out_shard,
                      trust_remote_code_option)


@click.command("encode")
@click.option("--encoder", "spec", required=True,
              help="minilm[:PATH] | frozen-lm[:LAYER] | lmort:CHECKPOINT[,CHECKPOINT...] (several: a seed "
              "ensemble over one LM pass, the mean of their inner products)")
@click.option("--dataset", help="BEIR dataset name (on $PYSERINI_QPEFT_DATA) or folder.")
@click.option("--corpus", "corpus_path", type=click.Path(exists=True),
              help="BEIR/Pyserini JSONL, docid<TAB>text TSV (MS MARCO's collection.tsv) or TREC CAR paragraph CBOR.")
@click.option("--output", required=True, type=OutputPath(file_okay=False), help="Index folder (written atomically).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--max-length", type=click.IntRange(min=4), default=None,
              help="Token budget per document (minilm/frozen-lm; default 256; LMORT uses its checkpoint's).")
@click.option("--pooling", type=click.Choice(["mean", "last"]), default="mean", show_default=True, help="frozen-lm only.")
@click.option("--model", default=None,
              help="Frozen LLM for frozen-lm (default smollm2); for lmort, overrides the checkpoint's base model.")
@device_option
@dtype_option
@trust_remote_code_option
@click.option("--state-cache", type=click.Path(file_okay=False), default=None,
              help="lmort only: encode documents from the frozen LM's layer states stored in this folder (the "
                   "`train lmort --cache-dir` of a checkpoint with the same layers); the LM runs only for documents "
                   "not stored yet, which are added. States are stored in bf16, as training reads them.")
@click.option("--overwrite", is_flag=True, help="Replace an existing index folder.")
@scale_out_options("Encode only this share of the batches", "OUTPUT.shard-K-of-N/")
@quiet_option
def encode(spec, dataset, corpus_path, output, batch_size, max_length, pooling, model, device, dtype, state_cache,
           overwrite, shard_id, shard_num, merge_shards, engine, workers, ray_address, gpus_per_worker, quiet) -> None:
    """Encode every document (title + text) and write OUTPUT/{index,docid,meta.json}; search it with
    `pyserini-qpeft search --dense --index OUTPUT` or Pyserini's FaissSearcher."""
    from ..search.encoders import build_encoder, encode_corpus, parse_spec

    kind, _ = parse_spec(spec)  # fail on a bad spec before loading anything
    shard = scale_out_shard(shard_id, shard_num, merge_shards, engine)
    if bool(dataset) == bool(corpus_path):
        raise click.UsageError("give exactly one of --dataset or --corpus")
    if state_cache and kind != "lmort":
        raise click.UsageError(f"--state-cache is for the lmort encoder, not {kind}")
    if state_cache and (shard or merge_shards or engine == "ray"):
        raise click.UsageError("--state-cache runs in one process: drop the shard, merge and Ray options")
    from ..artifacts import check_replaceable
    from ..search.dense import META

    check_replaceable(output, META, overwrite, flag="--overwrite")  # before any work; never a user's folder
    from ..data import find_dataset, open_corpus

    source = Path(corpus_path) if corpus_path else find_dataset(dataset)
    docs = list(open_corpus(source).values())
    if engine == "ray":
        from ..rerank.distributed import EncodeJob, encode_on_ray

        job = EncodeJob(spec, docs, output, batch_size, model, device, dtype, max_length, pooling)
        merge_shards = len(encode_on_ray(job, workers, address=ray_address, gpus_per_worker=gpus_per_worker))
    if spec.startswith("lmort:"):
        from ..training.state import warn_if_unfinished

        for member in spec.split(":", 1)[1].split(","):
            warn_if_unfinished(member)
    encoder = build_encoder(spec, model=model, device=device, dtype=dtype, max_length=max_length, pooling=pooling)
    if state_cache:
        encoder.use_state_cache(state_cache, docs, progress=not quiet)
    meta = encode_corpus(encoder, docs, output, batch_size=batch_size, progress=not quiet, overwrite=overwrite,
                         extra_meta={"spec": spec, "corpus": str(Path(source).resolve())}, shard=shard,
                         merge_shards=merge_shards)
    if shard:
        click.echo(json.dumps(meta))  # {"shard": folder, "num_docs": the documents of this shard}
        return
    click.echo(json.dumps({"output": output, "num_docs": len(docs), "dim": meta["dim"],
                           "encode_seconds": meta["encode_seconds"]}))
