"""`pyserini-qpeft lmort analyze|train`: LMORT layer analysis and tuner training on a frozen LLM."""
from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import click

from .options import lm_options, quiet_option

logger = logging.getLogger(__name__)


def training_pairs(dataset, split: str, limit: int | None, seed: int) -> list[tuple[str, str]]:
    """(query text, relevant document text) pairs from ``split``'s qrels, a deterministic sample of ``limit``."""
    from ..errors import InputError

    qrels = dataset.qrels(split)
    queries = dataset.queries()
    corpus = dataset.load_corpus()
    pairs = sorted((qid, docid) for qid, judged in qrels.items() for docid, rel in judged.items()
                   if rel > 0 and qid in queries and docid in corpus)
    if not pairs:
        raise InputError(f"no relevant (query, document) pairs in split {split!r}", str(dataset.path))
    if limit and len(pairs) > limit:
        pairs = sorted(random.Random(seed).sample(pairs, limit))
    return [(queries[q], corpus[d].contents()) for q, d in pairs]


def run_analysis(lm, dataset, split: str, pairs: int | None, uniformity_texts: int, pooling: str, max_length: int,
                 batch_size: int, seed: int, output: Path, progress: bool):
    from ..lmort_analysis import analyze_layers, plot_report

    sample = training_pairs(dataset, split, pairs, seed)
    texts = list(dict.fromkeys(t for pair in sample for t in pair))
    if len(texts) > uniformity_texts:
        texts = random.Random(seed).sample(texts, uniformity_texts)
    report = analyze_layers(lm, sample, texts, pooling=pooling, max_length=max_length, batch_size=batch_size,
                            progress=progress)
    report.extra.update({"dataset": str(dataset.path), "split": split, "seed": seed})
    output.mkdir(parents=True, exist_ok=True)
    report.write_json(output / "layer_report.json")
    plot_report(report, output / "layers.png", title=f"{dataset.name} {split}: {lm.model_id} ({pooling} pooling)")
    return report


@click.group("lmort")
def lmort() -> None:
    """LMORT: layer analysis and a dense-retrieval tuner on a frozen LLM."""


