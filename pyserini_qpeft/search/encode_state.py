"""Resumable corpus encoding: finished batches of an interrupted ``encode`` survive a kill.

The work plan of an encode is fixed by its input (length-sorted batches, see ``corpus_encoding.batch_plan``), so a batch
is identified by its number. While encoding, finished batches are appended to ``<output>.partial/`` as
``part-FIRST-LAST.npy`` files (one every ``flush_seconds``, written atomically), next to ``state.json`` holding a
fingerprint of the job (encoder, batch size, every docid and text), and ``seconds.json`` with the encoding time
of the parts written so far. A restarted job with the same fingerprint loads the parts, encodes only the missing
batches and writes a byte-identical index (its ``encode_seconds``: every run's time together); a state from another
job is refused; a second process on the same output is refused while the first holds the lock.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..artifacts import atomic_write, write_json
from ..errors import InputError

if TYPE_CHECKING:
    import numpy as np

STATE_FORMAT = "pyserini_qpeft.encode-state/1"
COMPLETE = "complete"  # marker: every batch written, the index was (about to be) published

logger = logging.getLogger(__name__)
_PART = re.compile(r"part-(\d+)-(\d+)\.npy")


def encode_fingerprint(encoder_meta: Mapping[str, Any], batch_size: int, docids: Sequence[str],
                       texts: Sequence[str]) -> str:
    """SHA-256 of everything that determines the vectors and their order."""
    digest = hashlib.sha256(json.dumps({"encoder": encoder_meta, "batch_size": batch_size}, sort_keys=True,
                                       default=str).encode())
    for docid, text in zip(docids, texts):
        digest.update(json.dumps([docid, text]).encode() + b"\n")
    return digest.hexdigest()


class EncodeState:
    """Finished batches (by number) of one encode job, kept in ``folder``.

    Args:
        folder: ``<output>.partial``.
        fingerprint: :func:`encode_fingerprint` of the job.
        batch_sizes: the number of texts in each batch of the plan (to split a part back into batches).
        flush_seconds: how much finished work a kill may lose at most (plus the batch in progress); default
            :attr:`FLUSH_SECONDS`.
        legacy: the job's fingerprint as an older version wrote it (:func:`legacy_meta`): its state is this job's.
    """

    FLUSH_SECONDS = 5.0

    def __init__(self, folder: str | os.PathLike, fingerprint: str, batch_sizes: Sequence[int],
                 flush_seconds: float | None = None, legacy: str | None = None):
        from ..artifacts import lock_exclusively

        self.folder = Path(folder)
        self.batch_sizes = list(batch_sizes)
        self.flush_seconds = self.FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = lock_exclusively(self.folder / "lock", "another process is encoding into this output right "
                                      "now; wait for it or choose another --output", source=self.folder)
        header = {"format": STATE_FORMAT, "fingerprint": fingerprint}
        state_file = self.folder / "state.json"
        found = None
        if state_file.is_file():
            try:
                found = json.loads(state_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                found = None
            if legacy is not None and found == {"format": STATE_FORMAT, "fingerprint": legacy}:
                found = header  # written before the LM's weights digest joined the fingerprint: this job's
            if found != header and (self.folder / COMPLETE).is_file():
                # a finished job's state, left by a kill after its index was written: not work to protect
                logger.warning("%s: removing the state of an earlier, finished encode (another job)", self.folder)
                self._clear()
                found = None
            elif found != header:
                self.close()
                raise InputError("encode state belongs to another job (other encoder, batch size or corpus); "
                                 "delete it to start over", str(self.folder))
        if found is None:
            self._clear()  # parts without a state of their own (deleted, damaged) belong to no known job
            write_json(state_file, header)
        self.done: dict[int, "np.ndarray"] = {}
        self._load_parts()
        self._pending: list[tuple[int, "np.ndarray"]] = []
        self._last_flush = time.monotonic()
        self.seconds = self._load_seconds()

    def _clear(self) -> None:
        """Remove every part, record and marker (not the lock)."""
        for path in self.folder.iterdir():
            if path.name != "lock" and path.is_file():
                path.unlink()

    def mark_complete(self) -> None:
        """Every batch is written: what is left here after the index is published is a finished job's (a later job
        on this output may remove it instead of refusing it as another job's work in progress)."""
        self.flush()
        with atomic_write(self.folder / COMPLETE) as out:
            out.write("1\n")

    def _load_seconds(self) -> float:
        """Seconds spent on the parts earlier runs wrote (0 for a new state or an unreadable record)."""
        try:
            return float(json.loads((self.folder / "seconds.json").read_text(encoding="utf-8"))["seconds"])
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError):
            return 0.0

    def _load_parts(self) -> None:
        import numpy as np

        for path in sorted(self.folder.glob("part-*.npy")):
            match = _PART.fullmatch(path.name)
            if not match:
                continue
            first, last = int(match.group(1)), int(match.group(2))
            sizes = self.batch_sizes[first:last + 1]
            try:
                block = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                continue  # cannot happen with atomic writes; such a part is simply redone
            if last >= len(self.batch_sizes) or block.shape[0] != sum(sizes):
                continue
            offsets = np.cumsum([0, *sizes])
            for number, start, end in zip(range(first, last + 1), offsets[:-1], offsets[1:]):
                self.done[number] = block[start:end]

    def get(self, number: int) -> "np.ndarray | None":
        """The vectors of batch ``number`` when a previous run finished it."""
        return self.done.get(number)

    def add(self, number: int, vectors: "np.ndarray") -> None:
        """Record a finished batch; written out every ``flush_seconds``."""
        self._pending.append((number, vectors))
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        import numpy as np

        now = time.monotonic()
        self.seconds += now - self._last_flush
        self._last_flush = now
        wrote = bool(self._pending)
        while self._pending:  # consecutive runs of batch numbers, one part each
            run = [self._pending.pop(0)]
            while self._pending and self._pending[0][0] == run[-1][0] + 1:
                run.append(self._pending.pop(0))
            with atomic_write(self.folder / f"part-{run[0][0]:07d}-{run[-1][0]:07d}.npy", "wb") as out:
                np.save(out, np.concatenate([v for _, v in run]), allow_pickle=False)
        if wrote:  # the time that produced the parts, with them (a kill loses both since the last flush)
            write_json(self.folder / "seconds.json", {"seconds": round(self.seconds, 3)})

    def close(self) -> None:
        self._lock.close()


