"""`pyserini-qpeft train qpeft`: train a Q-PEFT hint module (or the prompt-tuning baseline) on a frozen LLM.

Other trainers (LMORT) add their commands to the same ``train`` group. Both train data-parallel when started by
``accelerate launch --multi_gpu --num_processes N -m pyserini_qpeft train ...`` (see ``training.parallel``).
"""
from __future__ import annotations

import json

import click

from ..qpeft.config import ATTN_INITS, MLPS, PROMPT_INITS, TOKEN_FILTERS, VARIANTS, QPeftConfig
from ..qpeft.step import DEV_POOLS, LOSSES, SELECTION_METRICS, QPeftTrainConfig
from ..training.data import NEGATIVE_POLICIES
from ..rerank.flags import prompt_flag
from .main import command_line
from .options import (OutputPath, click_option, dev_carve_option, eval_every_option, field_default,
                      given_on_command_line, lm_options, optimizer_options, quiet_option, scorer_option)

train = click.Group("train", help="Train a Q-PEFT module or an LMORT tuner on a frozen LLM.")


_Q = QPeftTrainConfig.default


def _M(name: str):
    """Default of a module flag: :class:`~pyserini_qpeft.qpeft.config.QPeftConfig`'s."""
    return field_default(QPeftConfig, name)


# flags that only one variant or loss reads: given for another, they would be recorded in the checkpoint unused
_VARIANT_FLAGS = {"top_k": ("--top-k", "retr"), "token_filter": ("--token-filter", "retr"),
                  "num_heads": ("--num-heads", "attn"), "attn_init": ("--attn-init", "attn"),
                  "num_virtual_tokens": ("--num-virtual-tokens", "prompt")}
_LOSS_FLAGS = {"margin": ("--margin", "hinge"), "temperature": ("--temperature", "listwise")}


def _warn_unused_flags(variant: str, loss: str) -> None:
    """A warning for each flag given on the command line that this variant or loss does not read."""
    for name in sorted(given_on_command_line(*_VARIANT_FLAGS, *_LOSS_FLAGS)):
        flag, applies = _VARIANT_FLAGS.get(name) or _LOSS_FLAGS[name]
        current = variant if name in _VARIANT_FLAGS else loss
        if current != applies:
            kind = "--variant" if name in _VARIANT_FLAGS else "--loss"
            click.echo(f"warning: {flag} applies to {kind} {applies} only; {kind} {current} does not read it",
                       err=True)


@train.command("qpeft")
@click.option("--variant", type=click.Choice(VARIANTS), default=_M("variant"), show_default=True,
              help="attn = Q-PEFT-A, retr = Q-PEFT-R, prompt = query-independent prompt tuning.")
@click.option("--dataset", required=True, help="BEIR dataset name (on $PYSERINI_QPEFT_DATA) or folder.")
@click.option("--split", default="train", show_default=True,
              help="Qrels split with the training queries (the test split is refused).")
@click.option("--negatives", "negatives_run", required=True, type=click.Path(exists=True, dir_okay=False),
              help="First-stage TREC run over the training queries (hard negatives = top non-relevant hits).")
@click.option("--output", required=True, type=OutputPath(file_okay=False),
              help="Output folder: epoch-N/ checkpoints, best/ (load this), trainer_state.json.")
@optimizer_options(_Q, "Queries per step; each query's negatives are 1 hard + the others' positives.")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=_Q("warmup_steps"), show_default=True,
              help="Linear LR warmup steps (then --lr-schedule).")
@click.option("--loss", "loss_name", type=click.Choice(LOSSES), default=_Q("loss"), show_default=True,
              help="hinge: the papers' pairwise hinge; listwise (beyond the papers): per query, softmax "
                   "cross-entropy of the positive against all its negatives of the step. Both add the pointwise term.")
@click.option("--margin", type=click.FloatRange(min=0), default=_Q("margin"), show_default=True,
              help="Hinge margin on the query NLL (nats per token; --loss hinge).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=_Q("temperature"),
              show_default=True, help="--loss listwise: logits = -NLL / temperature.")
@click.option("--first-stage-weight", type=click.FloatRange(min=0), default=_Q("first_stage_weight"),
              show_default=True,
              help="Beyond the papers (--loss hinge): the hinge compares -NLL + W * z(--negatives' score), as the "
                   "reranker is interpolated with its first stage; 0 = the LM's score alone.")
@click.option("--first-stage-depth", type=click.IntRange(min=1), default=_Q("first_stage_depth"), show_default=True,
              help="--first-stage-weight: z-scores over each query's top N hits (the rerank depth).")
@click.option("--negatives-per-query", type=click.IntRange(min=1), default=_Q("negatives_per_query"),
              show_default=True)
