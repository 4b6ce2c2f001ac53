"""Pyserini's names beyond BEIR: topics and qrels (``dl19-passage``) read through Anserini's cache, prebuilt Lucene
indexes (``beir-v1.0.0-scifact.flat``) through Pyserini's. Nothing here touches the network or the user's caches:
Anserini's cache is redirected with ``-Duser.home`` in a child process, Pyserini's with ``$PYSERINI_CACHE``."""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_beir
from pyserini_qpeft.errors import InputError

pytestmark = pytest.mark.jvm

# Fake copies of two files Anserini would download: ids out of numeric order, a query id that is not in the qrels
DL19_TOPICS = "1048585\tlung cancer smoking\n156493\taspirin heart\n19335\tmitosis cells\n"
DL19_QRELS = "156493 0 d2 3\n156493 0 d5 1\n1048585 0 d1 2\n1048585 0 d6 0\n"
# Anserini's copies of BEIR SciFact's test topics and qrels (two queries), for a machine without the BEIR dataset
SCIFACT_TOPICS = "1\twhat causes lung cancer\n13\tdoes aspirin help the heart\n"
SCIFACT_QRELS = "1 0 d1 1\n13 0 d2 1\n"


@pytest.fixture(scope="module")
def toy_index(tmp_path_factory):
    from pyserini_qpeft.search import build_index

    root = write_beir(tmp_path_factory.mktemp("data") / "toy")
    return build_index(root, tmp_path_factory.mktemp("idx") / "lucene-toy")


def anserini_home(tmp_path: Path) -> dict:
    """A child's environment whose Anserini cache (user.home/.cache/pyserini/topics-and-qrels) holds DL19's files."""
    cache = tmp_path / "home" / ".cache" / "pyserini" / "topics-and-qrels"
    cache.mkdir(parents=True)
    (cache / "topics.dl19-passage.txt").write_text(DL19_TOPICS)
    (cache / "qrels.dl19-passage.txt").write_text(DL19_QRELS)
    (cache / "topics.beir-v1.0.0-scifact.test.tsv.gz").write_bytes(gzip.compress(SCIFACT_TOPICS.encode()))
    (cache / "qrels.beir-v1.0.0-scifact.test.txt").write_text(SCIFACT_QRELS)
    options = f"{os.environ.get('JAVA_TOOL_OPTIONS', '')} -Duser.home={tmp_path / 'home'}".strip()
    (tmp_path / "no-datasets").mkdir()
    return dict(os.environ, JAVA_TOOL_OPTIONS=options, PYSERINI_CACHE=str(tmp_path / "pyserini-cache"),
                PYSERINI_QPEFT_DATA=str(tmp_path / "no-datasets"), PYSERINI_QPEFT_CACHE=str(tmp_path / "qpeft-cache"))


