"""Reranking as both front ends run it: open the document text, build a reranker from flags, rerank resumably and
write the run atomically."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Collection, Sequence

from ..errors import InputError
from ..types import Query, Run
from .base import DictDocStore, DocStore, Reranker
from .registry import build_reranker

logger = logging.getLogger(__name__)


def run_docids(run: Run, depth: int | None = None) -> set[str]:
    """The docids of every query's top ``depth`` hits (all hits when None): the documents a rerank reads."""
    return {hit.docid for qid in run.qids() for hit in run[qid][:depth]}


def open_docstore(corpus: str | os.PathLike | None = None, index: str | os.PathLike | None = None,
                  needed: Collection[str] | None = None) -> DocStore:
    """Document text for reranking: a corpus file/dataset (preferred), a Lucene index's stored raw JSON (a folder
    or a Pyserini prebuilt index name), or for a dense index of ``encode`` the corpus it records.

    ``needed``: with a corpus, only these documents are kept in memory (:func:`run_docids` of the run to rerank: a
    few thousand of MS MARCO's 8.8 M passages); the whole file is still read, so a repeated docid is still refused.
    """
    if not corpus and index:
        from ..search.dense import index_corpus, is_dense_index

        if is_dense_index(index):
            corpus = index_corpus(index)
            logger.info("document text from %s (the corpus %s was encoded from)", corpus, index)
    if corpus:
        from ..data import corpus_dict, iter_documents

        source, docs = iter_documents(corpus)
        return DictDocStore(corpus_dict(docs, source, keep=needed), str(source))
    if index:
        from ..search import LuceneDocStore, is_lucene_index
        from ..search.prebuilt import resolve_lucene_index

        path = resolve_lucene_index(index, for_text=True)  # a folder, or a Pyserini prebuilt index name
        if is_lucene_index(path):
            return LuceneDocStore(path)
        raise InputError("no document text: this index stores none; pass --corpus (JSONL, TSV, CBOR or dataset)",
                         index)
    raise InputError("reranking needs document text: pass --corpus or a Lucene --index")


def check_run_in_corpus(run: Run, docs: DocStore, depth: int | None, run_path: str | os.PathLike) -> None:
    """InputError naming the run file and line of the first hit in every query's top ``depth`` whose docid the
    corpus lacks (run and corpus differ), before any model loads. Only an in-memory corpus (``--corpus``) is
    checked here; a Lucene index refuses an unknown docid when it is read."""
    from ..types import run_line

    if not isinstance(docs, DictDocStore):
        return
    for qid in run.qids():
        for hit in run[qid][:depth]:
            if hit.docid not in docs.docs:
                raise InputError(f"docid {hit.docid!r} of query {qid!r} is not in the corpus {docs.source}: run and "
                                 f"corpus differ", str(run_path), run_line(run_path, qid, hit.docid))


def make_reranker(name: str, checkpoint: str | os.PathLike | None, model: str | None, device: str, dtype: str,
                  max_passage_tokens: int | None = None, batch_size: int | None = None,
                  prompt: str | None = None, lm=None, max_query_tokens: int | None = None) -> Reranker:
    """Build the registered reranker ``name`` from flag values; the frozen LLM is loaded only if it needs one.
    ``model``: None = the base model ``checkpoint`` was trained on, else the default LM.
    ``prompt``: a name from :data:`~pyserini_qpeft.lm.prompts.PROMPTS` (None: the checkpoint's or the default).
    ``lm``: an already loaded ``FrozenLM`` to use instead of loading ``model`` (the same model, device and dtype)."""
    from ..lm.backbone import LMConfig
    from ..lm.prompts import prompt_fields
    from ..qpeft.checkpoint import lm_model_for

    model = lm_model_for(checkpoint, model)
    if checkpoint is not None:
        from ..training.state import warn_if_unfinished

        warn_if_unfinished(checkpoint)
    overrides: dict = prompt_fields(prompt) if prompt is not None else {}
    if max_passage_tokens is not None:
        overrides["max_passage_tokens"] = max_passage_tokens
    if max_query_tokens is not None:
        overrides["max_query_tokens"] = max_query_tokens
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    return build_reranker(name, lm=lm if lm is not None else LMConfig(model=model, device=device, dtype=dtype),
                          checkpoint=checkpoint, scorer_overrides=overrides or None)


