"""Query-likelihood rerankers on a frozen LM: :class:`LMReranker` (optionally with a Q-PEFT hint module) and UPR.

They score with :class:`~pyserini_qpeft.lm.scoring.QueryLikelihoodScorer` and follow the rules of
:mod:`pyserini_qpeft.rerank.base`. Documents longer than the passage budget (``ScorerConfig.max_passage_tokens``,
default 128 tokens of "title text") are truncated to their first tokens; queries to ``max_query_tokens`` (64).

Long reranks can resume: with ``state_path`` each finished scoring batch (at most ``ScorerConfig.batch_size`` pairs,
so a kill loses at most one batch of work) is appended to that file (``qid<TAB>docid<TAB>repr(score)`` lines closed
by a ``#done`` line, flushed and fsynced); a restarted job reads it, skips the finished batches and produces a
byte-identical run, because the work plan (and so every batch) depends only on the input. A state file written for another job (other run, depth, model, prompt, hint
weights or document text) is refused, and a second process reranking into the same state file is refused while
the first holds its lock.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping, Sequence

from ..errors import InputError
from ..types import Query, Run, merge_reranked
from .api import InProcessAPI
from .base import DocStore, check_depth, query_texts

if TYPE_CHECKING:
    from ..lm.backbone import FrozenLM, LMConfig
    from ..lm.scoring import HintModule, QueryLikelihoodScorer, ScorerConfig

logger = logging.getLogger(__name__)

STATE_FORMAT = "pyserini_qpeft.rerank-state/2"
# The "upr-instruct" condition: UPR with this instruction before "Passage: ...". Worded for any BEIR-style task
# (questions, claims, titles) rather than for one dataset.
UPR_INSTRUCTION = "Read the passage and write a question or claim that this passage answers or supports."


def load_lm(lm: "FrozenLM | LMConfig | str | None") -> "FrozenLM":
    """``lm`` itself when loaded, else the FrozenLM it describes (a config, a model name/path, None = default)."""
    from ..lm.backbone import FrozenLM, LMConfig

    if isinstance(lm, FrozenLM):
        return lm
    if lm is None or isinstance(lm, str):
        return FrozenLM.load(LMConfig(model=lm) if lm else LMConfig())
    return FrozenLM.load(lm)


class LMReranker(InProcessAPI):
    """Query-likelihood reranking with a frozen LM, optionally with a hint module (Q-PEFT).

    Args:
        lm: a loaded :class:`~pyserini_qpeft.lm.backbone.FrozenLM`, an ``LMConfig``, a model name/path, or None for
            the default model.
        config: prompt/batching options of the scorer (on a GPU, the CPU-default batch sizes are replaced by
            ``lm.memory.fit_to_device``'s).
        hint_module: optional trainable module producing hint vectors (see :mod:`pyserini_qpeft.lm.scoring`).
        name: the reranker's name (run tag).
        interpolation: the first-stage interpolation this reranker carries for ``--interpolate auto``:
            ``{"alpha": weight of the first stage, "source": where it was selected}`` (None: none).
        given_batch_sizes: ``config`` fields (``batch_size``, ``prefix_batch_size``) the user set, kept on a GPU
            even at the CPU default's value (``--batch-size-rerank 64``).
    """

    name = "lm"

    def __init__(self, lm: "FrozenLM | LMConfig | str | None" = None, config: "ScorerConfig | None" = None,
                 hint_module: "HintModule | None" = None, name: str | None = None,
                 interpolation: Mapping[str, Any] | None = None, *, given_batch_sizes: Collection[str] = ()):
        from ..lm.memory import fit_to_device
        from ..lm.scoring import QueryLikelihoodScorer, ScorerConfig

        self.interpolation = dict(interpolation) if interpolation else None
        self.lm = load_lm(lm)
        config = fit_to_device(self.lm, config or ScorerConfig(), given_batch_sizes)  # GPU: sized from its memory
        self.scorer: QueryLikelihoodScorer = QueryLikelihoodScorer(self.lm, config, hint_module=hint_module)
        if name:
            self.name = name

    @property
    def config(self) -> "ScorerConfig":
        return self.scorer.config

    def score(self, pairs: Sequence[tuple[str, Any]] | tuple[str, Any], batch_size: int | None = None
              ) -> list[float] | float:
        """Mean query log-likelihood of each ``(query, document)`` pair (strings, Documents or mappings), straight
        from the scorer; ``batch_size`` pairs per forward (default: the scorer's). One pair: one float."""
        from ..lm.scoring import QueryLikelihoodScorer
        from .api import as_document, as_pairs

        pairs, single = as_pairs(pairs)

        scorer = self.scorer
        if batch_size is not None:
            scorer = QueryLikelihoodScorer(self.lm, dataclasses.replace(self.config, batch_size=batch_size),
                                           hint_module=self.scorer.hint_module)
        docs = [as_document(f"d{i}", document) for i, (_, document) in enumerate(pairs)]
        scores = scorer.score([query for query, _ in pairs], docs) if pairs else []
        return scores[0] if single else scores

    def _fingerprint(self, pairs: Sequence[tuple[str, str]], texts: Mapping[str, str], depth: int,
                     documents: Sequence[Any] = (), legacy: bool = False) -> str:
        """The job's identity in its state file's header. ``legacy``: as versions before the LM's full-content
        digest wrote it (their states are still accepted, checked by the sampled fingerprint as then)."""
        digest = hashlib.sha256()
        meta = {"reranker": self.name, "model": self.lm.model_id, "dtype": str(self.lm.dtype),
                "config": self.scorer.config.to_dict(), "depth": depth}
        weights = getattr(self.lm, "weights", None)
        if weights:  # other weights under the same model path are another job (the packaged default has none)
            meta["lm_weights"] = weights
        full = None if legacy else getattr(self.lm, "weights_sha256", None)
        if full:  # the full-content digest: a change the fingerprint's samples miss is another job too
            meta["lm_weights_sha256"] = full
        hm = self.scorer.hint_module
        rule = getattr(hm, "selection_rule", None)
        if rule:  # Q-PEFT-R's hint choice: a state scored under an earlier rule is another job's (legacy included)
            meta["hint_selection"] = rule
        digest.update(json.dumps(meta, sort_keys=True).encode())
        if hm is not None and hasattr(hm, "state_dict"):
            for key, tensor in sorted(hm.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        for qid, docid in pairs:
            digest.update(f"{qid}\t{docid}\t{texts[qid]}\n".encode())
        for doc in documents:  # the text scored, so a state file from another corpus is never reused
            digest.update(json.dumps([doc.docid, doc.title, doc.text]).encode() + b"\n")
        return digest.hexdigest()

    def rerank(self, queries: Sequence[Query], run: Run, docs: DocStore, depth: int = 100, progress: bool = True,
               state_path: Path | None = None, *, shard: tuple[int, int] | None = None,
               merge: Sequence[Path] = ()) -> Run | None:
        """Rescore the top ``depth`` hits of every query (see the module docstring for the rules).

        Scale-out (see :mod:`pyserini_qpeft.rerank.pipeline`): ``shard=(k, n)`` scores only the k-th of n
        round-robin shares of the document groups into ``state_path`` and returns None; ``merge`` lists the state
        files of all n shards, whose scores make the run (nothing is computed; a missing pair is an InputError).
        Either way the final run is byte-identical to a serial one, because every batch is the serial batch.
        """
        if shard is not None and state_path is None:
            raise ValueError("a shard writes its scores to state_path")
        if merge:
            check_depth(depth)
            texts = query_texts(queries, run)
            pairs, distinct, distinct_docs = _pairs(run, docs, depth)
            return self._merged(run, depth, pairs, merge, self._fingerprint(pairs, texts, depth, distinct_docs),
                                lambda: self._legacy_fingerprint(pairs, texts, depth, distinct_docs))
        return rerank_together([self], queries, run, docs, depth, progress, [state_path], shard=shard)[0]

    def _ranked(self, run: Run, depth: int, scores: Mapping[tuple[str, str], float]) -> Run:
        out = Run(tag=self.name)
        for qid, hits in run.hits.items():
            out.hits[qid] = merge_reranked(hits, {d: scores[(qid, d)] for d in (h.docid for h in hits[:depth])},
                                           depth)
        return out

    def _legacy_fingerprint(self, pairs: Sequence[tuple[str, str]], texts: Mapping[str, str], depth: int,
                            documents: Sequence[Any] = ()) -> str | None:
        """The header an older version wrote for this job (None: it wrote the current one, no digest here)."""
        if not getattr(self.lm, "weights_sha256", None):
            return None
        return self._fingerprint(pairs, texts, depth, documents, legacy=True)

    def _merged(self, run: Run, depth: int, pairs: Sequence[tuple[str, str]], merge: Sequence[Path],
                fingerprint: str, legacy: "Callable[[], str | None] | None" = None) -> Run:
        """The run from the scores in the shards' state files (all of this job; together covering every pair)."""
        scores: dict[tuple[str, str], float] = {}
        for path in merge:
            if not Path(path).is_file():
                raise InputError("shard state file not found (did this shard run?)", str(path))
            shard_state = _State(Path(path), fingerprint, legacy)
            shard_state.close()
            scores.update(shard_state.scores)
        missing = [p for p in pairs if p not in scores]
        if missing:
            raise InputError(f"the shards scored {len(pairs) - len(missing)} of {len(pairs)} pairs (missing e.g. "
                             f"{missing[0]}): a shard has not finished; run it again (it resumes), then merge")
        return self._ranked(run, depth, scores)


def _pairs(run: Run, docs: DocStore, depth: int):
    """The reranked ``(qid, docid)`` pairs of ``run``, their distinct documents (:func:`~pyserini_qpeft.lm.planner.
    dedupe`: the one deduplication of documents on this path, each fetched once and its prefix run once) and
    those documents' text."""
    from ..lm.planner import dedupe

    pairs = [(qid, hit.docid) for qid, hits in run.hits.items() for hit in hits[:depth]]
    distinct = dedupe([docid for _, docid in pairs])
    return pairs, distinct, [docs.get(pairs[i][1]) for i in distinct.first]


def rerank_together(rerankers: Sequence[LMReranker], queries: Sequence[Query], run: Run, docs: DocStore,
                    depth: int = 100, progress: bool = True, state_paths: Sequence[Path | None] | None = None, *,
                    shard: tuple[int, int] | None = None) -> list[Run | None]:
    """Rerank the same run with several query-likelihood rerankers in one pass over the documents, each document
    group's prefix forward shared (:func:`~pyserini_qpeft.lm.scoring.score_batches_together`; the rerankers must
    share one loaded LM and the passage prompt, e.g. UPR and a Q-PEFT checkpoint trained with UPR's prompt).

    Each reranker's run, resume state and scores are exactly those of ``reranker.rerank(...)`` alone (one state
    file per reranker in ``state_paths``); the saving is the shared prefixes (on SmolLM2 with 256-token passages
    a second reranker costs about a third of a first). ``shard`` as in :meth:`LMReranker.rerank`.
    """
    from ..lm.scoring import score_batches_together

    state_paths = list(state_paths) if state_paths is not None else [None] * len(rerankers)
    if len(state_paths) != len(rerankers):
        raise ValueError(f"got {len(state_paths)} state paths for {len(rerankers)} rerankers")
    if shard is not None and any(p is None for p in state_paths):
        raise ValueError("a shard writes its scores to state_path")
    reasons = [rerankers[0].scorer.prefix_mismatch(r.scorer) for r in rerankers[1:]]
    if any(reasons):  # still correct, just not shared: one pass per reranker
        logger.warning("the rerankers cannot share document prefixes (%s): reranking one after another",
                       "; ".join(r for r in reasons if r))
        return [rerank_together([r], queries, run, docs, depth, progress, [path], shard=shard)[0]
                for r, path in zip(rerankers, state_paths)]
    check_depth(depth)
    texts = query_texts(queries, run)
    pairs, distinct, distinct_docs = _pairs(run, docs, depth)
    pair_queries = [texts[qid] for qid, _ in pairs]
    states: list[_State | None] = []
    try:
        for reranker, path in zip(rerankers, state_paths):
            states.append(_State(Path(path), reranker._fingerprint(pairs, texts, depth, distinct_docs),
                                 lambda r=reranker: r._legacy_fingerprint(pairs, texts, depth, distinct_docs))
                          if path else None)
        scores: list[dict[tuple[str, str], float]] = [dict(st.scores) if st else {} for st in states]
        for reranker, path, known in zip(rerankers, state_paths, scores):
            if known:
                logger.info("resuming %s from %s: %d pairs already scored", reranker.name, path, len(known))
        done = [(lambda i, known=known: pairs[i] in known) for known in scores]
        if len(rerankers) == 1:  # the scorer's own method (the one-scorer case of score_batches_together)
            batches = ((0, *b) for b in rerankers[0].scorer.score_batches(
                pair_queries, distinct_docs, done[0], progress, distinct.slot, shard))
        else:
            batches = score_batches_together([r.scorer for r in rerankers], pair_queries, distinct_docs, done,
                                             progress, distinct.slot, shard)
        for which, _, batch, values in batches:
            records = [(pairs[i], v) for i, v in zip(batch, values)]
            scores[which].update(records)
            if states[which]:
                states[which].append(records)
    finally:
        for st in states:
            if st:
                st.close()
    if shard is not None:
        return [None] * len(rerankers)
    out: list[Run | None] = []
    for reranker, known in zip(rerankers, scores):
        missing = [p for p in pairs if p not in known]
        if missing:  # a state file from the same job always covers whole batches; this is a bug if it happens
            raise RuntimeError(f"{len(missing)} pairs were not scored by {reranker.name}, e.g. {missing[0]}")
        out.append(reranker._ranked(run, depth, known))
    return out


class _State:
    """Append-only record of finished scoring batches (see the module docstring)."""

    def __init__(self, path: Path, fingerprint: str, legacy: "Callable[[], str | None] | None" = None):
        """``legacy``: the job's fingerprint as an older version wrote it (computed only when the header is not
        ``fingerprint``'s): such a state is this job's too."""
        from ..artifacts import lock_exclusively

        self.path = path
        self.legacy = legacy
        self.scores: dict[tuple[str, str], float] = {}
        header = json.dumps({"format": STATE_FORMAT, "fingerprint": fingerprint}, sort_keys=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        # one writer per state file: a second job on the same output would redo and interleave the work
        self.handle = lock_exclusively(path, "another process is reranking into this output right now (its resume "
                                       "state is locked); wait for it to finish or choose another --output",
                                       encoding="utf-8")
        try:
            if path.stat().st_size > 0:
                self._read(header)
                with open(path, "rb") as raw:
                    raw.seek(-1, os.SEEK_END)
                    if raw.read(1) != b"\n":  # a torn last line from a crash: start a fresh line
                        self.handle.write("\n")
            else:
                self.handle.write(header + "\n")
                self._sync()
        except BaseException:
            self.handle.close()
            raise

    def _read(self, header: str) -> None:
        from ..textio import decode_line

        with open(self.path, "rb") as handle:
            first = decode_line(handle.readline(), self.path, 1)
            older = self.legacy() if first != header and self.legacy is not None else None
            if first != header and (older is None or first != json.dumps(
                    {"format": STATE_FORMAT, "fingerprint": older}, sort_keys=True)):
                raise InputError("rerank state file belongs to another job (different run, depth, model or its "
                                 "weights, prompt, module weights, document text, dtype or batch sizes, e.g. a "
                                 "merge on another kind of device than the shards'); delete it to start over, or "
                                 "write to another --output (its state is <output>.partial)", str(self.path), 1)
            pending: list[tuple[tuple[str, str], float]] = []
            for lineno, raw in enumerate(handle, start=2):
                if not raw.endswith(b"\n"):
                    break  # torn write
                line = decode_line(raw, self.path, lineno)
                if line == "#done":  # the batch above is complete
                    self.scores.update(pending)
                    pending = []
                    continue
                parts = line.split("\t")
                if len(parts) == 3:
                    try:
                        pending.append(((parts[0], parts[1]), float(parts[2])))
                    except ValueError:
                        pass

    def append(self, records: Sequence[tuple[tuple[str, str], float]]) -> None:
        from ..artifacts.files import with_filename

        try:
            self.handle.writelines(f"{qid}\t{docid}\t{score!r}\n" for (qid, docid), score in records)
            self.handle.write("#done\n")
            self._sync()
        except OSError as exc:  # e.g. a full disk: name the state file
            raise with_filename(exc, self.path) from exc

    def _sync(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        """Close the file; a failing flush (the disk filled up mid-batch) is not raised again here: every finished
        batch was synced by :meth:`append`, a torn last line is dropped on resume, and the first error, the one
        that stopped the job, is the one to report."""
        try:
            self.handle.close()
        except OSError:
            pass


UPR_INTERPOLATION = {
    "alpha": 0.4,
    "depth": 20,  # the first stage's top 20 were reranked where it was selected
    "transferred": True,  # selected on another dataset than any the reranker is given: --interpolate auto says so
    "source": "selected on 80 SciFact train queries held out as dev (`dev-split --dev-size 80 --seed 0`), BM25 "
              "top-20, 128-token passages, SmolLM2-135M-Instruct: dev nDCG@10 0.6992 BM25, 0.6570 UPR, 0.7390 at "
              "0.4 (runs/interp-upr.beir-scifact-train-dev80-d20.json from `repro beir --profile full`)",
}
"""What ``--interpolate auto`` uses for ``upr`` (a zero-shot reranker has no training split of its own: the weight
was selected on another dataset's dev queries, never on a test split)."""


class UPRReranker(LMReranker):
    """UPR (Sachan et al., 2022): zero-shot query likelihood with the plain UPR prompt and a frozen LM.

    Carries :data:`UPR_INTERPOLATION` for ``--interpolate auto``.
    """

    name = "upr"

    def __init__(self, lm: "FrozenLM | LMConfig | str | None" = None, config: "ScorerConfig | None" = None,
                 name: str | None = None, *, given_batch_sizes: Collection[str] = ()):
        super().__init__(lm, config, hint_module=None, name=name,
                         interpolation=UPR_INTERPOLATION if (name or self.name) == "upr" else None,
                         given_batch_sizes=given_batch_sizes)


def upr_instruct(lm: "FrozenLM | LMConfig | str | None" = None, config: "ScorerConfig | None" = None,
                 instruction: str = UPR_INSTRUCTION, *, given_batch_sizes: Collection[str] = ()) -> UPRReranker:
    """UPR with an instruction prefix (:data:`UPR_INSTRUCTION` unless ``config`` already has one)."""
    from ..lm.scoring import ScorerConfig

    config = config or ScorerConfig()
    if not config.instruction:
        config = dataclasses.replace(config, instruction=instruction)
    return UPRReranker(lm, config, name="upr-instruct", given_batch_sizes=given_batch_sizes)


def given_batch_sizes(scorer_overrides: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The batch-size fields among a factory's ``scorer_overrides`` (kept as given on a GPU)."""
    return tuple(name for name in ("batch_size", "prefix_batch_size") if name in (scorer_overrides or {}))


def _untrained(name: str, checkpoint: str | os.PathLike | None,
               scorer_overrides: Mapping[str, Any] | None) -> "ScorerConfig | None":
    """The scorer config of a zero-shot reranker; InputError when given a checkpoint (it has nothing to load)."""
    if checkpoint is not None:
        from ..qpeft.config import NAME_TO_VARIANT

        raise InputError(f"--reranker-checkpoint is only for trained rerankers "
                         f"({', '.join(NAME_TO_VARIANT)}), not {name!r}")
    if not scorer_overrides:
        return None
    from ..lm.scoring import ScorerConfig

    return ScorerConfig(**scorer_overrides)


def make_upr(*, lm: "FrozenLM | LMConfig | str | None" = None, checkpoint: str | os.PathLike | None = None,
             scorer_overrides: Mapping[str, Any] | None = None) -> UPRReranker:
    """Factory of ``upr`` (zero-shot: a ``checkpoint`` is an InputError)."""
    config = _untrained("upr", checkpoint, scorer_overrides)
    return UPRReranker(lm, config, given_batch_sizes=given_batch_sizes(scorer_overrides))


def make_upr_instruct(*, lm: "FrozenLM | LMConfig | str | None" = None, checkpoint: str | os.PathLike | None = None,
                      scorer_overrides: Mapping[str, Any] | None = None) -> UPRReranker:
    """Factory of ``upr-instruct``: UPR with :data:`UPR_INSTRUCTION` unless the overrides set an instruction."""
    config = _untrained("upr-instruct", checkpoint, scorer_overrides)
    return upr_instruct(lm, config, given_batch_sizes=given_batch_sizes(scorer_overrides))
