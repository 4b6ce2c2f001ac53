"""`pyserini-qpeft encode-queries`: topics -> Pyserini's pre-encoded query folder (embedding.pkl)."""
from __future__ import annotations

import json

import click

from .options import OutputPath, device_option, dtype_option, quiet_option, trust_remote_code_option


@click.command("encode-queries")
@click.option("--index", "index_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="A FAISS index made by `encode`: its query encoder (from meta.json) is used.")
@click.option("--encoder", "spec", default=None, help="Or an explicit encoder: minilm[:PATH] | frozen-lm[:LAYER] | "
              "lmort:CHECKPOINT[,CHECKPOINT...] (must be the one the index was encoded with).")
@click.option("--topics", required=True, help="Pyserini-style topics name, TSV, BEIR queries.jsonl, CAR outlines or a TREC <top> topic file.")
@click.option("--output", required=True, type=OutputPath(file_okay=False), help="Folder for embedding.pkl + meta.json.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--model", default=None, help="Frozen LLM for frozen-lm (default smollm2); for lmort, overrides the "
              "checkpoint's base model.")
@device_option
@dtype_option
@trust_remote_code_option
@quiet_option
def encode_queries(index_dir, spec, topics, output, batch_size, model, device, dtype, quiet) -> None:
    """Write OUTPUT/embedding.pkl so that stock Pyserini searches our index:
    `python -m pyserini.search.faiss --index INDEX --topics TOPICS --encoded-queries OUTPUT --output RUN`."""
    from ..data import load_topics
    from ..search.encoded_queries import write_encoded_queries
    from ..search.encoders import build_encoder, load_query_encoder, parse_spec

    if bool(index_dir) == bool(spec):
        raise click.UsageError("give exactly one of --index or --encoder")
    if spec:
        parse_spec(spec)
    queries = load_topics(topics)
    encoder = (load_query_encoder(index_dir, device=device, dtype=dtype) if index_dir else
               build_encoder(spec, model=model, device=device, dtype=dtype))
    write_encoded_queries(encoder, queries, output, batch_size=batch_size, progress=not quiet, source=topics)
    click.echo(json.dumps({"output": output, "queries": len(queries)}))
