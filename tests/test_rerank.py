"""Rerankers: all hits kept, below-depth order, determinism, resume byte-identical, input errors, registry."""
from __future__ import annotations

import pytest

from conftest import TOY_CORPUS, TOY_QUERIES
from pyserini_qpeft.data import Document
from pyserini_qpeft.errors import InputError
from pyserini_qpeft.rerank import (RERANKERS, DictDocStore, IdentityReranker, LMReranker, UPRReranker,
                                   build_reranker, merge_reranked, register_reranker)
from pyserini_qpeft.scoring import ScorerConfig
from pyserini_qpeft.types import Hit, Query, Run

DOCS = DictDocStore({d["_id"]: Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS})
QUERIES = [Query(q["_id"], q["text"]) for q in TOY_QUERIES]
DOCIDS = [d["_id"] for d in TOY_CORPUS]


def first_stage() -> Run:
    """Every query retrieves all 6 documents with descending BM25-like scores in a query-specific order."""
    hits = {}
    for k, q in enumerate(QUERIES):
        order = DOCIDS[k:] + DOCIDS[:k]
        hits[q.qid] = [Hit(d, 10.0 - i) for i, d in enumerate(order)]
    return Run(hits, tag="bm25")


def small_config() -> ScorerConfig:
    return ScorerConfig(batch_size=2, prefix_batch_size=1)  # many groups, so resume has something to skip


def test_upr_keeps_all_hits_and_below_depth_order(tiny_lm):
    run = first_stage()
    out = UPRReranker(tiny_lm, small_config()).rerank(QUERIES, run, DOCS, depth=3, progress=False)
    assert out.qids() == run.qids()
    for qid in run:
        before, after = run[qid], out[qid]
        assert sorted(h.docid for h in after) == sorted(h.docid for h in before)
        assert {h.docid for h in after[:3]} == {h.docid for h in before[:3]}  # top 3 reranked among themselves
        assert [h.docid for h in after[3:]] == [h.docid for h in before[3:]]  # the rest: original order beneath
        assert after[2].score > after[3].score
    # reranking really happened somewhere (the tiny LM is random, but not constant)
    assert any([h.docid for h in out[q][:3]] != [h.docid for h in run[q][:3]] for q in run)


def test_rerank_scores_are_scorer_scores(tiny_lm):
    reranker = UPRReranker(tiny_lm)
    run = first_stage()
    out = reranker.rerank(QUERIES[:1], Run({"q1": run["q1"]}), DOCS, depth=6, progress=False)
    direct = reranker.scorer.score(["what causes lung cancer"] * 6, [DOCS.get(d) for d in DOCIDS])
    assert {h.docid: h.score for h in out["q1"]} == pytest.approx(dict(zip(DOCIDS, direct)), abs=1e-6)


def test_deterministic_run_files(tiny_lm, tmp_path):
    reranker = UPRReranker(tiny_lm, small_config())
    for name in ("a.trec", "b.trec"):
        reranker.rerank(QUERIES, first_stage(), DOCS, depth=4, progress=False).write(tmp_path / name)
    assert (tmp_path / "a.trec").read_bytes() == (tmp_path / "b.trec").read_bytes()


class Interrupt(Exception):
    pass


def test_resume_after_interruption_is_byte_identical(tiny_lm, tmp_path):
    full = UPRReranker(tiny_lm, small_config())
    full.rerank(QUERIES, first_stage(), DOCS, depth=5, progress=False).write(tmp_path / "full.trec")

    state = tmp_path / "state.tsv"
    broken = UPRReranker(tiny_lm, small_config())
    original, calls = broken.scorer._forward_suffix, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise Interrupt("injected failure")
        return original(*args, **kwargs)

    broken.scorer._forward_suffix = failing
    with pytest.raises(Interrupt):
        broken.rerank(QUERIES, first_stage(), DOCS, depth=5, progress=False, state_path=state)
    finished = state.read_text().count("#group ")
    assert 0 < finished < 6  # some groups (one document each) were saved, not all
    with open(state, "a") as f:
        f.write("q1\td1\t-1.2")  # a torn line from a crash mid-write is ignored

    resumed = UPRReranker(tiny_lm, small_config())
    original2, calls2 = resumed.scorer._forward_suffix, []
    resumed.scorer._forward_suffix = lambda *a, **k: (calls2.append(1), original2(*a, **k))[1]
    resumed.rerank(QUERIES, first_stage(), DOCS, depth=5, progress=False, state_path=state).write(
        tmp_path / "resumed.trec")
    assert (tmp_path / "resumed.trec").read_bytes() == (tmp_path / "full.trec").read_bytes()
    total_batches = sum(len(g.batches) for g in resumed.scorer.plan(
        [q.text for q in QUERIES for _ in range(5)], [DOCS.get(h.docid) for q in QUERIES
                                                      for h in first_stage()[q.qid][:5]]))
    assert 0 < len(calls2) < total_batches  # the resumed job did only the remaining work

    # another job (different depth) must not reuse this state
    with pytest.raises(InputError, match="another job"):
        UPRReranker(tiny_lm, small_config()).rerank(QUERIES, first_stage(), DOCS, depth=4, progress=False,
                                                    state_path=state)


def test_input_errors(tiny_lm):
    reranker = UPRReranker(tiny_lm)
    run = first_stage()
    with pytest.raises(InputError, match="nope"):
        reranker.rerank(QUERIES, Run({"q1": [Hit("nope", 1.0)]}), DOCS, progress=False)
    with pytest.raises(InputError, match="q2"):
        reranker.rerank([Query("q1", "x"), Query("q2", "  ")], Run({"q2": run["q2"]}), DOCS, progress=False)
    with pytest.raises(InputError, match="q9"):
        reranker.rerank(QUERIES, Run({"q9": run["q1"]}), DOCS, progress=False)
    with pytest.raises(InputError, match="depth"):
        reranker.rerank(QUERIES, run, DOCS, depth=0, progress=False)


def test_empty_query_hits_stay_empty(tiny_lm):
    run = Run({"q1": [], "q2": first_stage()["q2"]})
    out = UPRReranker(tiny_lm).rerank(QUERIES, run, DOCS, depth=2, progress=False)
    assert out["q1"] == [] and len(out["q2"]) == 6


def test_identity_and_registry(tiny_lm):
    run = first_stage()
    same = build_reranker("identity").rerank(QUERIES, run, DOCS, depth=2, progress=False)
    assert same.hits == run.hits
    assert {"identity", "upr", "upr-instruct"} <= set(RERANKERS)
    instruct = build_reranker("upr-instruct", lm=tiny_lm)
    assert instruct.name == "upr-instruct" and instruct.config.instruction
    with pytest.raises(InputError, match="unknown reranker"):
        build_reranker("nope")

    @register_reranker("test-hinted")
    def hinted(lm=None, config=None):
        return LMReranker(lm, config, hint_module=None, name="test-hinted")

    try:
        assert build_reranker("test-hinted", lm=tiny_lm).name == "test-hinted"
    finally:
        RERANKERS.pop("test-hinted")
    assert isinstance(IdentityReranker(), IdentityReranker)


def test_merge_reranked_floor():
    hits = [Hit("a", 9.0), Hit("b", 8.0), Hit("c", 7.0), Hit("d", 6.0)]
    merged = merge_reranked(hits, {"a": -3.0, "b": -1.0}, depth=2)
    assert [h.docid for h in merged] == ["b", "a", "c", "d"]
    assert merged[2].score < -3.0 and merged[3].score < merged[2].score
