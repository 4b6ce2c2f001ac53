"""What makes an interrupted training resumable as the same run: the settings and data it records, the checks a
``--resume`` passes (same dev split, data, settings, precision), and the one-writer lock on the output folder."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..errors import InputError
from .config import TrainConfig
from .data import TrainingExample, checkpoint_training, example_meta
from .state import LOCK_NAME, STATE_NAME


RESUMABLE_SETTINGS = frozenset({"epochs", "patience", "max_steps", "eval_at_start"})
"""Train-config fields a ``--resume`` may change (train longer, stop earlier); any other change is an error."""


def recorded_settings(config: TrainConfig, train: Sequence[TrainingExample],
                       dev: Sequence[TrainingExample]) -> dict[str, Any]:
    """The run's record, as JSON reads it back: ``train_config`` and :func:`~.data.example_meta` (dev qids, counts).
    Every checkpoint's ``training`` entry carries it; ``trainer_state.json`` keeps ``train_config`` and ``dev_qids``,
    which a resumed run must share with the interrupted one."""
    return json.loads(json.dumps({"train_config": config.to_dict(), **example_meta(train, dev)}))


def training_data_fingerprint(train: Sequence[TrainingExample]) -> str:
    """sha256 of the training examples (query ids and texts, positives, hard negatives in order): a resumed run
    must train on the data of the interrupted one (the same --negatives run, qrels and topics)."""
    import hashlib

    digest = hashlib.sha256()
    for ex in train:
        digest.update(json.dumps([ex.qid, ex.query, list(ex.positives), list(ex.negatives)]).encode("utf-8"))
    return digest.hexdigest()


def check_resumed_data(state: Mapping[str, Any], folder: Path, settings: Mapping[str, Any],
                        steps_per_epoch: int) -> None:
    """Raise :class:`InputError` when the interrupted run held out other dev queries or trained with other settings
    than ``settings`` (fields outside :data:`RESUMABLE_SETTINGS`; and no new planned steps where the learning rate
    follows them, nor a new --max-steps after a cut inside an epoch). The record is the trainer state's; a state written
    before it kept one falls back to the last epoch's checkpoint config (``folder``), when the step writes a known
    one. Fields the record lacks (added later) are not compared."""
    recorded: Mapping[str, Any] = state
    where = folder.parent / STATE_NAME
    if "train_config" not in state:
        try:
            recorded, where = checkpoint_training(folder)
        except InputError:
            return
    saved_dev = recorded.get("dev_qids")
    if isinstance(saved_dev, list) and saved_dev != settings["dev_qids"]:
        raise InputError(f"--resume with another dev split than the interrupted run (it held out {len(saved_dev)} "
                         f"dev queries, this one {len(settings['dev_qids'])} others): give the same dev flags (train "
                         f"qpeft: --dev-size, train lmort: --dev-fraction; --dev-seed, --dev-carve) and --seed (the "
                         f"dev carve's seed unless --dev-seed is given), or another --output", str(where))
    saved_data = recorded.get("train_data")
    if isinstance(saved_data, str) and saved_data != settings["train_data"]:
        raise InputError("--resume with other training data than the interrupted run (other training queries, "
                         "positives or hard negatives: another --negatives run?); give the same data, or another "
                         "--output", str(where))
    if settings.get("dev_graded") and "dev_graded" not in recorded:
        raise InputError("--resume of a run whose epochs were chosen on binary dev judgments (an older version); "
                         "these dev queries have graded ones, which dev metrics now use: the values would not "
                         "compare; train anew into another --output", str(where))
    saved_text, text = recorded.get("train_text"), settings.get("train_text")
    if isinstance(saved_text, str) and text is not None and saved_text != text:
        raise InputError("--resume with other document texts than the interrupted run (the corpus changed since: "
                         "re-downloaded, repaired or replaced); the resumed epochs would train on other text than "
                         "the first ones: train anew into another --output", str(where))
    saved = recorded.get("train_config")
    if isinstance(saved, dict):
        now = settings["train_config"]
        planned = [k for k in ("epochs", "max_steps") if k in saved and k in now and saved[k] != now[k]]
        if planned and (saved.get("lr_schedule") == "linear" or saved.get("warmup_ratio")):
            flags = "/".join("--" + k.replace("_", "-") for k in planned)
            raise InputError(f"--resume with other {flags}: this run's learning rate follows its planned steps "
                             f"(--lr-schedule linear or --warmup-ratio), so the resumed epochs would not continue its "
                             f"schedule; give the same values, or train anew into another --output", str(where))
        cut, last = saved.get("max_steps"), state.get("completed_epochs", 0)
        if "max_steps" in planned and cut is not None and last > 0 and state["global_step"] < last * steps_per_epoch:
            raise InputError(f"--resume with another --max-steps: the interrupted run stopped at --max-steps {cut} "
                             f"inside epoch {last}, and a resumed run starts the next epoch, so it would not be the "
                             f"run the new value gives; train anew into another --output", str(where))
        changed = [f"--{k.replace('_', '-')} {saved[k]!r} -> {now[k]!r}" for k in sorted(saved)
                   if k in now and k not in RESUMABLE_SETTINGS and saved[k] != now[k]]
        if changed:
            raise InputError(f"--resume with other training settings than the interrupted run: {', '.join(changed)}"
                             f" (only {', '.join(sorted(RESUMABLE_SETTINGS))} may change); give the same flags, or "
                             f"another --output", str(where))


@contextmanager
def training_lock(folder: Path, holder: bool) -> Iterator[None]:
    """One training process per output folder: ``holder`` (rank 0 of a data-parallel run) holds an flock on
    ``folder/.training.lock`` while it trains; a second process is refused (InputError, exit 3). The lock file is
    removed at the end, and a folder this call created is removed again when nothing else was written into it."""
    if not holder:
        yield
        return
    from ..artifacts import lock_exclusively

    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    handle = lock_exclusively(lock, "another process is training into this output right now; wait for it or choose "
                              "another --output", source=folder)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        handle.close()
        if created and not any(folder.iterdir()):
            folder.rmdir()


def lm_dtype(lm: Any) -> str:
    """The precision ``lm`` computes in (``float32``, ``bfloat16``, ...): part of a training step's identity."""
    return str(lm.dtype).replace("torch.", "")
