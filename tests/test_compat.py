"""`python -m pyserini_qpeft.search lucene|faiss`: Pyserini's flags pass through untouched, ours are exact, output
formats hold after a reranker, flags that cannot apply to our FAISS indexes are refused."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import TOY_CORPUS
from pyserini_qpeft.types import read_run

pytestmark = pytest.mark.jvm


def compat(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyserini_qpeft.search", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture()
def indexes(toy_beir, tiny_lm, tiny_lm_path, tmp_path):
    """A Lucene index, one of our FAISS indexes (meta.json) and a plain Pyserini-style copy of it with our
    pre-encoded topics (no meta.json: Pyserini's own faiss path)."""
    from pyserini_qpeft.data import Document
    from pyserini_qpeft.search import build_index
    from pyserini_qpeft.search.encoded_queries import write_encoded_queries
    from pyserini_qpeft.search.encoders import FrozenLMEncoder, encode_corpus
    from pyserini_qpeft.types import Query

    lucene = build_index(toy_beir / "corpus.jsonl", tmp_path / "lucene")
    encoder = FrozenLMEncoder(tiny_lm, layer=1, max_length=32, lm_model=str(tiny_lm_path))
    docs = [Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS]
    ours = tmp_path / "faiss"
    encode_corpus(encoder, docs, ours, batch_size=4, progress=False)
    plain = tmp_path / "faiss-plain"
    shutil.copytree(ours, plain)
    (plain / "meta.json").unlink()
    topics = tmp_path / "topics.tsv"
    # d3's text matches every toy document, so BM25 retrieves all 6 of them (as dense search does)
    queries = [Query("q1", "what causes lung cancer"),
               Query("d3", "how do cells divide: lung cancer, aspirin, vitamin d, exercise and sleep")]
    topics.write_text("".join(f"{q.qid}\t{q.text}\n" for q in queries))
    encoded = write_encoded_queries(encoder, queries, tmp_path / "encoded", progress=False)
    return {"lucene": lucene, "ours": ours, "plain": plain, "topics": topics, "encoded": encoded, "lm": tiny_lm_path}


def test_pyserini_flags_that_share_a_prefix_with_ours_reach_pyserini(indexes, tmp_path):
    out = tmp_path / "run.trec"
    proc = compat("faiss", "--index", str(indexes["plain"]), "--topics", str(indexes["topics"]), "--encoded-queries",
                  str(indexes["encoded"]), "--output", str(out), "--hits", "4", "--max-passage",
                  "--max-passage-hits", "2", "--max-passage-delimiter", "#", "--fp16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = read_run(out)
    assert {q: len(run[q]) for q in run.qids()} == {"q1": 2, "d3": 2}  # --max-passage-hits honoured by Pyserini
    proc = compat("faiss", "--index", str(indexes["plain"]), "--topics", str(indexes["topics"]), "--encoded-queries",
                  str(indexes["encoded"]), "--output", str(out), "--hits", "3", "--rerank")
    assert "ambiguous" not in proc.stderr  # Pyserini's own --rerank (binary-code reranking), not our --rerank-*
    bad = compat("faiss", "--index", str(indexes["plain"]), "--topics", str(indexes["topics"]), "--output", str(out),
                 "--no-such-flag")
    assert bad.returncode == 2 and "--no-such-flag" in bad.stderr


def test_flags_that_cannot_apply_to_our_faiss_index_are_refused(indexes, tmp_path):
    for flag in (["--encoded-queries", str(indexes["encoded"])], ["--max-passage"], ["--encoder", "x"]):
        proc = compat("faiss", "--index", str(indexes["ours"]), "--topics", str(indexes["topics"]), "--output",
                      str(tmp_path / "run.trec"), *flag)
        assert proc.returncode == 2 and f"{flag[0]} does not apply to a pyserini_qpeft FAISS index" in proc.stderr
        assert not (tmp_path / "run.trec").exists()


@pytest.mark.parametrize("mode", ["lucene", "faiss"])
def test_output_format_msmarco_after_a_reranker(indexes, tmp_path, mode):
    out = tmp_path / "run.tsv"
    index = indexes["lucene"] if mode == "lucene" else indexes["ours"]
    extra = ["--bm25"] if mode == "lucene" else []
    corpus = [] if mode == "lucene" else ["--corpus", str(indexes["lucene"].parent / "toy")]
    proc = compat(mode, "--index", str(index), "--topics", str(indexes["topics"]), "--output", str(out), "--hits", "4",
                  "--output-format", "msmarco", *extra, "--reranker", "upr", "--rerank-depth", "3",
                  "--reranker-model", str(indexes["lm"]), "--reranker-device", "cpu", "--reranker-dtype", "fp32",
                  *corpus)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows and all(len(r) == 3 for r in rows)
    for qid in {r[0] for r in rows}:  # qid<TAB>docid<TAB>rank, ranks 1..n per query
        ranks = [int(r[2]) for r in rows if r[0] == qid]
        assert ranks == list(range(1, len(ranks) + 1))
        if mode == "faiss":  # a dense search ranks every document: --hits 4 of the 6 (mutant audit U: C01)
            assert len(ranks) == 4
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.trec"))


@pytest.mark.parametrize("mode", ["lucene", "faiss"])
def test_output_format_kilt_after_a_reranker_with_all_digit_query_ids(indexes, tmp_path, mode):
    """Pyserini keys all-digit query ids (BEIR's SciFact: "1", "23") as numbers in its KILT writer's topics: each
    query's line is its topic record with the reranked documents as provenance, as Pyserini's own loop writes it
    (audit Z: a KeyError traceback after the rerank)."""
    import json

    topics = tmp_path / "digits.tsv"
    topics.write_text("1\twhat causes lung cancer\n23\thow do cells divide: lung cancer, aspirin, vitamin d\n")
    index = indexes["lucene"] if mode == "lucene" else indexes["ours"]
    extra = ["--bm25"] if mode == "lucene" else ["--corpus", str(indexes["lucene"].parent / "toy")]
    out = tmp_path / "run.jsonl"
    proc = compat(mode, "--index", str(index), "--topics", str(topics), "--output", str(out), "--hits", "4",
                  "--output-format", "kilt", *extra, "--reranker", "upr", "--rerank-depth", "3",
                  "--reranker-model", str(indexes["lm"]), "--reranker-device", "cpu", "--reranker-dtype", "fp32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trec = tmp_path / "run.trec"
    proc = compat(mode, "--index", str(index), "--topics", str(topics), "--output", str(trec), "--hits", "4",
                  *extra, "--reranker", "upr", "--rerank-depth", "3", "--reranker-model", str(indexes["lm"]),
                  "--reranker-device", "cpu", "--reranker-dtype", "fp32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reranked = read_run(trec)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["title"] for line in lines] == ["what causes lung cancer",
                                                 "how do cells divide: lung cancer, aspirin, vitamin d"]
    for qid, line in zip(("1", "23"), lines):
        assert [p["wikipedia_id"] for p in line["output"][0]["provenance"]] == [h.docid for h in reranked[qid]]
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*kilt.tmp"))


def test_a_missing_index_or_topics_file_and_a_users_output_file_are_exit_3(indexes, tmp_path):
    """Pyserini prints "Unrecognized index name" and calls exit() (exit 0, no run: a script went on as if it had
    searched); a topics path to no file was Pyserini's traceback (exit 1); an --output holding a user's file was
    replaced (audit Z)."""
    out = tmp_path / "run.trec"
    base = ["lucene", "--topics", str(indexes["topics"]), "--output", str(out), "--bm25", "--hits", "3"]
    proc = compat(*base, "--index", str(tmp_path / "nope"))
    assert proc.returncode == 3 and "Pyserini stopped without searching" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()
    proc = compat("lucene", "--index", str(indexes["lucene"]), "--topics", str(tmp_path / "nope.tsv"), "--output",
                  str(out), "--bm25")
    assert proc.returncode == 3 and "nope.tsv" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    proc = compat(*base, "--index", str(indexes["lucene"]), "--reranker", "upr", "--corpus", str(tmp_path / "c.jsonl"))
    assert proc.returncode == 3 and "c.jsonl: no such corpus file" in proc.stderr and not out.exists()
    assert "Running" not in proc.stderr  # said before Pyserini's first stage (which prints "Running ...")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    proc = compat("lucene", "--index", str(indexes["lucene"]), "--topics", str(indexes["topics"]), "--output",
                  str(notes), "--bm25")
    assert proc.returncode == 3 and "exists and is not a run file" in proc.stderr and notes.read_text() == "mine\n"


def test_reranker_trust_remote_code_lets_a_model_with_its_own_code_rerank(indexes, remote_code_lm_path, tmp_path):
    """`--reranker-trust-remote-code` (prefixed like our other LM flags): without it such a model is refused with a
    message that names it; with it the model reranks, here exactly as the Llama whose weights it holds."""
    def rerank(model, out, *extra):
        return compat("lucene", "--index", str(indexes["lucene"]), "--topics", str(indexes["topics"]), "--output",
                      str(out), "--hits", "4", "--bm25", "--reranker", "upr", "--rerank-depth", "3",
                      "--reranker-model", str(model), "--reranker-device", "cpu", "--reranker-dtype", "fp32", *extra,
                      env={"PYSERINI_QPEFT_TRUST_REMOTE_CODE": ""})

    refused = rerank(remote_code_lm_path, tmp_path / "refused.trec")
    assert refused.returncode == 6 and "--reranker-trust-remote-code" in refused.stderr, refused.stderr[-2000:]
    assert rerank(indexes["lm"], tmp_path / "llama.trec").returncode == 0
    allowed = rerank(remote_code_lm_path, tmp_path / "remote.trec", "--reranker-trust-remote-code")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert (tmp_path / "remote.trec").read_text() == (tmp_path / "llama.trec").read_text()


def test_remove_query_gives_the_same_hit_count_on_bm25_and_dense(indexes, tmp_path):
    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli

    counts = {}
    for mode, index in (("--bm25", indexes["lucene"]), ("--dense", indexes["ours"])):
        out = tmp_path / f"{mode[2:]}.trec"
        result = CliRunner().invoke(cli, ["search", mode, "--index", str(index), "--topics", str(indexes["topics"]),
                                          "--output", str(out), "--hits", "6", "--remove-query", "-q"])
        assert result.exit_code == 0, result.output
        run = read_run(out)
        assert "d3" not in [h.docid for h in run["d3"]]
        counts[mode] = {q: len(run[q]) for q in run.qids()}
    assert counts["--bm25"]["d3"] == counts["--dense"]["d3"] == 5  # 6 hits, the query's own document dropped
    # and through Pyserini's flags on our FAISS index (mutant audit W: S3 dropped --remove-query there)
    out = tmp_path / "compat.trec"
    proc = compat("faiss", "--index", str(indexes["ours"]), "--topics", str(indexes["topics"]), "--output", str(out),
                  "--hits", "6", "--remove-query")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = read_run(out)
    assert "d3" not in [h.docid for h in run["d3"]] and len(run["d3"]) == 5


def test_help_lists_ours_and_pyserinis_flags(indexes):
    proc = compat("lucene", "--help")
    assert proc.returncode == 0
    assert "--reranker" in proc.stdout and "--bm25" in proc.stdout and "--output-format" in proc.stdout


def test_a_malformed_topics_file_is_refused_before_pyserini_runs(indexes, tmp_path):
    topics = tmp_path / "bad.tsv"
    topics.write_text("q1\twhat causes lung cancer\nq2\n")
    out = tmp_path / "run.trec"
    proc = compat("lucene", "--index", str(indexes["lucene"]), "--topics", str(topics), "--output", str(out),
                  "--bm25", "--hits", "3")
    assert proc.returncode == 3 and f"{topics}:2" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_topics_read_as_pyserini_reads_them_and_the_device_reaches_our_faiss_index(indexes, tmp_path):
    """With a reranker, the topics are read as Pyserini read them for the first stage: a numeric id with a leading
    zero (Pyserini's 7 for "007") no longer fails as "no topic text", and Pyserini's .json topics reach Pyserini
    (they were refused); `--device` reaches our FAISS index's query encoder (it was silently ignored)."""
    import json

    rerank = ["--bm25", "--hits", "4", "--reranker", "upr", "--rerank-depth", "3", "--reranker-model",
              str(indexes["lm"]), "--reranker-device", "cpu", "--reranker-dtype", "fp32"]
    zero = tmp_path / "zero.tsv"
    zero.write_text("007\twhat causes lung cancer\n")
    proc = compat("lucene", "--index", str(indexes["lucene"]), "--topics", str(zero), "--output",
                  str(tmp_path / "zero.trec"), *rerank)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain = compat("lucene", "--index", str(indexes["lucene"]), "--topics", str(zero), "--output",
                   str(tmp_path / "plain.trec"), "--bm25", "--hits", "4")
    assert read_run(tmp_path / "zero.trec").qids() == read_run(tmp_path / "plain.trec").qids() == ["7"]
    topics_json = tmp_path / "topics.json"
    topics_json.write_text(json.dumps({"q1": {"title": "what causes lung cancer"}}))
    proc = compat("lucene", "--index", str(indexes["lucene"]), "--topics", str(topics_json), "--output",
                  str(tmp_path / "json.trec"), *rerank)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_run(tmp_path / "json.trec").qids() == ["q1"]
    proc = compat("faiss", "--index", str(indexes["ours"]), "--topics", str(indexes["topics"]), "--output",
                  str(tmp_path / "gpu.trec"), "--device", "cuda:7")
    assert proc.returncode == 6 and "cuda" in proc.stderr, proc.stderr[-2000:]


def test_anserini_json_lines_topics_are_queried_by_their_title_as_pyserini_queries_them(indexes, tmp_path):
    """An Anserini JSON-lines topics file (``id``, ``title``, ``contents``): Pyserini queries the title; read as BEIR
    queries here, the ``contents`` was the query (another run, exit 0). It reaches Pyserini as given now, and the
    reranker reads the topics as Pyserini does."""
    import json

    topics = tmp_path / "anserini.jsonl"
    topics.write_text(json.dumps({"id": "1", "title": "what causes lung cancer", "contents": "aspirin heart"}) + "\n")
    titles = tmp_path / "titles.tsv"
    titles.write_text("1\twhat causes lung cancer\n")
    from pyserini_qpeft.artifacts.files import host_tag

    scratch = tmp_path / "scratch"  # $TMPDIR
    scratch.mkdir()
    stale = scratch / f".pyserini_qpeft-compat.99999999-{host_tag()}.x.tmp"  # left by a search killed with SIGKILL
    stale.mkdir()
    (stale / "first-stage.trec").write_text("q Q0 d 1 1.0 x\n")
    runs = {}
    for name, given in (("jsonl", topics), ("tsv", titles)):
        proc = compat("lucene", "--index", str(indexes["lucene"]), "--topics", str(given), "--output",
                      str(tmp_path / f"{name}.trec"), "--bm25", "--hits", "4", "--reranker", "upr", "--rerank-depth",
                      "3", "--reranker-model", str(indexes["lm"]), "--reranker-device", "cpu", "--reranker-dtype",
                      "fp32", env={**os.environ, "TMPDIR": str(scratch)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = (tmp_path / f"{name}.trec").read_text()
    assert runs["jsonl"] == runs["tsv"] and runs["jsonl"]
    # the work folder is named as every temporary of ours (one a SIGKILL left in $TMPDIR was never removed): none
    # left, the stale one swept
    assert not list(scratch.glob(".pyserini_qpeft-compat.*"))


def test_an_abbreviated_flag_this_module_reads_is_refused(indexes, tmp_path):
    """`--output-f msmarco` (Pyserini's parser takes abbreviations) was missed here, so a reranked run came out as
    TREC: an abbreviation of a flag read here is a usage error naming the full flag."""
    proc = compat("lucene", "--index", str(indexes["lucene"]), "--topics", str(indexes["topics"]), "--output",
                  str(tmp_path / "run.tsv"), "--bm25", "--output-f", "msmarco")
    assert proc.returncode == 2 and "--output-f: write Pyserini's flag in full (--output-format)" in proc.stderr
    assert not (tmp_path / "run.tsv").exists()


@pytest.mark.parametrize("mode", ["lucene", "faiss"])
def test_query_ids_and_texts_reach_pyserini_and_the_reranker_as_given(indexes, tmp_path, mode):
    """Ids as the first stage gives them: Pyserini (lucene) reads "01" as query 1, as stock Pyserini does, and the
    reranker follows; on our FAISS index the ids and their order are Pyserini's too, as stock pyserini.search.faiss
    writes them there (they stayed "007", "01": a hybrid with the lucene mode's run split each query in two). The
    reranker reads the query as `rerank` does (it read the copy's collapsed spaces)."""
    topics = tmp_path / "queries.jsonl"
    topics.write_text('{"_id": "01", "text": "what  causes lung cancer"}\n'
                      '{"_id": "007", "text": "does aspirin help the heart"}\n')
    index = indexes["lucene"] if mode == "lucene" else indexes["ours"]
    extra = ["--bm25"] if mode == "lucene" else []
    corpus = [] if mode == "lucene" else ["--corpus", str(indexes["lucene"].parent / "toy")]
    out = tmp_path / "run.trec"
    proc = compat(mode, "--index", str(index), "--topics", str(topics), "--output", str(out), "--hits", "4", *extra,
                  "--reranker", "upr", "--rerank-depth", "3", "--reranker-model", str(indexes["lm"]),
                  "--reranker-device", "cpu", "--reranker-dtype", "fp32", *corpus)
    assert proc.returncode == 0, proc.stderr[-3000:]
    compat_run = read_run(out)
    assert compat_run.qids() == ["1", "7"]  # Pyserini's ids and order, on our FAISS index too (stock faiss's)
    first = tmp_path / "first.trec"
    with open(first, "w") as f:  # the same first stage, reranked by `pyserini-qpeft rerank` with the same topics
        for qid in compat_run.qids():
            for rank, hit in enumerate(read_run(out)[qid][:4], start=1):
                f.write(f"{qid} Q0 {hit.docid} {rank} {10.0 - rank} x\n")
    rerank_topics = tmp_path / "keyed.tsv"  # the same queries under the ids the first stage wrote
    rerank_topics.write_text("1\twhat  causes lung cancer\n7\tdoes aspirin help the heart\n")
    proc = subprocess.run([sys.executable, "-m", "pyserini_qpeft", "rerank", "--run", str(first), "--topics",
                           str(rerank_topics), "--corpus", str(indexes["lucene"].parent / "toy"), "--reranker", "upr",
                           "--rerank-depth", "3", "--model", str(indexes["lm"]), "--device", "cpu", "--dtype",
                           "fp32", "--output", str(tmp_path / "rr.trec")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = read_run(tmp_path / "rr.trec")
    for qid in ours.qids():  # the same query text scored: the same scores for the documents both reranked
        theirs = {h.docid: h.score for h in compat_run[qid][:3]}
        assert {h.docid: h.score for h in ours[qid][:3] if h.docid in theirs} == \
            {d: s for d, s in theirs.items() if d in {h.docid for h in ours[qid][:3]}}


def test_pyserini_topic_names_go_to_pyserini_and_local_beir_names_are_read_here(toy_beir, tmp_path, monkeypatch):
    """A Pyserini topics name (not a BEIR dataset on the data search path) reaches Pyserini as given: some have a
    predefined query order (msmarco-doc-dev, msmarco-passage-dev-subset) that a TSV copy lost (ids came out sorted).
    A BEIR name found locally, a BEIR queries.jsonl and a TSV file are read here (a TSV copy, checked first); on our
    own FAISS index everything is read here."""
    from pyserini_qpeft.search.compat import _local_topics, _pyserini_reads_itself

    monkeypatch.setenv("PYSERINI_QPEFT_DATA", str(toy_beir.parent))
    assert _pyserini_reads_itself("msmarco-passage-dev-subset") and _pyserini_reads_itself("msmarco-doc-dev")
    assert not _pyserini_reads_itself("beir-v1.0.0-toy-test")
    assert not _pyserini_reads_itself(str(toy_beir / "queries.jsonl"))
    assert _local_topics("msmarco-doc-dev", tmp_path) == ("msmarco-doc-dev", None)
    copy, queries = _local_topics("beir-v1.0.0-toy-test", tmp_path)
    assert copy.endswith("topics.tsv") and queries


def test_anserini_and_other_json_lines_topics_are_read_here_into_the_copy(tmp_path):
    """Anserini JSON-lines topics (``id``, ``title``) are read here by their title, as Pyserini reads them, and go to
    Pyserini as the TSV copy: handed to Pyserini as given, an ``{"id", "text"}`` file (which this package reads)
    crashed it (no title: a Java NullPointerException), ``.jsonl.gz`` was a format it cannot parse, and a path
    holding "beir" made it pick its TSV reader (audit S-16..S-18)."""
    import gzip
    import json
    from pathlib import Path

    from pyserini_qpeft.search.compat import _local_topics

    beir_dir = tmp_path / "my-beir-topics"
    beir_dir.mkdir()
    anserini = [{"id": "1", "title": "what causes lung cancer", "contents": "aspirin heart"}]
    cases = {beir_dir / "an.jsonl": ("\n".join(map(json.dumps, anserini)) + "\n", "what causes lung cancer"),
             tmp_path / "plain.jsonl": (json.dumps({"id": "1", "text": "cells and proteins"}) + "\n",
                                        "cells and proteins")}
    for path, (content, query) in cases.items():
        path.write_text(content)
        (tmp_path / path.stem).mkdir()
        copy, queries = _local_topics(str(path), tmp_path / path.stem)
        assert Path(copy).read_text() == f"1\t{query}\n" and [q.text for q in queries] == [query]
    gz = tmp_path / "an.jsonl.gz"
    with gzip.open(gz, "wt") as out:
        out.write(json.dumps(anserini[0]) + "\n")
    (tmp_path / "gz").mkdir()
    copy, queries = _local_topics(str(gz), tmp_path / "gz")
    assert Path(copy).read_text() == "1\twhat causes lung cancer\n"