def test_topics_and_qrels_by_pyserini_name_in_search_evaluate_and_the_compat_rerank(toy_index, tiny_lm_path,
                                                                                   tmp_path):
    """The canonical non-BEIR Pyserini command: `--topics dl19-passage`, first stage + LLM rerank, then evaluate
    against `--qrels dl19-passage`. Until 2026-12-06 the compat rerank stopped after Pyserini's own BM25 ("topics
    'dl19-passage': no such file") and `search`/`evaluate` refused the names."""
    env = anserini_home(tmp_path)
    run = tmp_path / "bm25.trec"
    cli = [sys.executable, "-m", "pyserini_qpeft"]
    proc = subprocess.run(cli + ["search", "--index", str(toy_index), "--topics", "dl19-passage", "--output", str(run),
                                 "--hits", "3", "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    qids = list(dict.fromkeys(line.split()[0] for line in run.read_text().splitlines()))
    assert qids == ["19335", "156493", "1048585"]  # Pyserini's order: numeric
    top = {line.split()[0]: line.split()[2] for line in run.read_text().splitlines() if line.split()[3] == "1"}
    assert top == {"1048585": "d1", "156493": "d2", "19335": "d3"}  # each title was searched
    proc = subprocess.run(cli + ["evaluate", "--qrels", "dl19-passage", "--run", str(run), "-m", "ndcg@10", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["ndcg@10"] > 0.5  # stdout holds only the JSON
    beir = tmp_path / "beir.trec"  # a BEIR name whose dataset is not on the search path: Pyserini's copy
    proc = subprocess.run(cli + ["search", "--index", str(toy_index), "--topics", "beir-v1.0.0-scifact-test",
                                 "--output", str(beir), "--hits", "2", "-q"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line.split()[:3] for line in beir.read_text().splitlines() if line.split()[3] == "1"] == [
        ["1", "Q0", "d1"], ["13", "Q0", "d2"]]
    proc = subprocess.run(cli + ["evaluate", "--qrels", "beir-v1.0.0-scifact-test", "--run", str(beir), "-m",
                                 "hit@1", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"hit@1": 1.0}, proc.stderr[-2000:]
    reranked = tmp_path / "upr.trec"
    proc = subprocess.run([sys.executable, "-m", "pyserini_qpeft.search", "lucene", "--index", str(toy_index),
                           "--topics", "dl19-passage", "--output", str(reranked), "--bm25", "--hits", "3",
                           "--reranker", "upr", "--rerank-depth", "3", "--reranker-model", str(tiny_lm_path),
                           "--reranker-device", "cpu", "--reranker-dtype", "fp32"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pairs = {tuple(line.split()[:3:2]) for line in reranked.read_text().splitlines()}
    assert pairs == {tuple(line.split()[:3:2]) for line in run.read_text().splitlines()}  # the same BM25 hits, reranked
    assert reranked.read_text().split()[5] == "upr"


def test_unknown_names_and_missing_files_say_what_is_accepted():
    from pyserini_qpeft.data import load_qrels, load_topics

    with pytest.raises(InputError, match=r"not a Pyserini topics name.*dl19-passage"):
        load_topics("dl19-passages")
    with pytest.raises(InputError, match=r"qrels 'no-such-qrels': no such file.*msmarco-passage-dev-subset"):
        load_qrels("no-such-qrels")
    with pytest.raises(InputError, match=r"topics 'missing/topics.tsv': no such file"):
        load_topics("missing/topics.tsv")


def test_a_failed_anserini_download_is_an_input_error(monkeypatch):
    """No network: Anserini's IOException becomes an InputError naming the topics and what to do (not a traceback)."""
    import jnius
    import pyserini.search

    from pyserini_qpeft.data import load_topics
    from pyserini_qpeft.data.pyserini_names import is_name

    assert is_name("dl19-passage", "topics")

    def offline(name):
        raise jnius.JavaException("JVM exception occurred: java.io.IOException: Error downloading topics from "
                                  "https://raw.githubusercontent.com/x/topics.dl19-passage.txt\n\tat io.anserini...")

    monkeypatch.setattr(pyserini.search, "get_topics", offline)
    with pytest.raises(InputError, match=r"could not read or download the topics 'dl19-passage' \(JVM exception "
                                         r"occurred: java.io.IOException: Error downloading.*txt\).*network"):
        load_topics("dl19-passage")


def prebuilt_folder(cache: Path, name: str) -> Path:
    """Where Pyserini keeps the prebuilt index ``name`` under ``$PYSERINI_CACHE`` (pyserini.util's layout)."""
    from pyserini.prebuilt_index_info import TF_INDEX_INFO

    entry = TF_INDEX_INFO[name]
    stem = re.sub(r".tar.gz.*$", "", entry.get("filename") or entry["urls"][0].split("/")[-1])
    return cache / "indexes" / f"{stem}.{entry['md5']}"


def test_prebuilt_index_names_search_and_give_document_text(toy_index, tmp_path, monkeypatch, capsys):
    """`--index beir-v1.0.0-scifact.flat` is Pyserini's prebuilt index from its cache (a copy of the toy index put
    where Pyserini would have unpacked it); a prebuilt FAISS name gives its texts' index for reranking; other kinds
    are refused by name. Pyserini's "already exists" message does not reach stdout."""
    import shutil

    from pyserini_qpeft.rerank.pipeline import open_docstore
    from pyserini_qpeft.search import BM25Config, bm25_search
    from pyserini_qpeft.search.prebuilt import resolve_lucene_index
    from pyserini_qpeft.types import Query

    monkeypatch.setenv("PYSERINI_CACHE", str(tmp_path / "cache"))
    folder = prebuilt_folder(tmp_path / "cache", "beir-v1.0.0-scifact.flat")
    shutil.copytree(toy_index, folder)
    queries = [Query("q1", "what causes lung cancer"), Query("q2", "does aspirin help the heart")]
    by_name = bm25_search("beir-v1.0.0-scifact.flat", queries, BM25Config(hits=4), progress=False)
    by_folder = bm25_search(toy_index, queries, BM25Config(hits=4), progress=False)
    assert by_name.hits == by_folder.hits and by_name["q1"][0].docid == "d1"
    assert resolve_lucene_index("beir-v1.0.0-scifact.flat") == folder
    for other in ("beir-v1.0.0-scifact.contriever", "beir-v1.0.0-scifact.splade-pp-ed"):  # FAISS, impact
        docs = open_docstore(index=other)  # their texts are scifact.flat's
        assert docs.get("d2").title == "Aspirin"
    assert capsys.readouterr().out == ""
    with pytest.raises(InputError, match="prebuilt learned-sparse \\(impact\\) indexes"):
        resolve_lucene_index("beir-v1.0.0-scifact.splade-pp-ed")
    with pytest.raises(InputError, match="two fields.*use beir-v1.0.0-scifact.flat"):
        bm25_search("beir-v1.0.0-scifact.multifield", queries, progress=False)
    with pytest.raises(InputError, match="not a Lucene index .* nor a Pyserini prebuilt index name"):
        bm25_search("no-such-index", queries, progress=False)
    assert resolve_lucene_index(toy_index) == toy_index  # folders are never looked up


def test_trec_format_topic_files_are_read_by_anserinis_reader(tmp_path):
    """Robust04-style topics (``<top>`` blocks, named .txt as Anserini names them) give each title as the query,
    as Pyserini's searchers use them; until 2026-12-06 they failed as a TSV file without tabs."""
    from pyserini_qpeft.data import load_topics

    path = tmp_path / "topics.robust04.txt"
    path.write_text("<top>\n<num> Number: 302\n<title> Poliomyelitis and Post-Polio\n\n<desc> Description:\nIs the "
                    "disease of Poliomyelitis (polio) under control in the world?\n\n<narr> Narrative:\nRelevant "
                    "documents should contain data or outbreaks.\n</top>\n\n<top>\n<num> Number: 301\n<title> "
                    "International Organized Crime\n\n<desc> Description:\nIdentify organizations that participate "
                    "in international criminal activity.\n\n<narr> Narrative:\nA relevant document must name them."
                    "\n</top>\n")
    topics = load_topics(path)
    assert [(q.qid, q.text) for q in topics] == [("301", "International Organized Crime"),
                                                 ("302", "Poliomyelitis and Post-Polio")]
    empty = tmp_path / "empty.trec"
    empty.write_text("<top>\n</top>\n")
    with pytest.raises(InputError, match=r"empty.trec: .*TrecTopicReader could not read it .*<top> <num> Number"):
        load_topics(empty)
    # checked as every text file before Anserini reads it: a BOM is dropped (Anserini found no topic), a byte that
    # is not UTF-8 and a repeated <num> name file and line (Anserini read U+FFFD and kept the last topic)
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeff".encode() + path.read_bytes())
    assert load_topics(bom) == topics
    latin = tmp_path / "latin.txt"
    latin.write_bytes(path.read_bytes().replace(b"Crime", b"Crim\xe9"))
    with pytest.raises(InputError, match=r"latin.txt:14: not UTF-8"):
        load_topics(latin)
    twice = tmp_path / "twice.txt"
    twice.write_text(path.read_text().replace("Number: 301", "Number: 302"))
    with pytest.raises(InputError, match=r"twice.txt:13: topic 302 appears twice \(first on line 2\)"):
        load_topics(twice)
