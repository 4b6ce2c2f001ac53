"""Trainer state on disk: ``trainer_state.json``, optimizer state (safetensors + JSON, no pickle), ``best/``.

Layout of a training output folder (both methods)::

    output_dir/
      trainer_state.json     history (per-epoch train/dev numbers), best epoch, dev baselines, step config
      training_done.json     written last, once every planned epoch ran (or training stopped early): without it
                             the folder is an interrupted run (``best/`` may already hold an early epoch)
      epoch-1/ ... epoch-N/  the method's checkpoint of each epoch + optimizer.safetensors + optimizer.json
      best/                  a copy of the best epoch without optimizer state: what inference loads
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..artifacts import (atomic_write, is_temporary_name, read_json, replace_dir, sweep_stale, temp_prefix,
                         write_json)
from ..errors import ModelError

STATE_NAME = "trainer_state.json"
DONE_NAME = "training_done.json"
OPTIMIZER_WEIGHTS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
BEST = "best"

logger = logging.getLogger(__name__)


def epoch_dir(output_dir: str | os.PathLike, epoch: int) -> Path:
    return Path(output_dir) / f"epoch-{epoch}"


# What a training output folder of ours may hold before its trainer_state.json exists (LMORT caches LM states first).
OWN_ENTRIES = ("state-cache",)
SWEEP_DIR = "sweep"  # a sweep's combinations, one training output each (qpeft.sweep)
LOCK_NAME = ".training.lock"


def _ours_hidden(name: str) -> bool:
    """A hidden entry a training of ours leaves: its lock, or a killed writer's temporary (not e.g. ``.git``):
    ``.NAME.PID-HOST.*.tmp`` or a replaced folder ``.NAME.oldPID-HOST`` (artifacts.replace_dir)."""
    return name == LOCK_NAME or is_temporary_name(name)


def check_training_output(output_dir: str | os.PathLike, sweep: bool = False) -> None:
    """Refuse to write a training run into a folder that is not empty and is not a training output of ours
    (InputError, exit code 3; nothing is touched). Ours: it holds ``trainer_state.json`` or ``sweep.json``, or only
    :data:`OWN_ENTRIES`, a training lock and our hidden temporaries (not a user's ``.git``). A sweep (``sweep``)
    never writes into a plain training's folder, nor a plain training into a sweep's: each would replace the other's
    ``best/``."""
    from ..errors import InputError

    folder = Path(output_dir)
    if not folder.is_dir():
        return
    names = [p.name for p in folder.iterdir()]
    if "sweep.json" not in names and _unfinished_sweep(folder, names):  # a sweep stopped before its table
        if sweep:
            return
        raise InputError("holds an unfinished sweep (sweep/); a training here would mix with it (resume the sweep "
                         "with the same --sweep, or choose another --output)", str(folder))
    if sweep and STATE_NAME in names:
        raise InputError("holds a training run, not a sweep; a sweep here would replace its best/ (choose another "
                         "--output)", str(folder))
    if not sweep and "sweep.json" in names:
        raise InputError("holds a sweep (sweep.json); a training here would replace its best/ (resume the sweep "
                         "with the same --sweep, or choose another --output)", str(folder))
    if STATE_NAME in names or "sweep.json" in names or all(n in OWN_ENTRIES or _ours_hidden(n) for n in names):
        return
    raise InputError("exists, is not empty and holds no training run of ours; refusing to write into it "
                     "(choose another --output)", str(folder))


def _unfinished_sweep(folder: Path, names: list[str]) -> bool:
    """Whether ``folder`` holds a sweep's ``sweep/`` of training outputs of ours and nothing else of note but the
    ``best/`` it publishes (a sweep writes ``best/`` when every combination has trained, then selects its
    interpolation weight, then writes ``sweep.json``: stopped in between, it is resumed as unfinished)."""
    from ..errors import InputError

    if SWEEP_DIR not in names or not (folder / SWEEP_DIR).is_dir():
        return False
    if not all(n in (SWEEP_DIR, BEST) or n in OWN_ENTRIES or _ours_hidden(n) for n in names):
        return False
    for point in (folder / SWEEP_DIR).iterdir():
        if not point.is_dir():
            return False
        try:
            check_training_output(point)
        except InputError:
            return False
    return True


def read_trainer_state(output_dir: str | os.PathLike) -> dict | None:
    """The ``trainer_state.json`` of a training output folder, or None when there is none."""
    path = Path(output_dir) / STATE_NAME
    if not path.is_file():
        return None
    return read_json(path, "cannot read the training state (delete the folder or train into another)", ModelError)


def write_trainer_state(output_dir: str | os.PathLike, state: dict) -> None:
    write_json(Path(output_dir) / STATE_NAME, state)


def save_optimizer(optimizer, folder: str | os.PathLike) -> None:
    """Tensors of ``optimizer.state_dict()`` to ``optimizer.safetensors``; groups and scalars to ``optimizer.json``."""
    from safetensors.torch import save

    folder = Path(folder)
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            name = f"state.{idx}.{key}"
            if hasattr(value, "detach"):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    with atomic_write(folder / OPTIMIZER_WEIGHTS, mode="wb") as out:
        out.write(save(tensors))
    write_json(folder / OPTIMIZER_JSON, {"param_groups": state["param_groups"], "scalars": scalars})


def load_optimizer(optimizer, folder: str | os.PathLike) -> None:
    """Restore what :func:`save_optimizer` wrote into ``optimizer`` (same parameter order)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_json(folder / OPTIMIZER_JSON, "cannot read the optimizer state", ModelError)
    tensors = load_file(str(folder / OPTIMIZER_WEIGHTS))
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def write_training_done(output_dir: str | os.PathLike, state: dict) -> None:
    """Mark a training run finished (``training_done.json``: epochs run, best epoch, step and value, early stop)."""
    summary = {k: state.get(k) for k in ("completed_epochs", "global_step", "best_epoch", "best_step", "best_value")}
    summary["stopped_early"] = bool(state.get("stopped_early"))
    write_json(Path(output_dir) / DONE_NAME, summary)


def publish_best(epoch_folder: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Copy an epoch's checkpoint (without optimizer state) to ``output_dir/best``, replacing it atomically."""
    src, dst = Path(epoch_folder), Path(output_dir) / BEST
    sweep_stale(dst)  # a copy a killed run left (.best.PID-HOST.copy.tmp, .best.oldPID-HOST)
    tmp = dst.with_name(f"{temp_prefix(dst)}copy.tmp")  # ours by name: a resume or a sweep's check accepts it
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(OPTIMIZER_WEIGHTS, OPTIMIZER_JSON))
    replace_dir(tmp, dst)
    return dst


def warn_if_unfinished(checkpoint: str | os.PathLike) -> None:
    """A warning when ``checkpoint`` (a training output folder, or its ``best/``) belongs to a training run without
    ``training_done.json``: killed, or still running, its ``best/`` holds the best epoch so far; or to a sweep
    whose ``best/`` is published but whose ``sweep.json`` is not written yet (its interpolation weight may be
    missing)."""
    path = Path(checkpoint)
    run = path.parent if path.name == BEST else path
    if (run / STATE_NAME).is_file() and not (run / DONE_NAME).is_file():
        logger.warning("%s: its training has not finished (no %s: stopped, or still running), so %s/ holds the best "
                       "epoch so far; finish it with the same `train` command and --resume", run, DONE_NAME, BEST)
    elif (run / SWEEP_DIR).is_dir() and (run / BEST).is_dir() and not (run / "sweep.json").is_file():
        logger.warning("%s: its sweep has not finished (no sweep.json: stopped, or still running; %s/ may lack its "
                       "interpolation weight); finish it with the same `train ... --sweep` command", run, BEST)
