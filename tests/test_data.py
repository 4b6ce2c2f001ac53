"""BEIR folders, search path, Pyserini names, topics/qrels files, and BEIR zip downloads."""
from __future__ import annotations

import functools
import http.server
import json
import os
import threading
import zipfile
from pathlib import Path

import pytest

from pyserini_qpeft import data
from pyserini_qpeft.data import (BeirDataset, Document, data_search_path, download_beir, find_dataset, load_qrels,
                                 load_topics, parse_pyserini_name, qrels_file_for_trec_eval, read_corpus_jsonl,
                                 read_qrels_file, write_trec_qrels)
from pyserini_qpeft.errors import InputError
from pyserini_qpeft.types import Query


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the user's data path or cache."""
    monkeypatch.setenv("PYSERINI_QPEFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)


def test_document_contents():
    assert Document("d", "Title", "body text").contents() == "Title body text"
    assert Document("d", "", "body text").contents() == "body text"


def test_cache_root_expands_home_and_data_never_imports_the_lm_layer(monkeypatch, tmp_path):
    """``PYSERINI_QPEFT_CACHE=~/x`` is the home folder's x (it was a folder named "~"), and the data layer reads the
    cache root without importing ``lm`` (it imported lm.backbone for it)."""
    import subprocess
    import sys

    from pyserini_qpeft.paths import cache_dir

    monkeypatch.setenv("PYSERINI_QPEFT_CACHE", "~/qpeft-cache")
    assert cache_dir() == Path.home() / "qpeft-cache"
    monkeypatch.setenv("PYSERINI_QPEFT_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    loaded = subprocess.run([sys.executable, "-c", "import sys, pyserini_qpeft.data.beir, pyserini_qpeft.data.names; "
                             "print(sorted(m for m in sys.modules if m.startswith('pyserini_qpeft.lm')))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_the_cache_root_without_a_home_folder_or_a_writable_cache(monkeypatch, tmp_path):
    """No $HOME and no passwd entry (containers): a named error, and the data path still searched (every dataset
    lookup was a RuntimeError traceback); a blank $PYSERINI_QPEFT_CACHE is unset (a folder named by spaces was made);
    an unwritable cache fails before the packaged model's minute of conversion, not after it."""
    from pyserini_qpeft.data.beir import data_search_path
    from pyserini_qpeft.errors import ModelError
    from pyserini_qpeft.lm.backbone import materialize_default_model
    from pyserini_qpeft.paths import cache_dir

    monkeypatch.setenv("PYSERINI_QPEFT_CACHE", "  ")
    assert cache_dir() == Path.home() / ".cache" / "pyserini_qpeft"
    monkeypatch.delenv("PYSERINI_QPEFT_CACHE")

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    with pytest.raises(InputError, match="no home folder .* set PYSERINI_QPEFT_CACHE"):
        cache_dir()
    monkeypatch.setenv("PYSERINI_QPEFT_DATA", str(tmp_path))
    assert data_search_path() == [tmp_path]
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("PYSERINI_QPEFT_CACHE", str(tmp_path / "a-file" / "cache"))
    with pytest.raises(ModelError, match="cannot be written .* set PYSERINI_QPEFT_CACHE to a writable folder"):
        materialize_default_model()


def test_beir_folder(toy_beir):
    ds = BeirDataset(toy_beir)
    assert ds.name == "toy"
    corpus = ds.load_corpus()
    assert list(corpus) == ["d1", "d2", "d3", "d4", "d5", "d6"]
    assert corpus["d1"] == Document("d1", "Lung cancer", "smoking causes lung cancer")
    assert corpus["d5"].contents() == "exercise improves heart health"
    assert ds.load_corpus() is corpus  # cached
    assert [d.docid for d in ds.iter_corpus()] == list(corpus)
    assert ds.queries()["q2"] == "does aspirin help the heart"
    assert ds.splits() == ["test", "train"]
    # CRLF + header: no stray '\r', header skipped, relevance parsed as int
    assert ds.qrels("test") == {"q3": {"d3": 1}, "q4": {"d4": 1}, "q2": {"d5": 1}}
    assert ds.topics("test") == [Query("q3", "how do cells divide"), Query("q4", "is vitamin d good for bones"),
                                 Query("q2", "does aspirin help the heart")]
    with pytest.raises(InputError, match="no split 'dev'"):
        ds.qrels("dev")


def test_not_a_beir_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="corpus.jsonl"):
        BeirDataset(tmp_path / "empty")
    with pytest.raises(InputError, match="not found"):
        BeirDataset(tmp_path / "missing")


def test_topics_need_query_texts(toy_beir):
    with open(toy_beir / "qrels" / "test.tsv", "a", newline="") as f:
        f.write("q404\td1\t1\r\n")
    with pytest.raises(InputError, match="q404"):
        BeirDataset(toy_beir).topics("test")


def test_corpus_formats_and_errors(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"id": "p1", "contents": "pyserini style"}) + "\n\n"
                    + json.dumps({"_id": 7, "title": "T", "text": "beir style"}) + "\n")
    assert list(read_corpus_jsonl(path)) == [Document("p1", "", "pyserini style"), Document("7", "T", "beir style")]
    # a JsonCollection record with a title kept its title and lost its contents; one reading of a record everywhere
    from pyserini_qpeft.rerank.api import as_document

    records = [{"id": "t", "title": "T", "contents": "body"}, {"_id": "n", "text": None, "contents": "c"},
               {"_id": "e", "title": "only a title"}, {"_id": "s", "segment": "seg"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    expected = [Document("t", "T", "body"), Document("n", "", "c"), Document("e", "only a title", ""),
                Document("s", "", "seg")]
    assert list(read_corpus_jsonl(path)) == expected
    assert [as_document(d.docid, r) for d, r in zip(expected, records) if r.get("_id") != "e"] == \
        [d for d in expected if d.docid != "e"]
    path.write_text(json.dumps({"_id": "x", "url": "u"}) + "\n")
    with pytest.raises(InputError, match="document x has no 'text' or 'contents' field"):
        list(read_corpus_jsonl(path))
    path.write_text(json.dumps({"_id": "a", "text": "x"}) + "\n{not json\n")
    with pytest.raises(InputError) as err:
        list(read_corpus_jsonl(path))
    assert f"{path}:2:" in str(err.value) and err.value.line == 2
    path.write_text(json.dumps({"text": "no id"}) + "\n")
    with pytest.raises(InputError, match=r":1: .*'_id'"):
        list(read_corpus_jsonl(path))
    with pytest.raises(InputError, match="not found"):
        read_corpus_jsonl(tmp_path / "missing.jsonl")


def test_search_path_order(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    assert data_search_path() == [tmp_path / "a", tmp_path / "b", tmp_path / "cache" / "beir"]


def test_find_by_name_on_search_path(toy_beir, tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, os.pathsep.join([str(tmp_path / "nothing-here"), str(toy_beir.parent)]))
    assert find_dataset("toy") == toy_beir
    assert find_dataset(str(toy_beir)) == toy_beir  # a path works too
    assert BeirDataset.find("toy").name == "toy"


def test_find_nested_cqadupstack_layout(tmp_path, monkeypatch):
    from conftest import write_beir

    folder = write_beir(tmp_path / "lib" / "cqadupstack" / "android")
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "lib"))
    assert find_dataset("cqadupstack-android") == folder
    assert len(load_topics("beir-v1.0.0-cqadupstack-android-test")) == 3


def test_unknown_dataset_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "lib"))
    with pytest.raises(InputError) as err:
        find_dataset("nosuchset")
    message = str(err.value)
    assert str(tmp_path / "lib" / "nosuchset") in message
    assert str(tmp_path / "cache" / "beir" / "nosuchset") in message
    assert data.ENV_VAR in message
    assert "did you mean" not in message
    with pytest.raises(InputError, match="not a BEIR dataset folder"):
        find_dataset(str(tmp_path))  # an existing folder without corpus.jsonl
    with pytest.raises(InputError, match="no such file or folder"):  # a path to nothing (audit Z)
        find_dataset(str(tmp_path / "nope" / "corpus.jsonl"))
    from pyserini_qpeft.data import open_corpus

    with pytest.raises(InputError, match="nope.jsonl: no such corpus file"):  # not a dataset name to download
        open_corpus("nope.jsonl")
    # the data path names the folder above the datasets (data/ for data/beir/NAME): the message says what to give
    from conftest import write_beir

    write_beir(tmp_path / "lib" / "beir" / "toy")
    with pytest.raises(InputError, match=f"{tmp_path / 'lib' / 'beir'} holds it: add that folder to \\${data.ENV_VAR}"):
        find_dataset("toy")
    with pytest.raises(InputError):
        load_topics("beir-v1.0.0-nosuchset-test")


