"""Training an LMORT tuner: cache the frozen LM's layer states once, then run the shared loop over the tuner.

Examples come from :func:`pyserini_qpeft.training.data.build_examples` with LMORT's negative policy
(``"unjudged"``: judged documents are never negatives) and without requiring a hard negative; the dev split is
:func:`pyserini_qpeft.training.data.split_dev` (the same function Q-PEFT uses; dev metrics go through
:mod:`pyserini_qpeft.evaluation`: MRR@10, R@10 and nDCG@10 of each dev query over the dev pool).

Output folder layout (the shared one of :mod:`pyserini_qpeft.training.state`)::

    best/                                  lmort_config.json + lmort_model.safetensors of the best epoch
                                           (``encode --encoder lmort:OUTPUT`` and ``load_lmort(OUTPUT)`` use it)
    epoch-N/                               every epoch's tuner + optimizer.safetensors + optimizer.json
    trainer_state.json                     history, best epoch, for --resume
    train_summary.json                     best epoch, parameter share, timings
    state-cache/                           cached LM states (reusable across runs with the same key)

Changed from the first LMORT trainer (numbers of a re-run differ): the dev split is Q-PEFT's ``split_dev``
(positions drawn by ``random.Random(seed).sample`` in qrels order, instead of a shuffle of the qids; a fraction
now gives at least one dev query), data order and sampling use the shared per-epoch seeds (so resume is exact),
hard negatives are the top ``negative_depth`` *after* removing judged documents, the tuner of the best epoch is
in ``best/`` instead of the folder root, epochs in ``epoch-N/`` instead of ``epochs/epoch-NNN/``, and the
optimizer state is saved per epoch in the shared format (the learning rate is a function of the step, so there
is no scheduler state).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..artifacts import write_json
from ..errors import InputError
from ..training.data import BuildStats, TrainingExample, load_training_data, split_dev
from ..training.state import read_trainer_state
from .cache import DOC_KEY, PSEUDO_KEY, QUERY_KEY, REST_KEY, StateCache, state_key
from .pseudo import PseudoPair, pseudo_pairs
from .step import LMORTStep, LMORTTrainConfig
from .tuner import LMORTConfig, LMORTTuner, check_layers

if TYPE_CHECKING:
    from ..data import BeirDataset
    from ..lm.backbone import FrozenLM
    from ..training.parallel import DataParallel
    from ..types import Run

logger = logging.getLogger(__name__)

OLD_STATE = "train_state.json"  # the first LMORT trainer's state file (its layout cannot be resumed)


def lmort_training_data(dataset: "BeirDataset", split: str, negatives: "Run | None", config: LMORTTrainConfig,
                        progress: bool = False
                        ) -> tuple[list[TrainingExample], BuildStats, dict[str, str], dict[str, PseudoPair]]:
    """Examples of ``split`` (never test), the text of every document they use and, with
    ``config.pseudo_queries``, every corpus document's pseudo pair (:mod:`.pseudo`).

    Returns:
        ``(examples, stats, texts, pseudo)``; ``texts`` maps docid -> ``Document.contents()`` (also of every
        :func:`pseudo_documents` document), ``pseudo`` docid -> :class:`~.pseudo.PseudoPair` (empty without).
    """
    examples, stats, corpus = load_training_data(dataset, split, negatives, config.negative_depth,
                                                 negative_policy=config.negative_policy, require_negative=False,
                                                 progress=progress)
    pseudo = pseudo_pairs(corpus) if config.pseudo_queries else {}
    used = {d for e in examples for d in (*e.positives, *e.negatives)} | pseudo_documents(pseudo, config)
    return examples, stats, {d: corpus[d].contents() for d in sorted(used)}, pseudo


def pseudo_documents(pseudo: Mapping[str, PseudoPair], train: LMORTTrainConfig) -> set[str]:
    """Docids whose whole text (``d:``) pseudo pairs use as positives: all of ``pseudo`` with
    ``pseudo_positive="document"`` and pseudo pairs on, none otherwise (``rest`` positives are the pairs' own text)."""
    return set(pseudo) if train.pseudo_queries and train.pseudo_positive == "document" else set()


def train_lmort(lm: "FrozenLM", examples: Sequence[TrainingExample], corpus: Mapping[str, str],
                config: LMORTConfig, train: LMORTTrainConfig, output: str | os.PathLike,
                cache_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = True,
                extra_meta: dict[str, Any] | None = None, parallel: "DataParallel | None" = None,
                pseudo: Mapping[str, PseudoPair] | None = None) -> dict[str, Any]:
    """Train an LMORT tuner; returns a summary (best epoch, dev metrics, parameter share, timings).

    Args:
        lm: the frozen LM (run once per text to fill the state cache).
        examples: training queries with positives and hard negatives (:func:`lmort_training_data`); the dev set
            is carved from them with ``split_dev(examples, train.dev_size, train.carve_seed, train.dev_carve)``.
        corpus: docid -> document text (the docs the examples use, and :func:`pseudo_documents`).
        config: the tuner's shape.
        train: optimisation and sampling settings.
        output: the training output folder (layout in the module docstring).
        cache_dir: where LM states are cached (default ``output/state-cache``).
        resume: continue after the last completed epoch.
        extra_meta: extra JSON for every checkpoint (``lm_model``, dataset, split, negatives run).
        parallel: data-parallel place (``training.parallel``): ranks share the state caching and every batch;
            rank 0 writes.
        pseudo: docid -> pseudo pair (:func:`lmort_training_data`); drawn from when ``train.pseudo_queries`` > 0.
    """
    import torch

    from ..training.parallel import SINGLE
    from ..training.trainer import fit

    parallel = parallel or SINGLE
    progress = progress and parallel.is_main
    check_layers(config, lm)
    output = Path(output)
    if (output / OLD_STATE).exists():
        raise InputError(f"{output} holds a run of the old LMORT trainer (train_state.json), which cannot be "
                         "resumed or extended; choose another --output", str(output))
    state = read_trainer_state(output)
    if state is not None and not resume:  # fail before the (long) caching
        raise InputError("already holds a training run; pass --resume to continue it or choose another "
                         "--output", str(output))
    saved = ((state or {}).get("step") or {}).get("lmort_config")
    if resume and isinstance(saved, dict) and saved != config.to_dict():  # before the cache blames itself
        now = config.to_dict()
        diffs = [f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted({*saved, *now})
                 if saved.get(k) != now.get(k)]
        raise InputError(f"--resume with other tuner settings than this folder's run: {', '.join(diffs)}; give the "
                         f"same flags (--layers, --max-length, ...), or another --output", str(output))
    started = time.time()
    train_set, dev_set = split_dev(examples, train.dev_size, train.carve_seed, train.dev_carve)
    depth = train.negative_depth
    pseudo = dict(pseudo or {}) if train.pseudo_queries else {}
    whole = pseudo_documents(pseudo, train)
    missing = sorted(whole - set(corpus))
    if missing:
        raise InputError(f"{len(missing)} pseudo-query documents have no text in the corpus given (e.g. {missing[0]})")
    doc_ids = sorted({d for e in examples for d in (*e.positives, *e.negatives[:depth])} | whole)
    # Dev queries are ranked against their own positives and hard negatives (a small, hard pool).
    dev_pool = sorted({d for e in dev_set for d in (*e.positives, *e.negatives[:depth])})
    if dev_set and not any(e.negatives for e in dev_set):  # no --negatives: a pool of their own positives ranks
        # every one first at every epoch (best/ = epoch 1); every training positive makes the distractors instead
        dev_pool = sorted({d for e in examples for d in e.positives})
        logger.warning("no hard negatives (--negatives): dev queries are ranked against every training positive "
                       "(%d documents) to select the epoch", len(dev_pool))
    texts = {f"{QUERY_KEY}{e.qid}": e.query for e in examples}
    texts.update({f"{DOC_KEY}{d}": corpus[d] for d in doc_ids})
    texts.update({f"{PSEUDO_KEY}{d}": pair.query for d, pair in pseudo.items()})
    if train.pseudo_positive == "rest":
        texts.update({f"{REST_KEY}{d}": pair.rest for d, pair in pseudo.items()})
    cache = StateCache(cache_dir or output / "state-cache", state_key(lm, config.layers, config.max_length))
    t0 = time.time()
    cache.build(lm, texts, config.layers, config.max_length, batch_size=train.cache_batch_size, progress=progress,
                parallel=parallel)
    cache_seconds = time.time() - t0

    torch.manual_seed(train.seed)
    tuner = LMORTTuner(config, lm.hidden_size)
    share = 100.0 * tuner.num_parameters() / lm.num_parameters()
    logger.info("LMORT tuner: %d trainable parameters = %.2f%% of the frozen LM (%d)", tuner.num_parameters(), share,
                lm.num_parameters())
    meta = {"doc_pool": len(doc_ids), "dev_pool": len(dev_pool), **({"pseudo_pairs": len(pseudo)} if pseudo else {}),
            **(extra_meta or {})}
    step = LMORTStep(lm, tuner, config, cache, train, dev_pool, meta, parallel, pseudo_ids=sorted(pseudo))
    result = fit(step, train_set, dev_set, train, output, resume=resume, progress=progress)
    summary = {"best_epoch": result.best_epoch, "best": str(result.best_dir), "best_dev": result.best_dev,
               "history": result.history, "stopped_early": result.stopped_early,
               "trainable_parameters": tuner.num_parameters(), "lm_parameters": lm.num_parameters(),
               "trainable_percent": round(share, 3), "cache_seconds": round(cache_seconds, 1),
               "total_seconds": round(time.time() - started, 1), "train_queries": len(train_set),
               "dev_queries": len(dev_set), **meta}
    if parallel.is_main:
        write_json(output / "train_summary.json", summary)
    return summary
