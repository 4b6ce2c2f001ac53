"""`pyserini-qpeft explain`: which document tokens a trained Q-PEFT module selected (R) or attended to (A)."""
from __future__ import annotations

import json

import click

from .options import budget_options, checkpoint_lm_options


def format_explanation(info: dict) -> str:
    """A readable table of :func:`pyserini_qpeft.qpeft.module.explain`'s output."""
    lines = [f"variant: {info['variant']}   docid: {info['docid']}",
             f"query: {info['query']}",
             f"score (mean query log-prob): {info['score']:.4f} with hints, "
             f"{info['score_without_hints']:.4f} without (zero-shot UPR prompt)"]
    if "passage_tokens" in info:
        lines.append(f"passage tokens: the module read {info['passage_tokens']}, the LM's prompt holds "
                     f"{info['lm_passage_tokens']}")
    lines.append("")
    if "heads" in info:
        for h, rows in enumerate(info["heads"]):
            lines.append(f"head {h}: top attended passage tokens (attention averaged over query tokens)")
            lines.append(f"  {'rank':>4}  {'pos':>4}  {'weight':>7}  token")
            lines += [f"  {r:>4}  {row['position']:>4}  {row['weight']:>7.4f}  {row['token']!r}"
                      for r, row in enumerate(rows, start=1)]
            lines.append("")
    else:
        what = ("selected passage tokens (distinct), by max cosine similarity to a query token"
                if info["variant"] == "retr" else "nearest vocabulary token of each (query-independent) hint vector")
        lines.append(what)
        # retr: tokens ranked by similarity; prompt: one row per hint vector, in prompt order (not a ranking)
        column = "rank" if info["variant"] == "retr" else "hint"
        lines.append(f"  {column:>4}  {'cosine':>7}  token")
        lines += [f"  {r:>4}  {row['similarity']:>7.4f}  {row['token']!r}"
                  for r, row in enumerate(info["tokens"], start=1)]
    return "\n".join(lines).rstrip() + "\n"


@click.command("explain")
@click.option("--reranker-checkpoint", "checkpoint", required=True, type=click.Path(exists=True, file_okay=False),
              help="A Q-PEFT checkpoint folder (or a training output folder: its best/).")
@click.option("--query", required=True, help="Query text.")
@click.option("--docid", help="Document id, looked up in --dataset / --corpus.")
@click.option("--dataset", help="BEIR dataset name or folder holding --docid.")
@click.option("--corpus", "corpus_path", type=click.Path(exists=True, dir_okay=False),
              help="Corpus (JSONL, TSV or CAR CBOR) holding --docid.")
@click.option("--doc-text", help="Explain this document text instead of a --docid.")
@click.option("--doc-title", default="", help="Title for --doc-text.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Rows per table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@budget_options
@checkpoint_lm_options
def explain(checkpoint, query, docid, dataset, corpus_path, doc_text, doc_title, top, as_json, max_passage_tokens,
            max_query_tokens, model, device, dtype) -> None:
    """Show what the hint module of CHECKPOINT picks from a document for a query (with the passage and query
    budgets `rerank` would score it with: the checkpoint's, or --max-passage-tokens / --max-query-tokens)."""
    from ..lm.backbone import FrozenLM, LMConfig
    from ..qpeft.checkpoint import lm_model_for, read_meta
    from ..qpeft.config import RERANKER_NAMES
    from ..qpeft.rerankers import build_qpeft_reranker
    from ..data import Document, open_corpus
    from ..errors import InputError
    from ..qpeft.explain import explain as explain_pair

    if not query.strip():
        raise click.BadParameter("the query text is empty", param_hint="--query")
    if bool(doc_text) == bool(docid):
        raise click.UsageError("pass exactly one of --docid (with --dataset or --corpus) and --doc-text")
    if doc_text:
        doc = Document("text", doc_title, doc_text)
    else:
        if bool(dataset) == bool(corpus_path):
            raise click.UsageError("--docid needs exactly one of --dataset and --corpus")
        source = dataset or corpus_path
        doc = open_corpus(source, keep={docid}).get(docid)  # one document held, whatever the corpus size
        if doc is None:
            raise InputError(f"unknown docid {docid!r}", source)
    lm = FrozenLM.load(LMConfig(model=lm_model_for(checkpoint, model), device=device, dtype=dtype))
    from ..training.state import warn_if_unfinished

    warn_if_unfinished(checkpoint)
    variant = read_meta(checkpoint).get("variant")
    overrides = {k: v for k, v in (("max_passage_tokens", max_passage_tokens),
                                   ("max_query_tokens", max_query_tokens)) if v is not None}
    # the reranker `rerank --reranker-checkpoint` builds: the same budgets, overrides and warnings
    reranker = build_qpeft_reranker(RERANKER_NAMES.get(variant, "qpeft-retr"), lm, checkpoint, overrides or None)
    info = explain_pair(lm, reranker.scorer.hint_module, reranker.scorer, query, doc, top=top)
    click.echo(json.dumps(info, indent=2) if as_json else format_explanation(info))
