"""Rerankers: all hits kept, below-depth order, determinism, resume byte-identical, input errors, registry."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import TOY_CORPUS, TOY_QUERIES
from pyserini_qpeft.data import Document
from pyserini_qpeft.errors import InputError
from pyserini_qpeft.rerank import (BUILTIN_RERANKERS, DictDocStore, LMReranker, UPRReranker, build_reranker,
                                   get_reranker_factory, merge_reranked, register_reranker, reranker_names,
                                   unregister_reranker)
from pyserini_qpeft.lm.scoring import ScorerConfig
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


class RecordingScorer:
    """Stands in for a reranker's scorer (its public ``scorer`` attribute): delegates everything, records the
    batches it computes, and fails like a killed job after ``fail_after`` of them."""

    def __init__(self, scorer, fail_after: int | None = None):
        self.scorer, self.fail_after, self.computed = scorer, fail_after, []

    def __getattr__(self, name):
        return getattr(self.scorer, name)

    def score_batches(self, *args, **kwargs):
        for group, batch, values in self.scorer.score_batches(*args, **kwargs):
            if self.fail_after is not None and len(self.computed) >= self.fail_after:
                raise Interrupt("injected failure")
            self.computed.append(batch)
            yield group, batch, values


def test_resume_after_interruption_is_byte_identical(tiny_lm, tmp_path):
    full = UPRReranker(tiny_lm, small_config())
    full.rerank(QUERIES, first_stage(), DOCS, depth=5, progress=False).write(tmp_path / "full.trec")
    pairs = [(q.text, DOCS.get(h.docid)) for q in QUERIES for h in first_stage()[q.qid][:5]]
    plan = full.scorer.plan([q for q, _ in pairs], [d for _, d in pairs])
    batches = sorted(tuple(b) for g in plan for b in g.batches)
    assert len(plan) == 6 and len(batches) > 6  # one group per document (prefix_batch_size=1), some with 2 batches

    state = tmp_path / "state.tsv"
    broken = UPRReranker(tiny_lm, small_config())
    broken.scorer = RecordingScorer(broken.scorer, fail_after=3)
    with pytest.raises(Interrupt):
        broken.rerank(QUERIES, first_stage(), DOCS, depth=5, progress=False, state_path=state)
    assert state.read_text().count("#done\n") == 3  # the finished batches were saved, not the rest
    with open(state, "a") as f:
        f.write("q1\td1\t-1.2")  # a torn line from a crash mid-write is ignored

    resumed = UPRReranker(tiny_lm, small_config())
    resumed.scorer = RecordingScorer(resumed.scorer)
    resumed.rerank(QUERIES, first_stage(), DOCS, depth=5, progress=False, state_path=state).write(
        tmp_path / "resumed.trec")
    assert (tmp_path / "resumed.trec").read_bytes() == (tmp_path / "full.trec").read_bytes()
    # the resumed job did only the remaining work
    assert sorted(broken.scorer.computed + resumed.scorer.computed) == batches

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


def test_identity_keeps_the_run():
    run = first_stage()
    same = build_reranker("identity").rerank(QUERIES, run, DOCS, depth=2, progress=False)
    assert same.hits == run.hits and same is not run
    with pytest.raises(InputError, match="q9"):
        build_reranker("identity").rerank(QUERIES, Run({"q9": run["q1"]}), DOCS, progress=False)


def test_registry_lists_every_builtin_and_refuses_unknown_names():
    assert set(reranker_names()) >= {"identity", "upr", "upr-instruct", "qpeft-retr", "qpeft-attn", "prompt-tuning"}
    assert set(BUILTIN_RERANKERS) <= set(reranker_names())
    for name in BUILTIN_RERANKERS:
        assert callable(get_reranker_factory(name)), name
    with pytest.raises(InputError, match="unknown reranker 'nope'; choose from identity, "):
        build_reranker("nope")


def test_upr_factories_take_overrides_and_refuse_checkpoints(tiny_lm, tmp_path):
    instruct = build_reranker("upr-instruct", lm=tiny_lm)
    assert instruct.name == "upr-instruct" and instruct.config.instruction
    upr = build_reranker("upr", lm=tiny_lm, scorer_overrides={"batch_size": 3, "max_passage_tokens": 9})
    assert upr.name == "upr" and (upr.config.batch_size, upr.config.max_passage_tokens) == (3, 9)
    assert upr.config.instruction == ""
    for name in ("upr", "upr-instruct"):
        with pytest.raises(InputError, match="only for trained rerankers"):
            build_reranker(name, lm=tiny_lm, checkpoint=tmp_path)


def test_prompt_presets_word_the_scored_prompt(tiny_lm, tiny_lm_path):
    """--prompt claim: the template asks for a claim and 'Claim:' precedes the query; question is UPR's default."""
    from pyserini_qpeft.lm.prompts import PROMPTS, prompt_fields, prompt_name
    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.rerank.pipeline import make_reranker

    assert prompt_name(ScorerConfig()) == "question" and prompt_fields("question")["question_prefix"] == "Question:"
    claim = make_reranker("upr", None, str(tiny_lm_path), "cpu", "fp32", prompt="claim")
    assert prompt_name(claim.config) == "claim" and claim.config.question_prefix == "Claim:"
    text = tiny_lm.tokenizer.decode(claim.scorer.prompts.prompt_ids("aspirin helps", DOCS.get("d1")))
    assert "write a claim based on this passage" in text and text.endswith("Claim: aspirin helps")
    default = make_reranker("upr", None, str(tiny_lm_path), "cpu", "fp32")
    assert prompt_name(default.config) == "question"
    pairs = [("aspirin helps", DOCS.get("d1")), ("aspirin helps", DOCS.get("d2"))]
    assert claim.score(pairs) != default.score(pairs)  # another prompt, other likelihoods
    assert prompt_name(ScorerConfig(question_prefix="Q:")) is None
    with pytest.raises(ValueError, match="unknown prompt 'essay'; prompts: question, claim"):
        prompt_fields("essay")
    assert set(PROMPTS) == {"question", "claim"}