@click.option("--hard-pool", type=click.IntRange(min=1), default=_Q("hard_pool"), show_default=True,
              help="Sample hard negatives from this many top-ranked non-relevant run documents.")
@click.option("--negative-policy", type=click.Choice(NEGATIVE_POLICIES), default=_Q("negative_policy"),
              show_default=True, help="non-relevant: any run doc not judged relevant; unjudged: judged docs excluded.")
@click.option("--no-in-batch", is_flag=True, help="Do not use other queries' positives as negatives.")
@click.option("--top-k", type=click.IntRange(min=1), default=_M("top_k"), show_default=True, help="retr: hint tokens.")
@click.option("--token-filter", type=click.Choice(TOKEN_FILTERS), default=_M("token_filter"), show_default=True,
              help="retr: tokens never picked as hints: special tokens, or also punctuation/digits/stop-words (content).")
@click.option("--query-proj/--no-query-proj", default=_M("query_proj"), show_default=True,
              help="retr: a trainable query-side map in the token similarity (the paper's learnable embedding copy).")
@click.option("--num-heads", type=click.IntRange(min=1), default=_M("num_heads"), show_default=True, help="attn: heads.")
@click.option("--attn-init", type=click.Choice(ATTN_INITS), default=_M("attn_init"), show_default=True,
              help="attn: identity (soft token matching at step 0) or xavier (the paper's random init).")
@click.option("--mlp", type=click.Choice(MLPS), default=_M("mlp"), show_default=True,
              help="Hint MLP: residual (x + MLP(x), starts near x) or plain (the paper's Linear-ReLU-Linear).")
@click.option("--num-virtual-tokens", type=click.IntRange(min=1), default=_M("num_virtual_tokens"), show_default=True,
              help="prompt: learned vectors.")
@click.option("--prompt-tokens", type=click.IntRange(min=0), default=_M("prompt_tokens"), show_default=True,
              help="retr/attn: also this many query-independent learned vectors ahead of the hints (0 = the paper's "
                   "module; the prompt variant is the query-independent part alone).")
@click.option("--prompt-init", type=click.Choice(PROMPT_INITS), default=_M("prompt_init"), show_default=True)
@click.option("--pointwise-weight", type=click.FloatRange(min=0), default=_Q("pointwise_weight"), show_default=True,
              help="Weight of the pointwise NLL(q|d+) term next to the pairwise hinge (1.0 = the paper's 1:1).")
@click.option("--dev-size", type=click.IntRange(min=1), default=None,
              help=f"Dev queries carved from the training queries (default: {_Q('dev_size'):.0%}).")
@click.option("--dev-depth", type=click.IntRange(min=1), default=_Q("dev_depth"), show_default=True,
              help="Dev rerank candidates: the run's top N (+ positives, see --dev-pool).")
@click.option("--dev-pool", type=click.Choice(DEV_POOLS), default=_Q("dev_pool"), show_default=True,
              help="In-training dev ranking: positives+run adds each dev query's positives to the run's top "
                   "--dev-depth (the recorded measure); run ranks only those, the footing of a test rerank.")
@click.option("--max-train-queries", type=click.IntRange(min=1), default=None,
              help="Use a seeded sample of this many training queries per epoch.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps in total.")
@scorer_option("max_passage_tokens", type=click.IntRange(min=8),
               help="Passage truncation budget in tokens, stored in the checkpoint (reranking uses the same).")
@scorer_option("max_query_tokens", type=click.IntRange(min=4),
               help="Query truncation budget in tokens, stored in the checkpoint (reranking uses the same).")
@click.option("--hint-passage-tokens", type=click.IntRange(min=1), default=None,
              help="The hint module reads the passage's first N tokens instead of the LM's --max-passage-tokens "
                   "(beyond the papers: N larger lets it bring in text the LM's passage cut away; the prompt and "
                   "its cost per pair are unchanged). Stored in the checkpoint.  [default: the LM's passage]")
@click.option("--instruction", default="", help="Instruction text before the passage (default none, as UPR).")
@click_option(prompt_flag("The prompt's wording (question: UPR's; claim: for fact-checking datasets such as "
                          "SciFact), stored in the checkpoint: reranking uses the same.", default="question"))
@click.option("--selection-metric", type=click.Choice(SELECTION_METRICS), default=_Q("selection_metric"),
              show_default=True, help="Dev metric that picks best/.")
@click.option("--patience", type=click.IntRange(min=1), default=_Q("patience"),
              help="Stop after this many epochs without a better dev metric (default: never).")
@eval_every_option(_Q)
@click.option("--seed", type=int, default=_Q("seed"), show_default=True)
@dev_carve_option
@click.option("--dev-seed", type=int, default=None,
              help="Seed of the dev carve only (default: --seed), so that seeds of one row hold out the same dev "
                   "queries.")
