"""rank_llm requests in and results out, and the in-process API (rank / score / rerank_hits)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import TOY_CORPUS
from pyserini_qpeft.errors import InputError
from pyserini_qpeft.types import read_run

DOCS = {d["_id"]: d for d in TOY_CORPUS}


def request(qid, text, docids, doc_shape="beir"):
    def doc(d):
        if doc_shape == "contents":
            return {"contents": f"{DOCS[d]['title']} {DOCS[d]['text']}".strip()}
        return {"title": DOCS[d]["title"], "text": DOCS[d]["text"]}

    return {"query": {"text": text, "qid": qid},
            "candidates": [{"docid": d, "score": float(len(docids) - i), "doc": doc(d)} for i, d in enumerate(docids)]}


def test_rank_llm_requests_round_trip_through_the_cli(tiny_lm_path, tmp_path):
    from pyserini_qpeft.cli.main import cli

    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps(request(7, "what causes lung cancer", ["d2", "d1", "d3", "d5"])) + "\n" +
                        json.dumps(request("q2", "does aspirin help the heart", ["d1", "d2", "d6"], "contents")) + "\n")
    lm = ["--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "-q"]
    args = ["rerank", "--requests", str(requests), "--reranker", "upr", "--rerank-depth", "3", *lm]
    result = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "run.trec"), "--output-jsonl",
                                      str(tmp_path / "results.jsonl")])
    assert result.exit_code == 0, result.output
    run = read_run(tmp_path / "run.trec")
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["query"] for r in results] == [{"text": "what causes lung cancer", "qid": 7},
                                             {"text": "does aspirin help the heart", "qid": "q2"}]
    for r in results:  # rank_llm's Result: candidates in the new order with the new scores, docs unchanged
        qid = str(r["query"]["qid"])
        assert [c["docid"] for c in r["candidates"]] == [h.docid for h in run[qid]]
        assert [c["score"] for c in r["candidates"]] == pytest.approx([h.score for h in run[qid]], abs=1e-6)
        assert all(c["doc"] for c in r["candidates"])
    assert [c["docid"] for c in results[0]["candidates"]][3] == "d5"  # below depth: kept, in its place

    # round trip: a Result is a valid Request; identity keeps its order
    again = CliRunner().invoke(cli, ["rerank", "--requests", str(tmp_path / "results.jsonl"), "--output",
                                     str(tmp_path / "again.trec"), "--output-jsonl", str(tmp_path / "again.jsonl"),
                                     "-q"])
    assert again.exit_code == 0, again.output
    assert [json.loads(l)["candidates"] for l in (tmp_path / "again.jsonl").read_text().splitlines()] == \
        [r["candidates"] for r in results]



def test_a_failed_jsonl_write_costs_no_rescoring(tiny_lm_path, tmp_path, monkeypatch):
    """`rerank --output-jsonl` wrote the run and deleted the scores' resume state before writing the JSONL: a full
    disk there meant rescoring every pair. The state stays until the JSONL is written; the rerun scores nothing."""
    import errno

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.rerank import lm as lm_module
    from pyserini_qpeft.rerank import requests as requests_module

    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps(request("q1", "what causes lung cancer", ["d2", "d1", "d3"])) + "\n")
    args = ["rerank", "--requests", str(requests), "--reranker", "upr", "--rerank-depth", "3", "--model",
            str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "-q", "--output", str(tmp_path / "run.trec"),
            "--output-jsonl", str(tmp_path / "results.jsonl")]
    original = requests_module.write_results

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "results.jsonl"))

    monkeypatch.setattr(requests_module, "write_results", full_disk)
    failed = CliRunner().invoke(cli, args)
    assert failed.exit_code == 3 and "No space left on device" in failed.output, failed.output
    assert (tmp_path / "run.trec.partial").is_file() and not (tmp_path / "results.jsonl").exists()
    monkeypatch.setattr(requests_module, "write_results", original)
    scored = []
    monkeypatch.setattr(lm_module._State, "append", lambda self, records: scored.append(records))
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert not scored and (tmp_path / "results.jsonl").is_file() and not (tmp_path / "run.trec.partial").exists()


@pytest.mark.parametrize("line, message", [
    ('{"query": {"text": "x"}, "candidates": []}', "'qid'"),
    ('{"query": {"text": "x", "qid": 2}, "candidates": [{"docid": "a"}]}', "'docid' and 'doc'"),
    ('{"query": {"text": "x", "qid": 2}, "candidates": [{"docid": "a", "doc": {"title": "t"}}]}', "r.jsonl:2: .*no 'text'"),
    ('{"query": {"text": "x", "qid": 1}, "candidates": []}', "r.jsonl:2: query 1 appears twice"),
])
def test_bad_requests_name_file_and_line(tmp_path, line, message):
    from pyserini_qpeft.rerank.requests import read_requests

    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(request(1, "a", ["d1"])) + "\n" + line + "\n")
    with pytest.raises(InputError, match=message):
        read_requests(path)


def test_in_process_api_rank_score_and_pyserini_hits(tiny_lm):
    from types import SimpleNamespace

    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.rerank import IdentityReranker, UPRReranker

    reranker = UPRReranker(tiny_lm, ScorerConfig(batch_size=4))
    texts = [DOCS[d]["text"] for d in ("d1", "d2", "d3")]
    ranked = reranker.rank("what causes lung cancer", texts)
    assert sorted(r["corpus_id"] for r in ranked) == [0, 1, 2]
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert ranked[0]["text"] == texts[ranked[0]["corpus_id"]]
    assert reranker.rank("what causes lung cancer", texts, top_k=1) == ranked[:1]

    scores = reranker.score([("what causes lung cancer", t) for t in texts])
    by_id = {r["corpus_id"]: r["score"] for r in ranked}
    assert scores == pytest.approx([by_id[i] for i in range(3)], abs=1e-5)
    assert reranker.score([("what causes lung cancer", t) for t in texts], batch_size=1) == pytest.approx(scores,
                                                                                                         abs=1e-5)

    lucene_hits = [SimpleNamespace(docid=d, score=3.0 - i, raw=json.dumps({"title": DOCS[d]["title"],
                                                                           "text": DOCS[d]["text"]}))
                   for i, d in enumerate(("d1", "d2", "d3"))]
    hits = reranker.rerank_hits("what causes lung cancer", lucene_hits)
    assert sorted(h.docid for h in hits) == ["d1", "d2", "d3"]
    class LuceneDocument:  # Pyserini 1.x hits: the raw JSON sits in hit.lucene_document
        def __init__(self, raw):
            self.raw = raw

        def get(self, field):
            return self.raw if field == "raw" else None

    pyserini1_hits = [SimpleNamespace(docid=h.docid, score=h.score, lucene_document=LuceneDocument(h.raw))
                      for h in lucene_hits]
    assert reranker.rerank_hits("what causes lung cancer", pyserini1_hits) == hits
    faiss_hits = [SimpleNamespace(docid=d, score=1.0) for d in ("d1", "d2")]
    with pytest.raises(InputError, match="pass docs="):
        reranker.rerank_hits("q", faiss_hits)
    assert [h.docid for h in reranker.rerank_hits("q", faiss_hits, docs={d: DOCS[d]["text"] for d in DOCS})]
    assert [r["corpus_id"] for r in IdentityReranker().rank("q", ["a", "b", "c"])] == [0, 1, 2]

    # one pair, not in a list: one float, as FlagEmbedding's compute_score and CrossEncoder.predict answer
    assert reranker.score(("what causes lung cancer", texts[1])) == pytest.approx(scores[1], abs=1e-5)
    assert reranker.score(["what causes lung cancer", texts[1]], batch_size=1) == pytest.approx(scores[1], abs=1e-5)
    assert IdentityReranker().score(("q", "a")) == IdentityReranker().score([("q", "a")])[0]
    with pytest.raises(TypeError, match="pair 1"):
        reranker.score([("q", "a"), "not a pair"])
    assert reranker.compute_score([("what causes lung cancer", t) for t in texts]) == scores  # FlagEmbedding's name
    assert reranker.rank("what causes lung cancer", texts, batch_size=1, return_documents=False) == [
        {"corpus_id": r["corpus_id"], "score": pytest.approx(r["score"], abs=1e-5)} for r in ranked]
    assert reranker.rank("what causes lung cancer", texts, top_k=0) == []
    with pytest.raises(ValueError, match="top_k"):
        reranker.rank("what causes lung cancer", texts, top_k=-1)  # not "all but the last"


def test_results_jsonl_of_a_corpus_rerank_carry_every_hits_text(toy_beir, tiny_lm_path, tmp_path):
    """--corpus keeps only the documents a rerank reads, except with --output-jsonl, whose records carry the text
    of every hit, the ones below --rerank-depth too."""
    from pyserini_qpeft.cli.main import cli

    run = tmp_path / "bm25.trec"
    run.write_text("q1 Q0 d1 1 3.0 bm25\nq1 Q0 d2 2 2.0 bm25\nq1 Q0 d3 3 1.0 bm25\n")
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\twhat causes lung cancer\n")
    result = CliRunner().invoke(cli, ["rerank", "--run", str(run), "--topics", str(topics), "--corpus",
                                      str(toy_beir), "--reranker", "upr", "--rerank-depth", "1", "--output",
                                      str(tmp_path / "upr.trec"), "--output-jsonl", str(tmp_path / "upr.jsonl"),
                                      "--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "-q"])
    assert result.exit_code == 0, result.output
    [record] = [json.loads(line) for line in (tmp_path / "upr.jsonl").read_text().splitlines()]
    assert [c["doc"]["title"] for c in record["candidates"]] == ["Lung cancer", "Aspirin", "Mitosis"]


def test_rerank_writes_msmarco_runs_in_the_trec_runs_order(toy_beir, tiny_lm_path, tmp_path):
    """--output-format msmarco (Pyserini's flag) writes qid<TAB>docid<TAB>rank in the order the TREC run ranks;
    with --output-jsonl, which carries scores, it is refused (exit 2) before any work."""
    from pyserini_qpeft.cli.main import cli

    run = tmp_path / "bm25.trec"
    run.write_text("q1 Q0 d1 1 3.0 bm25\nq1 Q0 d2 2 2.0 bm25\nq1 Q0 d3 3 1.0 bm25\nq1 Q0 d4 4 0.5 bm25\n")
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\twhat causes lung cancer\n")
    args = ["rerank", "--run", str(run), "--topics", str(topics), "--corpus", str(toy_beir), "--reranker", "upr",
            "--rerank-depth", "3", "--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "-q"]
    trec = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "upr.trec")])
    msmarco = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "upr.tsv"), "--output-format", "msmarco"])
    assert trec.exit_code == 0 and msmarco.exit_code == 0, trec.output + msmarco.output
    rows = [line.split("\t") for line in (tmp_path / "upr.tsv").read_text().splitlines()]
    assert [r[1] for r in rows] == [h.docid for h in read_run(tmp_path / "upr.trec")["q1"]]
    assert [r[2] for r in rows] == ["1", "2", "3", "4"] and rows[3][1] == "d4"  # below depth: kept, in its place
    refused = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "x.tsv"), "--output-format", "msmarco",
                                       "--output-jsonl", str(tmp_path / "x.jsonl")])
    assert refused.exit_code == 2 and "--output-jsonl carries the new scores" in refused.output
