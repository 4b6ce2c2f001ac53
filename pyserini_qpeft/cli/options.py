"""Option decorators shared by several commands (same names everywhere, Pyserini-style where one exists)."""
from __future__ import annotations

import click

DEFAULT_DEPTH = 100


def lm_options(func):
    """--model/--device/--dtype for commands that load the frozen LLM."""
    func = click.option("--dtype", type=click.Choice(["auto", "bf16", "fp32", "fp16"]), default="auto",
                        show_default=True, help="auto = bf16 on AMX CPUs and bf16-capable GPUs, else fp32.")(func)
    func = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)(func)
    func = click.option("--model", default="smollm2", show_default=True,
                        help="Frozen causal LM: 'smollm2' (packaged SmolLM2-135M-Instruct) or any HF name/path.")(func)
    return func


def reranker_options(func):
    """--reranker and friends, shared by `search` and `rerank`."""
    func = click.option("--rerank-depth", type=click.IntRange(min=1), default=DEFAULT_DEPTH, show_default=True,
                        help="Rerank the top-k hits of each query; hits below keep their order beneath.")(func)
    func = click.option("--reranker-checkpoint", type=click.Path(exists=True, file_okay=False), default=None,
                        help="Trained module for qpeft-retr / qpeft-attn / prompt-tuning.")(func)
    func = click.option("--reranker", default="identity", show_default=True,
                        help="identity | upr | upr-instruct | qpeft-retr | qpeft-attn | prompt-tuning")(func)
    func = click.option("--max-passage-tokens", type=click.IntRange(min=8), default=None,
                        help="Passage truncation budget in tokens (default: the reranker's).")(func)
    func = click.option("--batch-size-rerank", "rerank_batch_size", type=click.IntRange(min=1), default=None,
                        help="(query, passage) pairs per LM forward (default: the scorer's).")(func)
    return lm_options(func)


def quiet_option(func):
    return click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(func)