def interpolation_alpha(reranker: Reranker, interpolate: float | str | None, depth: int | None = None) -> float | None:
    """The first-stage weight for ``--interpolate``: a number as given, or for ``auto`` the weight the reranker
    carries (``reranker.interpolation["alpha"]``: dev-selected for trained checkpoints, a documented default for
    zero-shot rerankers). InputError when ``auto`` meets a reranker without one. ``depth``: the rerank's depth; the
    warning that names an ``auto`` weight, and a warning for a selection file's, say so when the weight was selected
    at another depth."""
    from ..search.fusion import other_depth_note
    from .flags import SelectedWeight

    if interpolate is None:
        return None
    if interpolate != "auto":
        note = other_depth_note(interpolate.depth, depth) if isinstance(interpolate, SelectedWeight) else ""
        if note:
            logger.warning("--interpolate %s: first-stage weight %.2f; %s", interpolate.path, interpolate, note)
        return float(interpolate)
    carried = getattr(reranker, "interpolation", None)
    if not carried or carried.get("alpha") is None:
        raise InputError(f"--interpolate auto: reranker {reranker.name!r} carries no interpolation weight (a "
                         f"checkpoint trained with --no-select-interpolation carries none, nor one whose training "
                         f"stopped before selecting it: `train qpeft ... --resume` finishes that); give one (e.g. "
                         f"--interpolate 0.4) or a file from `pyserini-qpeft select-interpolation`")
    other_depth = other_depth_note(carried.get("depth", (carried.get("selection") or {}).get("depth")), depth)
    other_depth = f"; {other_depth}" if other_depth else ""
    # said at the default log level: a zero-shot reranker's weight was selected on another dataset (and model)
    logger.warning("--interpolate auto: first-stage weight %.2f, %s%s%s", carried["alpha"],
                   carried.get("source", "carried by the reranker"),
                   "" if not carried.get("transferred") else
                   "; for another dataset or model, select one on its dev queries (`pyserini-qpeft "
                   "select-interpolation`) and pass that file", other_depth)
    return float(carried["alpha"])


def shard_state(output: str | os.PathLike, shard_id: int, shard_num: int) -> Path:
    """Where shard ``shard_id`` of ``shard_num`` keeps its scores: ``<output>.shard-K-of-N`` (rerank state format)."""
    output = Path(output)
    return output.with_name(f"{output.name}.shard-{shard_id}-of-{shard_num}")


def rerank_and_write(reranker: Reranker, queries: Sequence[Query], run: Run, docs: DocStore, depth: int,
                     output: str | os.PathLike, progress: bool, tag: str | None = None,
                     interpolate: float | str | None = None, shard: tuple[int, int] | None = None,
                     merge_shards: int | None = None, output_format: str = "trec",
                     keep_state: bool = False) -> list[Path]:
    """Rerank and write the run atomically (in ``output_format``: ``trec`` or ``msmarco``); a ``<output>.partial``
    state file makes an interrupted job resume.

    With ``interpolate`` (a first-stage weight or ``auto``, see :func:`interpolation_alpha`), the written scores
    fuse the first stage's and the reranker's over the reranked depth (:func:`~pyserini_qpeft.search.fusion.
    interpolate_rerank`); the resumable state keeps the reranker's own scores either way.

    Scale-out without a scheduler (Slurm arrays, several machines on a shared disk): ``shard=(k, n)`` scores the
    k-th round-robin share of the document groups into :func:`shard_state` (resumable) and writes no run;
    ``merge_shards=n`` then writes the run from the n shard files, byte-identical to a serial rerank, and deletes
    them. Only query-likelihood rerankers (UPR, Q-PEFT, prompt tuning) can be sharded.

    ``keep_state``: leave the resume/shard state files for the caller to delete once what it writes after the run
    is written too (``rerank --output-jsonl``: a failure there then costs no scoring). Returns the state files left.
    """
    output = Path(output)
    # before the work: a bad 'auto' fails at once (the depth it covers: no more than the run's hits per query)
    from ..search.fusion import covered_depth

    alpha = interpolation_alpha(reranker, interpolate, covered_depth(run, depth))
    if shard is not None or merge_shards is not None:
        from .lm import LMReranker

        if not isinstance(reranker, LMReranker):
            raise InputError(f"reranker {reranker.name!r} cannot be sharded (only query-likelihood rerankers)")
    if shard is not None:
        reranker.rerank(queries, run, docs, depth=depth, progress=progress,
                        state_path=shard_state(output, *shard), shard=shard)
        return []
    merged = [shard_state(output, k, merge_shards) for k in range(merge_shards)] if merge_shards else []
    state = resume_state(output, announce=not merged)
    if merged:
        reranked = reranker.rerank(queries, run, docs, depth=depth, progress=progress, merge=merged)
    else:
        reranked = reranker.rerank(queries, run, docs, depth=depth, progress=progress, state_path=state)
    name = tag or reranker.name.replace(" ", "-")
    if alpha is not None:
        from ..search.fusion import interpolate_rerank

        reranked = interpolate_rerank(run, reranked, alpha, depth)
        name = tag or f"{name}+interp{alpha:g}"
    if keep_state:
        reranked.write(output, tag=name, output_format=output_format)
        return [state, *merged]
    write_and_clean(reranked, output, name, [state, *merged], output_format)
    return []