@pytest.mark.parametrize("spec, expected", [
    ("beir-v1.0.0-scifact-test", ("scifact", "test")),
    ("beir-v1.0.0-scifact-train", ("scifact", "train")),
    ("beir-v1.0.0-msmarco-dev", ("msmarco", "dev")),
    ("beir-v1.0.0-cqadupstack-android-test", ("cqadupstack-android", "test")),
    ("beir-v1.0.0-webis-touche2020-test", ("webis-touche2020", "test")),
    ("beir-v1.0.0-scifact", None),
    ("beir-v1.0.0-scifact-validation", None),
    ("scifact-test", None),
    ("beir-v1.0.0-scifact.flat", None),
    ("beir-v1.0.0-../x-test", None),
])
def test_parse_pyserini_name(spec, expected):
    assert parse_pyserini_name(spec) == expected


def test_pyserini_names_resolve_offline(toy_beir, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(toy_beir.parent))
    assert [q.qid for q in load_topics("beir-v1.0.0-toy-test")] == ["q3", "q4", "q2"]
    assert load_qrels("beir-v1.0.0-toy-train") == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    with pytest.raises(InputError, match="no split 'dev'"):
        load_topics("beir-v1.0.0-toy-dev")
    with pytest.raises(InputError, match="no such file"):
        load_topics("toy-test")


