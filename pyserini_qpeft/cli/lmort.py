"""`pyserini-qpeft lmort analyze|train`: LMORT layer analysis and tuner training on a frozen LLM.

Flags only: the work is :func:`pyserini_qpeft.lmort.analysis.run_analysis` / ``choose_layers`` and
:func:`pyserini_qpeft.lmort.train.train_lmort`; option defaults of ``train`` come from
:class:`~pyserini_qpeft.lmort.step.LMORTTrainConfig` and :class:`~pyserini_qpeft.lmort.tuner.LMORTConfig`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from ..lmort.pseudo import POSITIVES
from ..lmort.step import LMORTTrainConfig
from ..lmort.tuner import LMORTConfig
from ..training.data import NEGATIVE_POLICIES
from .main import command_line
from .options import (OutputPath, dev_carve_option, eval_every_option, given_on_command_line, lm_options,
                      optimizer_options, quiet_option)

logger = logging.getLogger(__name__)

_T = LMORTTrainConfig.default


def _tuner_default(name: str):
    return LMORTConfig.__dataclass_fields__[name].default


@click.group("lmort")
def lmort() -> None:
    """LMORT: layer analysis and a dense-retrieval tuner on a frozen LLM."""


@lmort.command("analyze")
@click.option("--dataset", required=True, help="BEIR dataset name (on $PYSERINI_QPEFT_DATA) or folder.")
@click.option("--split", default="train", show_default=True, help="Qrels split to take pairs from (the test split is refused).")
@click.option("--pairs", type=click.IntRange(min=1), default=500, show_default=True, help="Max (query, relevant doc) pairs.")
@click.option("--uniformity-texts", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Max texts (queries + docs of the pairs) for the uniformity estimate.")
@click.option("--pooling", type=click.Choice(["mean", "last"]), default="mean", show_default=True)
@click.option("--max-length", type=click.IntRange(min=4), default=256, show_default=True, help="Token budget per text.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", type=int, default=_T("seed"), show_default=True)
@click.option("--include-embeddings", is_flag=True,
              help="Let layer 0 (the input embeddings) be chosen too (an ablation; default: transformer layers only).")
@click.option("--output", type=OutputPath(file_okay=False), default=None,
              help="Folder for layer_report.json and layers.png (default runs/lmort-layers.beir-<dataset>, the name `repro beir` uses).")
@lm_options
@quiet_option
def analyze(dataset, split, pairs, uniformity_texts, pooling, max_length, batch_size, seed, include_embeddings, output,
            model, device, dtype, quiet) -> None:
    """Alignment and uniformity of every layer; prints the best-aligned and the most uniform layer."""
    from ..data import BeirDataset
    from ..lm.backbone import FrozenLM, LMConfig
    from ..lmort.analysis import run_analysis
    from ..training.data import check_split

    check_split(split)
    data = BeirDataset.find(dataset)
    out = Path(output) if output else Path("runs") / f"lmort-layers.beir-{data.name}"
    lm = FrozenLM.load(LMConfig(model=model, device=device, dtype=dtype))
    report = run_analysis(lm, data, split, pairs, uniformity_texts, pooling, max_length, batch_size, seed, out,
                          progress=not quiet, include_embeddings=include_embeddings)
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
@click.option("--split", default="train", show_default=True,
              help="Qrels split with the training queries (the test split is refused).")
@click.option("--negatives", type=click.Path(exists=True, dir_okay=False), default=None,
              help="First-stage TREC run on the training queries (BM25); its top unjudged docs are hard negatives.")
@click.option("--layers", default="auto", show_default=True,
              help="'auto' (from --analysis, or a fresh analysis on the training split) or 'ALIGN,UNIF' (0 = the "
                   "input embeddings, an ablation; one layer twice = a single-layer tuner).")
@click.option("--analysis", type=click.Path(exists=True, dir_okay=False), default=None,
              help="layer_report.json from `lmort analyze` (used with --layers auto).")
@click.option("--output", required=True, type=OutputPath(file_okay=False),
              help="Output folder: best/ (what encode loads; lmort:OUTPUT finds it), epoch-N/, trainer_state.json.")
@optimizer_options(_T, "Queries per step.")
@click.option("--warmup-ratio", type=click.FloatRange(0, 1, max_open=True), default=_T("warmup_ratio"),
              show_default=True, help="LR warmup share of all steps (then --lr-schedule).")
@click.option("--hard-negatives", type=click.IntRange(min=0), default=_T("hard_negatives"), show_default=True,
              help="Per query per step.")
@click.option("--negative-depth", type=click.IntRange(min=1), default=_T("negative_depth"), show_default=True,
              help="Hard negatives are drawn from this many top-ranked unjudged run docs.")
@click.option("--negative-policy", type=click.Choice(NEGATIVE_POLICIES), default=_T("negative_policy"),
              show_default=True, help="unjudged: judged docs are never negatives; non-relevant: judged-0 docs are.")
@click.option("--pseudo-queries", type=click.IntRange(min=0), default=_T("pseudo_queries"), show_default=True,
              help="Pseudo pairs per step besides the queries: a sentence of a corpus document as the query, the "
                   "document as its positive, drawn over the whole corpus (beyond the paper; 0 = none).")
@click.option("--pseudo-positive", type=click.Choice(POSITIVES), default=_T("pseudo_positive"), show_default=True,
              help="A pseudo pair's positive: the whole document, or the document without the query's sentence "
                   "(rest: the inverse cloze task).")
@click.option("--pseudo-epochs", type=click.IntRange(min=1), default=_T("pseudo_epochs"),
              help="Pseudo pairs only in the first this many epochs, then the training queries alone "
                   "(default: every epoch).")
@click.option("--dev-fraction", type=click.FloatRange(0, 0.9), default=_T("dev_size"), show_default=True,
              help="Share of the training queries held out as dev (0 = none: best/ = lowest training loss).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop after this many optimizer steps in total (the linear schedule then decays to 0 there).")
@click.option("--patience", type=click.IntRange(min=1), default=_T("patience"),
              help="Stop after this many epochs without a better dev MRR@10 (default: never).")
@eval_every_option(_T)
@click.option("--num-blocks", type=click.IntRange(min=1), default=_tuner_default("num_blocks"), show_default=True)
@click.option("--num-heads", type=click.IntRange(min=1), default=_tuner_default("num_heads"), show_default=True)
@click.option("--dim", type=click.IntRange(min=0), default=_tuner_default("dim"), show_default=True,
              help="Tuner width (0 = LM hidden size).")
@click.option("--ffn-dim", type=click.IntRange(min=1), default=_tuner_default("ffn_dim"), show_default=True)
@click.option("--out-dim", type=click.IntRange(min=0), default=_tuner_default("out_dim"), show_default=True,
              help="Embedding size (0 = --dim).")
@click.option("--pooling", type=click.Choice(["mean", "last"]), default=_tuner_default("pooling"), show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=_tuner_default("temperature"),
              show_default=True)
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=_tuner_default("dropout"),
              show_default=True, help="Dropout inside the tuner (0: data-parallel runs match one process bit for bit "
                                      "up to float rounding).")
@click.option("--max-length", type=click.IntRange(min=4), default=_tuner_default("max_length"), show_default=True,
              help="Tokens per text.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Where LM states are cached (default OUTPUT/state-cache).")
@click.option("--seed", type=int, default=_T("seed"), show_default=True)
@click.option("--dev-seed", type=int, default=None, help="Seed of the dev carve only (default: --seed).")
@dev_carve_option
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUTPUT.")
@lm_options
@quiet_option
def train(dataset, split, negatives, layers, analysis, output, epochs, batch_size, lr, weight_decay, lr_schedule,
          warmup_ratio, hard_negatives, negative_depth, negative_policy, pseudo_queries, pseudo_positive,
          pseudo_epochs, dev_fraction, max_steps, patience, eval_every, num_blocks, num_heads, dim, ffn_dim, out_dim,
          pooling, temperature, dropout, max_length, cache_dir, seed, dev_seed, dev_carve, resume, model, device, dtype,
          quiet) -> None:
    """Train an LMORT tuner (InfoNCE, in-batch + BM25 hard negatives); the best epoch on dev lands in OUTPUT/best."""
    from ..data import BeirDataset
    from ..errors import InputError
    from ..lm.backbone import FrozenLM, LMConfig, model_for_identity
    from ..lmort.analysis import choose_layers
    from ..lmort.train import lmort_training_data, train_lmort
    from ..training.data import check_split
    from ..training.parallel import DataParallel
    from ..training.state import check_training_output
    from ..types import read_run

    check_split(split)
    if not pseudo_queries and given_on_command_line("pseudo_epochs", "pseudo_positive"):
        click.echo("warning: --pseudo-epochs/--pseudo-positive shape the pseudo pairs of --pseudo-queries N; with "
                   "--pseudo-queries 0 there are none and they do nothing", err=True)
    check_training_output(output)
    parallel = DataParallel.from_environment(device)
    with parallel.closing():  # every rank ends together (see training.parallel)
        quiet = quiet or not parallel.is_main
        chosen = _parse_layers(layers)
        train_config = LMORTTrainConfig.build(
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule,
            warmup_ratio=warmup_ratio, eval_every=eval_every,
            hard_negatives=hard_negatives, negative_depth=negative_depth, negative_policy=negative_policy,
            pseudo_queries=pseudo_queries, pseudo_positive=pseudo_positive,
            pseudo_epochs=pseudo_epochs, dev_size=dev_fraction, max_steps=max_steps, patience=patience,
            seed=seed, dev_seed=dev_seed, dev_carve=dev_carve)
        data = BeirDataset.find(dataset)
        out = Path(output)
        lm = FrozenLM.load(LMConfig(model=model, device=device, dtype=dtype))
        if chosen is None:  # rank 0 analyses, the other ranks take its choice
            if parallel.is_main:
                chosen = choose_layers(lm, data, split, analysis, pooling, max_length, seed, out / "analysis",
                                       progress=not quiet)
            chosen = parallel.broadcast(chosen)
        try:
            config = LMORTConfig(align_layer=chosen[0], unif_layer=chosen[1], num_blocks=num_blocks,
                                 num_heads=num_heads, dim=dim, ffn_dim=ffn_dim, out_dim=out_dim, pooling=pooling,
                                 temperature=temperature, dropout=dropout, max_length=max_length)
        except ValueError as exc:
            raise InputError(f"bad LMORT setting: {exc}") from None
        run = read_run(negatives) if negatives else None
        examples, stats, texts, pseudo = lmort_training_data(data, split, run, train_config, progress=not quiet)
        if not quiet:
            click.echo(stats.summary(), err=True)
        start = time.time()
        summary = train_lmort(lm, examples, texts, config, train_config, out, cache_dir=cache_dir, resume=resume,
                              progress=not quiet,
                              extra_meta={"command": command_line(), "lm_model": model_for_identity(lm.model_id),
                                          "dataset": str(data.path),
                                          "split": split,
                                          "negatives": str(Path(negatives).resolve()) if negatives else None},
                              parallel=parallel, pseudo=pseudo)
        if not parallel.is_main:
            return
        click.echo(json.dumps({"output": str(out), "best": summary["best"], "layers": list(chosen),
                               "best_epoch": summary["best_epoch"], "trainable_percent": summary["trainable_percent"],
                               "seconds": round(time.time() - start, 1)}))