def resume_state(output: str | os.PathLike, announce: bool = False) -> Path:
    """Where the rerank into ``output`` keeps its finished batches until the run is written: ``<output>.partial``
    (``announce``: log a warning when it exists, i.e. the rerank resumes)."""
    output = Path(output)
    state = output.with_name(output.name + ".partial")
    if announce and state.exists():
        logger.warning("found %s (an interrupted rerank into this output): resuming from it if it is this job's",
                       state)
    return state


def write_and_clean(run: Run, output: str | os.PathLike, tag: str, leftovers: Sequence[Path],
                    output_format: str = "trec") -> None:
    """Write ``run`` to ``output`` (atomically, in ``output_format``, see :meth:`Run.write`), then delete the
    resume/shard state files."""
    run.write(Path(output), tag=tag, output_format=output_format)
    for path in leftovers:
        if path.exists():
            path.unlink()


def rerank_and_write_together(rerankers: Sequence[Reranker], queries: Sequence[Query], run: Run, docs: DocStore,
                              depth: int, outputs: Sequence[str | os.PathLike], progress: bool,
                              output_format: str = "trec") -> None:
    """:func:`rerank_and_write` of the same run with several query-likelihood rerankers (``rerankers[k]`` into
    ``outputs[k]``), their document prefixes computed once (:func:`~pyserini_qpeft.rerank.lm.rerank_together`).
    Each output is byte-identical to its own ``rerank_and_write`` and resumes from its own ``.partial`` state."""
    from .lm import LMReranker, rerank_together

    not_lm = [r.name for r in rerankers if not isinstance(r, LMReranker)]
    if not_lm:
        raise InputError(f"only query-likelihood rerankers (UPR, Q-PEFT, prompt tuning) can share a pass; not "
                         f"{', '.join(not_lm)}")
    if len(set(map(str, outputs))) != len(outputs):
        raise InputError(f"each reranker needs its own output, got {', '.join(map(str, outputs))}")
    states = [resume_state(o, announce=True) for o in outputs]
    reranked = rerank_together(rerankers, queries, run, docs, depth, progress, states)
    for reranker, result, output, state in zip(rerankers, reranked, outputs, states):
        write_and_clean(result, output, reranker.name.replace(" ", "-"), [state], output_format)


def check_topics_cover_run(queries: Sequence[Query], run: Run) -> None:
    """InputError when some query of ``run`` has no topic text (usually a wrong ``--topics``)."""
    known = {q.qid for q in queries}
    missing = [qid for qid in run.qids() if qid not in known]
    if missing:
        raise InputError(f"{len(missing)} run queries have no topic text (e.g. {missing[:3]}); wrong --topics?")