def test_topics_files(tmp_path, toy_beir):
    tsv = tmp_path / "topics.tsv"
    tsv.write_text("1\tfirst query\r\n\n2\tsecond\twith tab\n")
    # a third column is ignored, as Anserini's TSV topic readers (Pyserini) ignore it: the query is column 2
    assert load_topics(str(tsv)) == [Query("1", "first query"), Query("2", "second")]
    assert [q.qid for q in load_topics(toy_beir / "queries.jsonl")] == ["q1", "q2", "q3", "q4"]

    tsv.write_text("1\tfine\n2 no tab here\n")
    with pytest.raises(InputError) as err:
        load_topics(str(tsv))
    assert f"{tsv}:2:" in str(err.value) and "tab" in str(err.value)

    empty = tmp_path / "empty.tsv"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="no topics"):
        load_topics(str(empty))


def test_qrels_files(tmp_path):
    trec = tmp_path / "qrels.txt"
    trec.write_text("q1 0 d1 1\nq1 0 d2 0\r\nq2 Q0 d9 2\n")
    assert load_qrels(str(trec)) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d9": 2}}
    beir = tmp_path / "test.tsv"
    beir.write_bytes(b"query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td 2\t2\r\n")
    assert load_qrels(str(beir)) == {"q1": {"d1": 1}, "q2": {"d 2": 2}}

    bad = tmp_path / "bad.txt"
    bad.write_text("q1 0 d1 1\nq1 d2\n")
    with pytest.raises(InputError) as err:
        load_qrels(str(bad))
    assert f"{bad}:2:" in str(err.value)
    bad.write_text("q1 0 d1 1\nq1 0 d2 yes\n")
    with pytest.raises(InputError, match=r":2: relevance 'yes'"):
        load_qrels(str(bad))
    bad.write_text("")
    with pytest.raises(InputError, match="no relevance judgments"):
        load_qrels(str(bad))
    # a TREC line that lost its relevance is not read as BEIR's qid<TAB>docid<TAB>rel (the first line sets the layout)
    bad.write_text("808 0 36606083 1\n1107 0 20532591\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: expected .* got 3 columns \(a BEIR line is tab-separated\)"):
        load_qrels(str(bad))
    bad.write_text("808 0 36606083\n")
    with pytest.raises(InputError, match=r"bad\.txt:1: .*got 3 columns"):
        load_qrels(str(bad))
    bad.write_text("q1\td1\t1\nq1\t0\td2\t1\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: 4 columns, but the file's first line has 3 \(BEIR\)"):
        load_qrels(str(bad))
    # one document judged twice: different relevance is refused (trec_eval refuses it), the same is counted once
    bad.write_text("1 0 d1 1\n1 0 d2 1\n1 0 d1 0\n")
    with pytest.raises(InputError, match=r"bad\.txt:3: query 1 judges document d1 twice, 1 and now 0"):
        load_qrels(str(bad))
    bad.write_text("1 0 d1 1\n1 0 d1 1\n")
    assert load_qrels(str(bad)) == {"1": {"d1": 1}}
    # a BEIR first line with a numeric but non-integer relevance is a judgment (refused), not a header (dropped)
    bad.write_text("1\td1\t0.5\n1\td2\t1\n")
    with pytest.raises(InputError, match=r"bad\.txt:1: relevance '0.5'"):
        load_qrels(str(bad))


