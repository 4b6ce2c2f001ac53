"""`pyserini-qpeft train qpeft`: train a Q-PEFT hint module (or the prompt-tuning baseline) on a frozen LLM.

Other trainers (LMORT) add their commands to the same ``train`` group.
"""
from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from pathlib import Path

import click

from ..errors import InputError

from .options import lm_options, quiet_option

logger = logging.getLogger(__name__)


train = click.Group("train", help="Train a Q-PEFT module or an LMORT tuner on a frozen LLM.")


@train.command("qpeft")
@click.option("--variant", type=click.Choice(["attn", "retr", "prompt"]), default="attn", show_default=True,
              help="attn = Q-PEFT-A, retr = Q-PEFT-R, prompt = query-independent soft prompt (ablation).")
@click.option("--dataset", required=True, help="BEIR dataset name (on $PYSERINI_QPEFT_DATA) or folder.")
@click.option("--split", default="train", show_default=True,
              help="Qrels split with the training queries (the test split is refused).")
@click.option("--negatives", "negatives_run", required=True, type=click.Path(exists=True, dir_okay=False),
              help="First-stage TREC run over the training queries (hard negatives = top non-relevant hits).")
@click.option("--output", required=True, type=click.Path(file_okay=False),
              help="Output folder: epoch-N/ checkpoints, best/ (load this), trainer_state.json.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Queries per step; each query's negatives are 1 hard + the others' positives.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--margin", type=click.FloatRange(min=0), default=0.2, show_default=True,
              help="Hinge margin on the query NLL (nats per token).")
@click.option("--negatives-per-query", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--hard-pool", type=click.IntRange(min=1), default=10, show_default=True,
              help="Sample hard negatives from this many top-ranked non-relevant run documents.")
@click.option("--no-in-batch", is_flag=True, help="Do not use other queries' positives as negatives.")
@click.option("--top-k", type=click.IntRange(min=1), default=16, show_default=True, help="retr: hint tokens.")
@click.option("--num-heads", type=click.IntRange(min=1), default=2, show_default=True, help="attn: heads.")
@click.option("--num-virtual-tokens", type=click.IntRange(min=1), default=16, show_default=True,
              help="prompt: learned vectors.")
@click.option("--prompt-init", type=click.Choice(["vocab", "text"]), default="vocab", show_default=True)
@click.option("--dev-size", type=click.IntRange(min=1), default=None,
              help="Dev queries carved from the training queries (default: 10 %).")
@click.option("--dev-depth", type=click.IntRange(min=1), default=20, show_default=True,
              help="Dev rerank candidates: positives + the run's top N.")
@click.option("--max-train-queries", type=click.IntRange(min=1), default=None,
              help="Use a seeded sample of this many training queries per epoch.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps in total.")
@click.option("--max-passage-tokens", type=click.IntRange(min=8), default=128, show_default=True)
@click.option("--instruction", default="", help="Instruction text before the passage (default none, as UPR).")
@click.option("--selection-metric", type=click.Choice(["ndcg@10", "mrr@10", "loss"]), default="ndcg@10",
              show_default=True, help="Dev metric that picks best/.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --output after its last completed epoch.")
@lm_options
@quiet_option
def train_qpeft(variant, dataset, split, negatives_run, output, epochs, batch_size, lr, margin, negatives_per_query,
                hard_pool, no_in_batch, top_k, num_heads, num_virtual_tokens, prompt_init, dev_size, dev_depth,
                max_train_queries, max_steps, max_passage_tokens, instruction, selection_metric, seed, resume,
                model, device, dtype, quiet) -> None:
    """Train on (query, positive, BM25 hard negative) triples of --split; select by a dev set carved from it."""
    import torch

    from ..backbone import FrozenLM, LMConfig
    from ..data import BeirDataset, find_dataset
    from ..qpeft import QPeftConfig, build_module, parameter_report
    from ..scoring import ScorerConfig
    from ..training.data import build_examples, check_split, split_dev
    from ..training.loop import TrainConfig, read_trainer_state
    from ..training.loop import train as run_training
    from ..types import read_run

    check_split(split)
    torch.manual_seed(seed)
    ds = BeirDataset(find_dataset(dataset))
    corpus = ds.load_corpus(progress=not quiet)
    examples, stats = build_examples(ds.queries(), ds.qrels(split), read_run(negatives_run), corpus,
                                     negative_depth=max(hard_pool, dev_depth), candidate_depth=dev_depth)
    click.echo(f"{stats.kept} training queries with a positive and a hard negative "
               f"({stats.queries - stats.kept} skipped: {stats.no_positive} without positive, "
               f"{stats.not_in_run} not in the run, {stats.no_negative} without negative)", err=True)
    train_ex, dev_ex = split_dev(examples, dev_size if dev_size is not None else 0.1, seed)
    qcfg = QPeftConfig(variant=variant, top_k=top_k, num_heads=num_heads, num_virtual_tokens=num_virtual_tokens,
                       prompt_init=prompt_init, seed=seed)
    scfg = ScorerConfig(instruction=instruction, max_passage_tokens=max_passage_tokens)
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, margin=margin,
                       negatives_per_query=negatives_per_query, hard_pool=hard_pool, in_batch=not no_in_batch,
                       seed=seed, max_steps=max_steps, max_train_queries=max_train_queries, dev_depth=dev_depth,
                       selection_metric=selection_metric)
    lm = FrozenLM.load(LMConfig(model=model, device=device, dtype=dtype))
    if resume and read_trainer_state(output) is not None and (Path(output) / "epoch-1").is_dir():
        from ..checkpoint import read_meta

        if read_meta(Path(output) / "epoch-1")["qpeft_config"] != qcfg.to_dict():
            raise InputError(f"--resume with other module settings than the run in {output}")
    module = build_module(lm, qcfg)
    report = parameter_report(module, lm)
    click.echo(f"{variant}: {report['trainable']:,} trainable parameters = {report['percent_of_lm']:.2f} % of the "
               f"LM's {report['lm']:,}; {len(train_ex)} train / {len(dev_ex)} dev queries", err=True)
    command = "pyserini-qpeft " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    meta = {"training": {"command": command, "dataset": str(ds.path), "split": split, "negatives": negatives_run,
                         "skipped": {"no_positive": stats.no_positive, "not_in_run": stats.not_in_run,
                                     "no_negative": stats.no_negative}}}
    t0 = time.time()
    result = run_training(lm, module, qcfg, scfg, train_ex, dev_ex, corpus, tcfg, output, resume=resume,
                          progress=not quiet, metadata=meta)
    wall = time.time() - t0
    best = next(h for h in result.history if h["epoch"] == result.best_epoch)
    summary = {"best": str(result.best_dir), "best_epoch": result.best_epoch, "wall_seconds": round(wall, 1),
               "train_seconds": round(result.train_seconds, 1),
               "dev": {k: round(best["dev"][k], 4) for k in ("ndcg@10", "mrr@10", "loss")},
               "dev_upr": {k: round(v, 4) for k, v in result.dev_baseline.items()
                           if k in ("ndcg@10", "mrr@10", "loss")},
               "trainable_parameters": report["trainable"], "percent_of_lm": round(report["percent_of_lm"], 3)}
    click.echo(json.dumps(summary, indent=2))


def _add_lmort() -> None:
    """``train lmort`` is the same command as ``lmort train`` (one implementation, two spellings)."""
    from .lmort import train as lmort_train

    train.add_command(lmort_train, "lmort")


_add_lmort()