@click.option("--resume", is_flag=True, help="Continue the run in --output after its last completed epoch.")
@click.option("--dev-cache-gb", type=click.FloatRange(min=0), default=None,
              help="Memory for the dev pairs' prompt-prefix caches, kept between dev evaluations (and sweep points) so "
                   "that only the first evaluation runs the passages through the LM; scores are unchanged "
                   "(default: a quarter of the free memory; 0 = off).")
@click.option("--select-interpolation/--no-select-interpolation", default=True, show_default=True,
              help="After training, rerank the dev queries' first-stage top --dev-depth with best/ and store the "
                   "first-stage interpolation weight they select in the checkpoint (what `rerank --interpolate auto` "
                   "uses). `repro` turns it off where it selects its weights on its own dev reranks (make demo).")
@click.option("--sweep", "sweep_grid", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML grid (setting -> list of values): train every combination into OUTPUT/sweep/, copy the one "
                   "with the best dev metric to OUTPUT/best/, write OUTPUT/sweep.{json,md}. Resumes.")
@lm_options
@quiet_option
def train_qpeft(variant, dataset, split, negatives_run, output, epochs, batch_size, lr, weight_decay, warmup_steps,
                lr_schedule, loss_name, margin, temperature, first_stage_weight, first_stage_depth,
                negatives_per_query, hard_pool, negative_policy, no_in_batch, top_k, token_filter, query_proj,
                num_heads, attn_init, mlp, num_virtual_tokens,
                prompt_tokens, prompt_init, pointwise_weight, dev_size, dev_depth, dev_pool, max_train_queries,
                max_steps, max_passage_tokens, max_query_tokens, hint_passage_tokens, instruction, prompt, selection_metric, patience,
                eval_every, seed,
                dev_carve, dev_seed, resume, dev_cache_gb, select_interpolation, sweep_grid, model, device, dtype,
                quiet) -> None:
    """Train on (query, positive, BM25 hard negative) triples of --split; select by a dev set carved from it."""
    from ..lm.backbone import LMConfig
    from ..lm.prompts import prompt_fields
    from ..lm.scoring import ScorerConfig
    from ..qpeft.train import QPeftJob, run_qpeft_job
    from ..training.data import check_split
    from ..training.state import check_training_output

    check_split(split)
    _warn_unused_flags(variant, loss_name)
    if hint_passage_tokens is not None and variant == "prompt":
        raise click.BadParameter("the prompt variant's vectors read no passage", param_hint="--hint-passage-tokens")
    check_training_output(output, sweep=sweep_grid is not None)
    tcfg = QPeftTrainConfig.build(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        lr_schedule=lr_schedule, loss=loss_name, margin=margin, temperature=temperature,
        first_stage_weight=first_stage_weight, first_stage_depth=first_stage_depth,
        pointwise_weight=pointwise_weight, negatives_per_query=negatives_per_query,
        hard_pool=hard_pool, in_batch=not no_in_batch,
        negative_policy=negative_policy, seed=seed, dev_seed=dev_seed, max_steps=max_steps,
        max_train_queries=max_train_queries, dev_depth=dev_depth, dev_pool=dev_pool,
        selection_metric=selection_metric, patience=patience, eval_every=eval_every,
        dev_size=dev_size if dev_size is not None else _Q("dev_size"), dev_carve=dev_carve)
    try:  # the module's settings are checked before the corpus and the LM load
        qcfg = QPeftConfig(variant=variant, top_k=top_k, num_heads=num_heads,
                           num_virtual_tokens=num_virtual_tokens, prompt_init=prompt_init, seed=seed,
                           attn_init=attn_init, mlp=mlp, token_filter=token_filter, query_proj=query_proj,
                           prompt_tokens=prompt_tokens)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    scfg = ScorerConfig(instruction=instruction, max_passage_tokens=max_passage_tokens,
                        max_query_tokens=max_query_tokens, hint_passage_tokens=hint_passage_tokens,
                        **prompt_fields(prompt))
    job = QPeftJob(dataset=dataset, negatives=negatives_run, output=output, module=qcfg, train=tcfg, scorer=scfg,
                   lm=LMConfig(model=model, device=device, dtype=dtype), split=split, resume=resume,
                   sweep=sweep_grid, select_interpolation=select_interpolation, dev_cache_gb=dev_cache_gb,
                   command=command_line(), progress=not quiet)
    summary = run_qpeft_job(job, echo=lambda line: click.echo(line, err=True))
    if summary is not None:  # the process that writes files reports
        click.echo(json.dumps(summary, indent=2))


def _add_lmort() -> None:
    """``train lmort`` is the same command as ``lmort train`` (one implementation, two spellings)."""
    from .lmort import train as lmort_train

    train.add_command(lmort_train, "lmort")


_add_lmort()
