"""Training a Q-PEFT hint module (or the prompt-tuning baseline) end to end, as `pyserini-qpeft train qpeft` does.

:func:`run_qpeft_job` loads the training split's examples (hard negatives from a first-stage run), carves the dev
queries, loads the frozen LM, trains one configuration (:func:`~pyserini_qpeft.qpeft.step.train_qpeft`) or a
sweep grid (:mod:`.sweep`), and stores the dev-selected first-stage interpolation weight in ``best/``. The CLI
only turns flags into a :class:`QPeftJob`; Python users build one directly::

    from pyserini_qpeft.lm.backbone import LMConfig
    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.qpeft.config import QPeftConfig
    from pyserini_qpeft.qpeft.step import QPeftTrainConfig
    from pyserini_qpeft.qpeft.train import QPeftJob, run_qpeft_job

    summary = run_qpeft_job(QPeftJob(dataset="scifact", negatives="runs/bm25-flat.beir-scifact-train.trec",
                                     output="checkpoints/qpeft-retr", module=QPeftConfig(variant="retr"),
                                     train=QPeftTrainConfig.build(epochs=2), scorer=ScorerConfig(),
                                     lm=LMConfig(dtype="fp32")))
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import InputError, UsageError
from .config import QPeftConfig

if TYPE_CHECKING:
    from ..lm.backbone import LMConfig
    from ..lm.scoring import ScorerConfig
    from .step import QPeftTrainConfig

logger = logging.getLogger(__name__)

# the dev numbers a summary reports (best/'s and the untrained zero-shot UPR's)
REPORTED_DEV = ("ndcg@10", "mrr@10", "loss")


@dataclass
class QPeftJob:
    """One training job.

    Args:
        dataset: BEIR dataset name (on the data search path) or folder.
        negatives: first-stage TREC run over ``split``'s queries (hard negatives and the dev queries' candidates).
        output: training output folder (``best/``, ``epoch-N/``, state; with ``sweep``, ``sweep/`` + tables).
        module: the hint module's settings; train: the training settings; scorer: the prompt and passage budget
            (stored in the checkpoint, used as is at rerank time); lm: the frozen LM to load.
        split: the training split (never a test split).
        resume: continue an interrupted training in ``output`` (a sweep always resumes).
        sweep: YAML grid (setting -> list of values) to train every combination of, keeping the best on dev.
        select_interpolation: store the dev-selected first-stage interpolation weight in ``best/``.
        dev_cache_gb: memory for the dev pairs' prefix caches (None: the default share of free memory; 0: off).
        command: the command line recorded in the checkpoint's provenance.
        progress: progress bars and the lines ``echo`` prints.
    """

    dataset: str | os.PathLike
    negatives: str | os.PathLike
    output: str | os.PathLike
    module: QPeftConfig
    train: "QPeftTrainConfig"
    scorer: "ScorerConfig"
    lm: "LMConfig"
    split: str = "train"
    resume: bool = False
    sweep: str | None = None
    select_interpolation: bool = True
    dev_cache_gb: float | None = None
    command: str | None = None
    progress: bool = True
    extra_meta: dict[str, Any] = field(default_factory=dict)


def run_qpeft_job(job: QPeftJob, echo: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Train ``job``; returns its summary (best/, dev numbers, the carried interpolation weight, timings) on the
    process that writes files, None on the other ranks of a data-parallel run. ``echo`` receives the lines a user
    reads while it runs (kept and skipped queries, the module's size); default: the log at INFO."""
    from ..data import BeirDataset
    from ..lm.backbone import FrozenLM
    from ..lm.memo import PrefixMemo
    from ..training.data import check_split, load_training_data, split_dev
    from ..training.parallel import DataParallel
    from ..training.state import STATE_NAME, check_training_output
    from ..types import read_run
    from .interpolation import select_checkpoint_interpolation
    from .module import build_module, parameter_report
    from .step import train_qpeft

    echo = echo or logger.info
    check_split(job.split)
    check_training_output(job.output, sweep=job.sweep is not None)
    tcfg, qcfg, scfg = job.train, job.module, job.scorer
    parallel = DataParallel.from_environment(job.lm.device)
    with parallel.closing():  # every rank ends together (see training.parallel)
        progress = job.progress and parallel.is_main
        ds = BeirDataset.find(job.dataset)
        first_stage = read_run(job.negatives)
        examples, stats, corpus = load_training_data(
            ds, job.split, first_stage, negative_depth=max(tcfg.hard_pool, tcfg.dev_depth),
            candidate_depth=tcfg.dev_depth, negative_policy=tcfg.negative_policy, progress=progress)
        if progress:
            echo(stats.summary())
        train_ex, dev_ex = split_dev(examples, tcfg.dev_size, tcfg.carve_seed, tcfg.dev_carve)
        lm = FrozenLM.load(job.lm)
        # one for every training of this job; ranks of a data-parallel run may share a device's memory
        memo = PrefixMemo.for_device(lm.device, job.dev_cache_gb, processes=parallel.world_size)
        try:
            module = build_module(lm, qcfg)
        except ValueError as exc:  # a setting this LM cannot take (heads that do not divide its hidden size)
            raise UsageError(f"{exc} (--model {lm.model_id})") from None
        report = parameter_report(module, lm)
        if progress:
            capped = tcfg.max_train_queries is not None and tcfg.max_train_queries < len(train_ex)
            echo(f"{qcfg.variant}: {report['trainable']:,} trainable parameters = {report['percent_of_lm']:.2f} % "
                 f"of the LM's {report['lm']:,}; {len(train_ex)} train / {len(dev_ex)} dev queries"
                 + (f" (at most {tcfg.max_train_queries} train queries per epoch: --max-train-queries)"
                    if capped else ""))
        meta = {"training": {"command": job.command, "dataset": str(ds.path), "split": job.split,
                             "negatives": str(job.negatives),
                             "skipped": {"no_positive": stats.no_positive, "not_in_run": stats.not_in_run,
                                         "no_negative": stats.no_negative}}, **job.extra_meta}
        t0 = time.time()

        def carried_weight(best: Path) -> float | None:
            """``best``'s dev-selected interpolation weight, stored in it (None without select_interpolation)."""
            if not job.select_interpolation:
                return None
            return select_checkpoint_interpolation(lm, best, qcfg.variant, dev_ex, first_stage, ds.qrels(job.split),
                                                   corpus, tcfg.dev_depth, progress=progress)["alpha"]

        if job.sweep:
            from .step import QPeftTrainConfig
            from .sweep import check_selection, load_grid, run_sweep

            def configs(point):
                q = QPeftConfig.from_dict({**qcfg.to_dict(), **point.module})
                module = build_module(lm, q)  # a setting this LM cannot take fails here, before any training
                # every point holds out the carve of the base seed: a point with its own seed records that carve
                pinned = {"dev_seed": tcfg.carve_seed} if "seed" in point.train and tcfg.dev_seed is None else {}
                try:
                    return q, QPeftTrainConfig.build(**{**tcfg.__dict__, **pinned, **point.train}), module
                except InputError as exc:  # the training config's own checks ("bad training setting: ...")
                    raise ValueError(str(exc).removeprefix("bad training setting: ")) from None

            points = load_grid(job.sweep, QPeftConfig, QPeftTrainConfig)
            check_selection(points, tcfg.selection_metric, job.sweep)
            built = {}
            for point in points:  # every point's settings are checked before the first training
                try:
                    built[point.index] = configs(point)
                except (ValueError, TypeError) as exc:
                    raise InputError(f"bad sweep setting in combination {point.name}: {exc}", job.sweep) from None

            def train_one(point, folder):
                q, tc, module = built[point.index]  # the module its check built (seeded: as a fresh build)
                return train_qpeft(lm, module, q, scfg, train_ex, dev_ex, corpus, tc, folder,
                                   resume=(folder / STATE_NAME).is_file(), progress=progress,
                                   metadata={**meta, "sweep": point.settings}, parallel=parallel,
                                   prefix_memo=memo, first_stage=first_stage)

            chosen: dict[str, float | None] = {}
            # rank 0 selects the interpolation weight of the published best/ before sweep.json marks the sweep done
            swept = run_sweep(points, train_one, job.output, tcfg.selection_metric, write=parallel.is_main,
                              on_finish=lambda best: chosen.update(alpha=carried_weight(best)))
            parallel.barrier()
            if not parallel.is_main:
                return None
            best = Path(job.output) / "best"
            return {"best": str(best), "settings": swept["best"]["settings"], "interpolation_alpha": chosen["alpha"],
                    "dev": swept["best"]["dev"], "combinations": len(points),
                    "wall_seconds": round(time.time() - t0, 1), "table": str(Path(job.output) / "sweep.md")}
        selected: dict[str, float | None] = {}
        # rank 0 selects the interpolation weight (unless told not to) before training_done.json marks the job done
        result = train_qpeft(lm, module, qcfg, scfg, train_ex, dev_ex, corpus, tcfg, job.output, resume=job.resume,
                             progress=progress, metadata=meta, parallel=parallel, prefix_memo=memo,
                             first_stage=first_stage, on_finish=lambda best: selected.update(alpha=carried_weight(best)))
        if not parallel.is_main:  # rank 0 reports
            return None
        alpha = selected["alpha"]
        wall = time.time() - t0
        return {"best": str(result.best_dir), "best_epoch": result.best_epoch,
                **({"best_step": result.best_step} if tcfg.eval_every else {}), "wall_seconds": round(wall, 1),
                "train_seconds": round(result.train_seconds, 1), "stopped_early": result.stopped_early,
                "dev": {k: round(result.best_dev[k], 4) for k in REPORTED_DEV},
                "dev_upr": {k: round(v, 4) for k, v in result.dev_baseline.items() if k in REPORTED_DEV},
                "trainable_parameters": report["trainable"], "percent_of_lm": round(report["percent_of_lm"], 3),
                "interpolation_alpha": alpha}