def test_write_and_convert_qrels(tmp_path, toy_beir, monkeypatch):
    qrels = {"q2": {"b": 1, "a": 0}, "q10": {"z": 2}}
    out = tmp_path / "out" / "qrels.txt"
    write_trec_qrels(qrels, out)
    assert out.read_text() == "q10 0 z 2\nq2 0 a 0\nq2 0 b 1\n"
    assert read_qrels_file(out) == qrels
    assert qrels_file_for_trec_eval(str(out)) == out  # already TREC: used as is

    converted = qrels_file_for_trec_eval(str(toy_beir / "qrels" / "test.tsv"))
    assert converted.parent == tmp_path / "cache" / "qrels"
    assert converted.read_text() == "q2 0 d5 1\nq3 0 d3 1\nq4 0 d4 1\n"
    stamp = converted.stat().st_mtime_ns
    assert qrels_file_for_trec_eval(str(toy_beir / "qrels" / "test.tsv")) == converted  # converted once
    assert converted.stat().st_mtime_ns == stamp

    monkeypatch.setenv(data.ENV_VAR, str(toy_beir.parent))
    by_name = qrels_file_for_trec_eval("beir-v1.0.0-toy-train")
    assert by_name.name.startswith("beir-v1.0.0-toy-train.") and read_qrels_file(by_name) == load_qrels(
        "beir-v1.0.0-toy-train")


# --------------------------------------------------------------------------------------------------------------
# Downloads