def legacy_meta(encoder_meta: Mapping[str, Any]) -> dict | None:
    """``encoder_meta`` as versions before the LM's full weights digest recorded it (None: nothing differs)."""
    model = encoder_meta.get("model")
    if not isinstance(model, Mapping) or "weights_sha256" not in model:
        return None
    return {**encoder_meta, "model": {k: v for k, v in model.items() if k != "weights_sha256"}}


class MergedStates:
    """The finished batches of n shard folders (``encode --merge-shards``), read-only: every folder must exist and
    belong to this job (same fingerprint)."""

    def __init__(self, folders: Sequence[Path], fingerprint: str, batch_sizes: Sequence[int],
                 legacy: str | None = None):
        self.states = []
        for folder in folders:
            if not Path(folder).is_dir():
                self.close()
                raise InputError("shard folder not found (did this shard run?)", str(folder))
            self.states.append(EncodeState(folder, fingerprint, batch_sizes, legacy=legacy))

    @property
    def seconds(self) -> float:
        """The shards' encoding time together."""
        return sum(state.seconds for state in self.states)

    def get(self, number: int) -> "np.ndarray | None":
        return next((s.done[number] for s in self.states if number in s.done), None)

    def add(self, number: int, vectors: "np.ndarray") -> None:  # pragma: no cover - merging computes nothing
        raise RuntimeError("a merge computes nothing")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        for state in self.states:
            state.close()