def test_register_reranker_by_object_and_by_reference(tiny_lm):
    @register_reranker("test-hinted")
    def hinted(*, lm=None, checkpoint=None, scorer_overrides=None):
        return LMReranker(lm, None, hint_module=None, name="test-hinted")

    register_reranker("test-ref", "pyserini_qpeft.rerank.base:make_identity")
    try:
        assert {"test-hinted", "test-ref"} <= set(reranker_names())
        assert build_reranker("test-hinted", lm=tiny_lm).name == "test-hinted"
        assert build_reranker("test-ref").name == "identity"
        register_reranker("test-hinted", hinted)  # the same factory again is fine
        with pytest.raises(ValueError, match="already registered"):
            register_reranker("test-hinted", lambda **kw: None)
        with pytest.raises(ValueError, match="already registered"):
            register_reranker("upr", hinted)
    finally:
        unregister_reranker("test-hinted")
        unregister_reranker("test-ref")
    assert "test-hinted" not in reranker_names()
    with pytest.raises(ValueError, match="built in"):
        unregister_reranker("upr")


def test_qpeft_reranker_builds_in_a_fresh_process_without_the_cli(tiny_lm, tiny_lm_path, tmp_path):
    """The registry is complete on import: no CLI module has to register the Q-PEFT rerankers first."""
    from pyserini_qpeft.qpeft.checkpoint import save_checkpoint
    from pyserini_qpeft.qpeft.module import QPeftConfig, build_module

    config = QPeftConfig(variant="attn")
    path = save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm, small_config())
    code = f"""
import sys
from pyserini_qpeft.rerank import build_reranker, reranker_names
from pyserini_qpeft.errors import InputError
assert "qpeft-attn" in reranker_names()
assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "transformers") or ".cli" in m], "eager import"
try:
    build_reranker("qpeft-attn")
except InputError as exc:
    assert "--reranker-checkpoint" in str(exc), exc
from pyserini_qpeft.lm.backbone import LMConfig
reranker = build_reranker("qpeft-attn", lm=LMConfig(model={str(tiny_lm_path)!r}, device="cpu", dtype="fp32"),
                          checkpoint={str(path)!r}, scorer_overrides={{"batch_size": 3}})
assert reranker.scorer.hint_module.config.variant == "attn" and reranker.config.batch_size == 3
assert not [m for m in sys.modules if m.startswith("pyserini_qpeft.cli")]
print(reranker.name)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["qpeft-attn"]


def test_merge_reranked_floor():
    hits = [Hit("a", 9.0), Hit("b", 8.0), Hit("c", 7.0), Hit("d", 6.0)]
    merged = merge_reranked(hits, {"a": -3.0, "b": -1.0}, depth=2)
    assert [h.docid for h in merged] == ["b", "a", "c", "d"]
    assert merged[2].score < -3.0 and merged[3].score < merged[2].score


def test_cli_rerank_writes_the_library_run(tiny_lm, tiny_lm_path, toy_beir, tmp_path):
    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli

    run = first_stage()
    run.write(tmp_path / "bm25.trec")
    UPRReranker(tiny_lm, ScorerConfig(batch_size=3)).rerank(QUERIES, run, DOCS, depth=4, progress=False).write(
        tmp_path / "expected.trec", tag="upr")
    args = ["rerank", "--run", str(tmp_path / "bm25.trec"), "--topics", str(toy_beir / "queries.jsonl"),
            "--corpus", str(toy_beir / "corpus.jsonl"), "--output", str(tmp_path / "upr.trec"), "--reranker", "upr",
            "--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "--rerank-depth", "4",
            "--batch-size-rerank", "3", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "upr.trec").read_bytes() == (tmp_path / "expected.trec").read_bytes()
    assert not (tmp_path / "upr.trec.partial").exists()
    # --max-query-tokens reaches the scorer: the library's run at a 4-token query budget
    UPRReranker(tiny_lm, ScorerConfig(batch_size=3, max_query_tokens=4)).rerank(
        QUERIES, run, DOCS, depth=4, progress=False).write(tmp_path / "expected4.trec", tag="upr")
    result = CliRunner().invoke(cli, args[:-1] + ["--max-query-tokens", "4", "--output", str(tmp_path / "upr4.trec")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "upr4.trec").read_bytes() == (tmp_path / "expected4.trec").read_bytes()
    assert (tmp_path / "upr4.trec").read_bytes() != (tmp_path / "upr.trec").read_bytes()
    for extra, message, code in ((["--reranker-checkpoint", str(tmp_path)], "only for trained rerankers", 3),
                                 (["--reranker", "nope"], "'nope' is not one of 'identity'", 2),
                                 (["--index", str(tmp_path)], "--index and --corpus both give document text", 2)):
        bad = CliRunner().invoke(cli, args[:-1] + extra + ["--output", str(tmp_path / "bad.trec")])
        assert bad.exit_code == code and message in bad.output, bad.output


def test_a_corpus_docstore_keeps_only_the_documents_the_rerank_reads(toy_beir, tmp_path):
    """`rerank --corpus` on a big JSONL (MS MARCO: 8.8 M passages) holds the run's top-depth documents, not the file;
    every line is still read, so a repeated docid is still refused, and an absent one names the corpus."""
    import json

    from pyserini_qpeft.rerank.pipeline import open_docstore, run_docids

    run = Run({"q1": [Hit("d1", 3.0), Hit("d2", 2.0), Hit("d3", 1.0)], "q2": [Hit("d2", 2.0), Hit("d6", 1.0)]})
    assert run_docids(run, 1) == {"d1", "d2"} and run_docids(run) == {"d1", "d2", "d3", "d6"}
    docs = open_docstore(corpus=toy_beir, needed=run_docids(run, 1))
    assert len(docs) == 2 and docs.get("d2").title == "Aspirin"
    with pytest.raises(InputError, match=r"corpus.jsonl: unknown docid 'd3' \(not in the corpus\)"):
        docs.get("d3")
    assert len(open_docstore(corpus=toy_beir)) == len(TOY_CORPUS)
    repeated = tmp_path / "repeated.jsonl"
    repeated.write_text("".join(json.dumps(d) + "\n" for d in [*TOY_CORPUS, TOY_CORPUS[-1]]))
    with pytest.raises(InputError, match="docid d6 appears twice"):
        open_docstore(corpus=repeated, needed={"d1"})