def _zip_folder(folder: Path, zip_path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for file in sorted(folder.rglob("*")):
            archive.write(file, f"{folder.name}/{file.relative_to(folder)}")
        for name, payload in (extra or {}).items():
            archive.writestr(name, payload)
    return zip_path


def _check_toy(folder: Path) -> None:
    ds = BeirDataset(folder)
    assert len(ds.load_corpus()) == 6 and ds.splits() == ["test", "train"]


def test_download_from_file_url(toy_beir, tmp_path):
    zip_path = _zip_folder(toy_beir, tmp_path / "toy.zip")
    target = tmp_path / "datasets"
    folder = download_beir("toy", url=zip_path.as_uri(), target_dir=target, progress=False)
    assert folder == target / "toy"
    _check_toy(folder)
    assert sorted(p.name for p in target.iterdir()) == ["toy"]  # no temp files left
    # already there: returned without fetching
    assert download_beir("toy", url="file:///nonexistent.zip", target_dir=target, progress=False) == folder


def test_a_damaged_or_empty_download_is_an_input_error_and_installs_nothing(toy_beir, tmp_path):
    """A zip member with a bad CRC (a flaky proxy) was a BadZipFile traceback; a zip without corpus.jsonl was
    installed, after which every lookup said "found no dataset" without downloading again."""
    zip_path = _zip_folder(toy_beir, tmp_path / "toy.zip")
    data = bytearray(zip_path.read_bytes())
    at = data.find(b'"_id"')  # inside the first stored member's bytes: its CRC no longer matches
    data[at + 1] ^= 0x01
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    target = tmp_path / "datasets"
    with pytest.raises(InputError, match="damaged zip, cannot unpack it"):
        download_beir("toy", url=damaged.as_uri(), target_dir=target, progress=False)
    good = zip_path.read_bytes()
    directory = good.rfind(b"PK\x01\x02")  # the central directory's last entry, damaged
    (tmp_path / "nodir.zip").write_bytes(good[:directory] + b"XX" + good[directory + 2:])
    with pytest.raises(InputError, match="damaged zip"):
        download_beir("toy", url=(tmp_path / "nodir.zip").as_uri(), target_dir=target, progress=False)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("toy/README.txt", "no corpus here")
    with pytest.raises(InputError, match="zip holds no corpus.jsonl"):
        download_beir("toy", url=empty.as_uri(), target_dir=target, progress=False)
    assert list(target.iterdir()) == []


@pytest.fixture()
def http_root(tmp_path):
    """A tiny HTTP server on 127.0.0.1 serving ``tmp_path/www`` from a daemon thread; yields the base URL."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_over_http(toy_beir, tmp_path, http_root, monkeypatch):
    root, base = http_root
    _zip_folder(toy_beir, root / "toy.zip")
    folder = download_beir("toy", url=f"{base}/toy.zip", target_dir=tmp_path / "t1", progress=True)
    _check_toy(folder)
    # find_dataset(download=True) fetches into cache_dir()/beir from BEIR_URL
    monkeypatch.setattr(data.beir, "BEIR_URL", base + "/{name}.zip")
    assert find_dataset("toy", download=True) == tmp_path / "cache" / "beir" / "toy"
    assert find_dataset("toy") == tmp_path / "cache" / "beir" / "toy"  # now on the search path
    with pytest.raises(InputError, match="could not download"):
        download_beir("missing", url=f"{base}/missing.zip", target_dir=tmp_path / "t2", progress=False)
    assert list((tmp_path / "t2").iterdir()) == []


@pytest.mark.parametrize("evil", ["../evil", "toy/../../evil", "/tmp/evil-abs"])
def test_zip_slip_refused_and_nothing_left(toy_beir, tmp_path, evil):
    zip_path = _zip_folder(toy_beir, tmp_path / "toy.zip", extra={evil: b"pwned"})
    target = tmp_path / "deep" / "datasets"
    with pytest.raises(InputError, match="outside"):
        download_beir("toy", url=zip_path.as_uri(), target_dir=target, progress=False)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()


def test_download_not_a_zip(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(InputError, match="not a zip"):
        download_beir("junk", url=junk.as_uri(), target_dir=tmp_path / "t", progress=False)
    assert list((tmp_path / "t").iterdir()) == []
    with pytest.raises(InputError, match="invalid dataset name"):
        download_beir("../x", url=junk.as_uri(), target_dir=tmp_path / "t", progress=False)


# --------------------------------------------------------------------------------------------------------------
# Real data (only where a SciFact copy is on $PYSERINI_QPEFT_DATA, as `make test` sets it)

SCIFACT_ROOT = next((Path(p) for p in os.environ.get(data.ENV_VAR, "").split(os.pathsep)
                     if p.strip() and (Path(p) / "scifact" / "corpus.jsonl").is_file()), None)


@pytest.mark.slow
@pytest.mark.skipif(SCIFACT_ROOT is None, reason=f"no SciFact copy on ${data.ENV_VAR}")
def test_real_scifact(monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(SCIFACT_ROOT))
    assert len(BeirDataset.find("scifact").load_corpus()) == 5183
    assert len(load_topics("beir-v1.0.0-scifact-test")) == 300
    train = load_qrels("beir-v1.0.0-scifact-train")
    assert len(train) == 809 and sum(map(len, train.values())) == 919
    test = load_qrels("beir-v1.0.0-scifact-test")
    assert len(test) == 300 and sum(map(len, test.values())) == 339


# --------------------------------------------------------------------------------------------------------------
# The package layout: one resolver, one opener, re-exports


def test_resolve_source_file_or_name(toy_beir, tmp_path, monkeypatch):
    from pyserini_qpeft.data import resolve_source

    monkeypatch.setenv(data.ENV_VAR, str(toy_beir.parent))
    as_file = resolve_source(str(toy_beir / "qrels" / "test.tsv"), "qrels")
    assert as_file.file == toy_beir / "qrels" / "test.tsv" and as_file.dataset is None
    assert as_file.qrels_path() == as_file.file and as_file.where == str(as_file.file)
    by_name = resolve_source("beir-v1.0.0-toy-train", "qrels")
    assert by_name.file is None and by_name.split == "train" and by_name.dataset.path == toy_beir
    assert by_name.qrels_path() == toy_beir / "qrels" / "train.tsv" and by_name.where == "beir-v1.0.0-toy-train"
    with pytest.raises(InputError, match=r"topics 'nope.tsv': no such file, and not a Pyserini topics name: "
                                         r"BEIR's 'beir-v1.0.0-<dataset>-<split>'"):
        resolve_source("nope.tsv", "topics")  # a file name: Pyserini's other names (test_pyserini_names) not asked
    with pytest.raises(InputError, match="BEIR dataset 'absent' not found"):
        resolve_source("beir-v1.0.0-absent-test", "qrels")


def test_one_corpus_opener(toy_beir, tmp_path, monkeypatch):
    import gzip

    from pyserini_qpeft.data import iter_documents, open_corpus

    monkeypatch.setenv(data.ENV_VAR, str(toy_beir.parent))
    expected = open_corpus(toy_beir)
    assert list(expected) == ["d1", "d2", "d3", "d4", "d5", "d6"]
    assert open_corpus("toy") == expected  # a dataset name on the search path
    assert open_corpus(toy_beir / "corpus.jsonl") == expected
    gz = tmp_path / "corpus.jsonl.gz"
    gz.write_bytes(gzip.compress((toy_beir / "corpus.jsonl").read_bytes()))
    source, docs = iter_documents(gz)
    assert source == gz and {d.docid: d for d in docs} == expected
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "contents": "x"}\n{"id": "a", "contents": "y"}\n')
    with pytest.raises(InputError, match="docid a appears twice"):
        open_corpus(dup)
    # MS MARCO's collection.tsv shape: docid<TAB>text (a tab inside the text stays text), gzipped too
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("0\tThe presence of communication\tamid scientific minds\n\n7\tManhattan Project\r\n")
    assert [(d.docid, d.title, d.text) for d in open_corpus(tsv).values()] == [
        ("0", "", "The presence of communication\tamid scientific minds"), ("7", "", "Manhattan Project")]
    (tmp_path / "collection.tsv.gz").write_bytes(gzip.compress(tsv.read_bytes()))
    assert open_corpus(tmp_path / "collection.tsv.gz") == open_corpus(tsv)
    bad = tmp_path / "bad.tsv"
    bad.write_text("0\tfine\nno tab here\n")
    with pytest.raises(InputError, match=r"bad.tsv:2: expected 'docid<TAB>text'"):
        open_corpus(bad)


def test_every_old_name_is_still_exported():
    import pyserini_qpeft.data as package
    from pyserini_qpeft.data import beir, car, corpus, formats, names

    for name in package.__all__:
        assert hasattr(package, name), name
    assert package.Document is corpus.Document and package.BeirDataset is beir.BeirDataset
    assert package.load_topics is names.load_topics and package.read_car_outlines is car.read_car_outlines
    assert package.read_qrels_file is formats.read_qrels_file and package.ENV_VAR == "PYSERINI_QPEFT_DATA"


def test_lucene_collection_links_beir_and_converts_the_rest(toy_beir, tmp_path):
    import gzip

    from pyserini_qpeft.search.lucene import _prepare_collection

    (tmp_path / "w1").mkdir()
    linked, count = _prepare_collection(toy_beir, tmp_path / "w1")
    assert count == 6
    assert (linked / "corpus.jsonl").is_symlink()
    assert (linked / "corpus.jsonl").resolve() == (toy_beir / "corpus.jsonl").resolve()

    pyserini = tmp_path / "pyserini.jsonl"
    pyserini.write_text('{"id": "a", "contents": "first"}\n{"id": "b", "contents": "second"}\n')
    (tmp_path / "w2").mkdir()
    converted = _prepare_collection(pyserini, tmp_path / "w2")[0] / "corpus.jsonl"
    assert not converted.is_symlink()
    assert [json.loads(line) for line in converted.read_text().splitlines()] == [
        {"_id": "a", "title": "", "text": "first"}, {"_id": "b", "title": "", "text": "second"}]

    gz = tmp_path / "beir.jsonl.gz"
    gz.write_bytes(gzip.compress((toy_beir / "corpus.jsonl").read_bytes()))
    (tmp_path / "w3").mkdir()
    unzipped = _prepare_collection(gz, tmp_path / "w3")[0] / "corpus.jsonl"
    assert [json.loads(line)["_id"] for line in unzipped.read_text().splitlines()] == ["d1", "d2", "d3", "d4", "d5",
                                                                                      "d6"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    (tmp_path / "w4").mkdir()
    with pytest.raises(InputError, match="no documents"):
        _prepare_collection(empty, tmp_path / "w4")
    # a BEIR file with a record lacking its title (or with a null one) is converted as the package reads it:
    # linked, Anserini stopped at that record (2 of 4 documents indexed, exit 0) and indexed null as "null"
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"_id": "a", "title": "T", "text": "x"}\n{"_id": "b", "text": "y"}\n'
                   '{"_id": "c", "title": null, "text": "z"}\n')
    (tmp_path / "w5").mkdir()
    folder, count = _prepare_collection(odd, tmp_path / "w5")
    assert count == 3 and not (folder / "corpus.jsonl").is_symlink()
    assert [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()] == [
        {"_id": "a", "title": "T", "text": "x"}, {"_id": "b", "title": "", "text": "y"},
        {"_id": "c", "title": "", "text": "z"}]


def test_sample_topics_is_a_seeded_hash_sample_in_file_order():
    import hashlib

    from pyserini_qpeft.errors import InputError
    from pyserini_qpeft.types import Query

    topics = [Query(f"q{i}", f"text {i}") for i in range(300)]
    sample = data.sample_topics(topics, 50, seed=0)
    assert len(sample) == 50 and sample == [q for q in topics if q in sample]  # file order kept
    # rebuildable without this package: the 50 smallest sha256("0:<qid>")
    smallest = sorted(topics, key=lambda q: hashlib.sha256(f"0:{q.qid}".encode()).hexdigest())[:50]
    assert {q.qid for q in sample} == {q.qid for q in smallest}
    assert data.sample_topics(list(reversed(topics)), 50, seed=0) == list(reversed(sample))  # ids decide, not order
    assert set(data.sample_topics(topics, 49, seed=0)) < set(sample)  # a smaller sample is nested in a larger one
    assert data.sample_topics(topics, 50, seed=1) != sample
    assert data.sample_topics(topics, 300) == topics
    for bad in (0, 301):
        with pytest.raises(InputError, match=f"cannot sample {bad} of 300 topics"):
            data.sample_topics(topics, bad)
    with pytest.raises(InputError, match="repeated query ids"):
        data.sample_topics(topics + topics[:1], 5)


def test_the_compat_search_reads_a_topics_file_itself_and_refuses_what_a_run_cannot_hold(tmp_path):
    """`python -m pyserini_qpeft.search`: a topics file is checked here (file and line named) instead of being
    handed to Pyserini unchecked; only a name this package cannot resolve goes to Pyserini as given."""
    from pyserini_qpeft.search.compat import _local_topics

    cases = {"malformed.tsv": ("1\tfoo\n1107\n", r"malformed\.tsv:2"),
             "twice.tsv": ("1\tfoo\n1\tbar\n", r"query id 1 appears twice"),
             "space.jsonl": ('{"_id": "a b", "text": "vitamin d"}\n', r"query id 'a b' .* whitespace")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=message):
            _local_topics(str(tmp_path / name), tmp_path)
    (tmp_path / "good.tsv").write_text("1\tfoo   bar\n")
    path, queries = _local_topics(str(tmp_path / "good.tsv"), tmp_path)
    assert Path(path).read_text() == "1\tfoo   bar\n" and queries[0].text == "foo   bar"  # as in the file
    # only what would break a TSV line is replaced: a no-break space stays (with --pretokenized it joins a token)
    (tmp_path / "q.jsonl").write_text(json.dumps({"_id": "1", "text": "vitamin\u00a0d\tand\nbone"}) + "\n")
    path, _ = _local_topics(str(tmp_path / "q.jsonl"), tmp_path)
    assert Path(path).read_text(encoding="utf-8") == "1\tvitamin\u00a0d and bone\n"
    assert _local_topics("no-such-topics-name", tmp_path) == ("no-such-topics-name", None)  # Pyserini reports it
    # the ids the first stage gives them: Pyserini reads every all-digit id as a number, from any source ("01" is
    # its query 1: the reranker must use that id, and "1" with "01", which Pyserini merges, is refused)
    from pyserini_qpeft.search.compat import pyserini_keyed
    from pyserini_qpeft.types import Query

    keyed = pyserini_keyed([Query("01", "red  cherries"), Query("q3", "x"), Query("007", "y")], "t")
    assert [(q.qid, q.text) for q in keyed] == [("1", "red  cherries"), ("q3", "x"), ("7", "y")]
    # every id a Java int: Anserini's int reader keys them all by number, signs included
    assert [q.qid for q in pyserini_keyed([Query("+1", "a"), Query("-01", "b"), Query("7", "c")], "t")] == \
        ["1", "-1", "7"]
    assert [q.qid for q in pyserini_keyed([Query("+1", "a"), Query("q", "b")], "t")] == ["+1", "q"]
    (tmp_path / "empty.tsv").write_text("q1\tfine\nq2\t \n")
    with pytest.raises(InputError, match="query q2 has empty text"):
        _local_topics(str(tmp_path / "empty.tsv"), tmp_path)
    with pytest.raises(InputError, match="query ids '1' and '01' are one query to Pyserini"):
        pyserini_keyed([Query("1", "a"), Query("01", "b")], "t")
    with pytest.raises(InputError, match="query id '²'"):
        pyserini_keyed([Query("²", "a")], "t")
    # full-width digits are decimal: Java's parseInt and Pyserini read "１" as query 1 (it was refused)
    assert [q.qid for q in pyserini_keyed([Query("１", "a"), Query("q", "b")], "t")] == ["1", "q"]


def test_jsonl_and_tsv_records_refused_or_read_as_documented(tmp_path):
    """A queries.jsonl line that is not an object, a query id twice, a TSV document without a docid: refused with
    file and line; a record with both BEIR's `text` and Pyserini's `contents` is read by `text` (mutants audit W)."""
    from pyserini_qpeft.data.corpus import read_corpus_jsonl, read_corpus_tsv
    from pyserini_qpeft.data.formats import read_queries_jsonl

    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "q1", "text": "a"}\n["q2", "b"]\n')
    with pytest.raises(InputError, match="expected a JSON object") as err:
        read_queries_jsonl(queries)
    assert err.value.path == str(queries) and err.value.line == 2
    queries.write_text('{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n')
    with pytest.raises(InputError, match="query id q1 appears twice") as err:
        read_queries_jsonl(queries)
    assert err.value.line == 2
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "d1", "title": "T", "text": "beir text", "contents": "pyserini contents"}\n')
    assert [(d.title, d.text) for d in read_corpus_jsonl(corpus)] == [("T", "beir text")]
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("d1\tfirst\n \tno docid\n")
    with pytest.raises(InputError, match="empty docid") as err:
        list(read_corpus_tsv(tsv))
    assert err.value.line == 2