@lmort.command("analyze")
@click.option("--dataset", required=True, help="BEIR dataset name (on $PYSERINI_QPEFT_DATA) or folder.")
@click.option("--split", default="train", show_default=True, help="Qrels split to take pairs from (never the test split).")
@click.option("--pairs", type=click.IntRange(min=1), default=500, show_default=True, help="Max (query, relevant doc) pairs.")
@click.option("--uniformity-texts", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Max texts (queries + docs of the pairs) for the uniformity estimate.")
@click.option("--pooling", type=click.Choice(["mean", "last"]), default="mean", show_default=True)
@click.option("--max-length", type=click.IntRange(min=4), default=256, show_default=True, help="Token budget per text.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", type=int, default=13, show_default=True)
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Folder for layer_report.json and layers.png (default runs/lmort-analysis-<dataset>).")
@lm_options
@quiet_option
def analyze(dataset, split, pairs, uniformity_texts, pooling, max_length, batch_size, seed, output, model, device,
            dtype, quiet) -> None:
    """Alignment and uniformity of every layer; prints the best-aligned and the most uniform layer."""
    from ..backbone import FrozenLM, LMConfig
    from ..data import BeirDataset

    if split == "test":
        logger.warning("choosing layers on the test split leaks evaluation data into model selection")
    data = BeirDataset.find(dataset)
    out = Path(output) if output else Path("runs") / f"lmort-analysis-{data.name}"
    lm = FrozenLM.load(LMConfig(model=model, device=device, dtype=dtype))
    report = run_analysis(lm, data, split, pairs, uniformity_texts, pooling, max_length, batch_size, seed, out,
                          progress=not quiet)
    click.echo(json.dumps({"align_layer": report.align_layer, "unif_layer": report.unif_layer,
                           "seconds": report.seconds, "report": str(out / "layer_report.json"),
                           "plot": str(out / "layers.png")}))


def _parse_layers(value: str) -> tuple[int, int] | None:
    if value == "auto":
        return None
    try:
        align, unif = (int(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected 'auto' or 'ALIGN,UNIF' (two layer numbers), got {value!r}") from None
    return align, unif


@lmort.command("train")
@click.option("--dataset", required=True, help="BEIR dataset name or folder.")
@click.option("--split", default="train", show_default=True, help="Qrels split with the training queries.")
@click.option("--negatives", type=click.Path(exists=True, dir_okay=False), default=None,
              help="First-stage TREC run on the training queries (BM25); its top non-relevant docs are hard negatives.")
@click.option("--layers", default="auto", show_default=True,
              help="'auto' (from --analysis, or a fresh analysis on the training split) or 'ALIGN,UNIF'.")
@click.option("--analysis", type=click.Path(exists=True, dir_okay=False), default=None,
              help="layer_report.json from `lmort analyze` (used with --layers auto).")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Checkpoint folder.")
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Queries per step.")
@click.option("--lr", type=float, default=5e-4, show_default=True)
@click.option("--hard-negatives", type=click.IntRange(min=0), default=1, show_default=True, help="Per query per step.")
@click.option("--negative-depth", type=click.IntRange(min=1), default=30, show_default=True,
              help="Hard negatives are drawn from this many top-ranked non-relevant docs.")
@click.option("--dev-fraction", type=click.FloatRange(0, 0.9), default=0.1, show_default=True)
@click.option("--num-blocks", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--num-heads", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--dim", type=click.IntRange(min=0), default=256, show_default=True, help="Tuner width (0 = LM hidden size).")
@click.option("--ffn-dim", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--out-dim", type=click.IntRange(min=0), default=0, show_default=True, help="Embedding size (0 = --dim).")
@click.option("--pooling", type=click.Choice(["mean", "last"]), default="mean", show_default=True)
@click.option("--temperature", type=float, default=0.05, show_default=True)
@click.option("--max-length", type=click.IntRange(min=4), default=160, show_default=True, help="Tokens per text.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Where LM states are cached (default OUTPUT/state-cache).")
@click.option("--seed", type=int, default=13, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUTPUT.")
@lm_options
@quiet_option
def train(dataset, split, negatives, layers, analysis, output, epochs, batch_size, lr, hard_negatives, negative_depth,
          dev_fraction, num_blocks, num_heads, dim, ffn_dim, out_dim, pooling, temperature, max_length, cache_dir,
          seed, resume, model, device, dtype, quiet) -> None:
    """Train an LMORT tuner (InfoNCE, in-batch + BM25 hard negatives); the best epoch on dev lands in OUTPUT."""
    from ..backbone import FrozenLM, LMConfig
    from ..data import BeirDataset
    from ..lmort import LMORTConfig
    from ..lmort_analysis import LayerReport
    from ..lmort_train import TrainConfig, build_examples, train_lmort
    from ..types import read_run

    if split == "test":
        raise click.BadParameter("training on the test split is not allowed", param_hint="--split")
    chosen = _parse_layers(layers)
    data = BeirDataset.find(dataset)
    out = Path(output)
    lm = FrozenLM.load(LMConfig(model=model, device=device, dtype=dtype))
    if chosen is None:
        if analysis:
            report = LayerReport.read_json(analysis)
            if report.model != lm.identity():
                from ..errors import ModelError

                raise ModelError(f"{analysis} analysed {report.model.get('model_id')!r}, not {lm.model_id!r}")
        else:
            report = run_analysis(lm, data, split, 500, 1000, pooling, max_length, 16, seed, out / "analysis",
                                  progress=not quiet)
        chosen = (report.align_layer, report.unif_layer)
    config = LMORTConfig(align_layer=chosen[0], unif_layer=chosen[1], num_blocks=num_blocks, num_heads=num_heads,
                         dim=dim, ffn_dim=ffn_dim, out_dim=out_dim, pooling=pooling, temperature=temperature,
                         max_length=max_length)
    train_config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, hard_negatives=hard_negatives,
                               negative_depth=negative_depth, dev_fraction=dev_fraction, seed=seed)
    corpus_docs = data.load_corpus(progress=not quiet)
    run = read_run(negatives) if negatives else None
    examples = build_examples(data.queries(), data.qrels(split), run, set(corpus_docs), depth=negative_depth)
    corpus = {d: corpus_docs[d].contents() for d in {x for e in examples for x in (*e.positives, *e.negatives)}}
    start = time.time()
    summary = train_lmort(lm, examples, corpus, config, train_config, out, cache_dir=cache_dir, resume=resume,
                          progress=not quiet,
                          extra_meta={"lm_model": model, "dataset": str(data.path), "split": split,
                                      "negatives": str(Path(negatives).resolve()) if negatives else None})
    click.echo(json.dumps({"output": str(out), "layers": list(chosen), "best_epoch": summary["best_epoch"],
                           "trainable_percent": summary["trainable_percent"],
                           "seconds": round(time.time() - start, 1)}))
