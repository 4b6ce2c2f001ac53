"""Fault injection: every hostile-but-fair input gets its documented exit code and message, and loses nothing.

Each case states the input, the expected exit code and message fragment, and what must hold on disk afterwards
(nothing deleted, nothing half-published, originals byte-identical). Exit codes: see ``pyserini_qpeft.errors``.
"""
from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conftest import TOY_CORPUS
from pyserini_qpeft.cli.main import cli
from pyserini_qpeft.errors import InputError, ModelError
from pyserini_qpeft.types import Hit, Run, read_run


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (relative path -> bytes), to prove that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(target: Path) -> list[str]:
    """Hidden temporary siblings of ``target`` (what an interrupted or failed write could leave)."""
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def write_corpus(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD_LINES = [json.dumps(doc) for doc in TOY_CORPUS]


# ---------------------------------------------------------------------------------------------------------------
# 1-2. `index` never replaces what is not ours, and validates the corpus before Lucene sees it


@pytest.mark.jvm
def test_index_refuses_to_replace_a_users_folder_or_file(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", GOOD_LINES)
    folder = tmp_path / "my-notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("precious")
    (folder / "sub" / "b.bin").write_bytes(b"\x00\x01")
    before = snapshot(folder)
    for extra in ([], ["--force"]):
        result = invoke("index", "--corpus", str(corpus), "--index", str(folder), *extra)
        assert result.exit_code == 3 and "not a pyserini_qpeft Lucene index; refusing" in result.output
        assert snapshot(folder) == before
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    result = invoke("index", "--corpus", str(corpus), "--index", str(a_file), "--force")
    assert result.exit_code == 3 and a_file.read_text() == "keep me"

    ours = tmp_path / "ours"
    assert invoke("index", "--corpus", str(corpus), "--index", str(ours)).exit_code == 0
    stamp = (ours / "pyserini_qpeft_index.json").read_bytes()
    assert invoke("index", "--corpus", str(corpus), "--index", str(ours)).exit_code == 0  # idempotent
    assert (ours / "pyserini_qpeft_index.json").read_bytes() == stamp
    assert invoke("index", "--corpus", str(corpus), "--index", str(ours), "--force").exit_code == 0  # ours + --force
    assert leftovers(ours) == []


@pytest.mark.jvm
@pytest.mark.parametrize("lines, message", [
    (GOOD_LINES[:2] + ["{broken"] + GOOD_LINES[2:], "corpus.jsonl:3: malformed JSON"),
    (GOOD_LINES + [GOOD_LINES[0]], "corpus.jsonl:7: docid d1 appears twice (first on line 1)"),
    (GOOD_LINES[:1] + ['{"title": "no id"}'], "corpus.jsonl:2: record has no '_id'"),
])
def test_index_publishes_nothing_for_a_bad_corpus(tmp_path, lines, message):
    corpus = write_corpus(tmp_path / "corpus.jsonl", lines)
    target = tmp_path / "index"
    result = invoke("index", "--corpus", str(corpus), "--index", str(target))
    assert result.exit_code == 3 and message in result.output, result.output
    assert not target.exists() and leftovers(target) == []


def test_one_duplicate_policy_for_folders_files_and_encode(tmp_path, toy_beir):
    from pyserini_qpeft.data import open_corpus

    with open(toy_beir / "corpus.jsonl", "a") as handle:
        handle.write(GOOD_LINES[2] + "\n")
    dup_file = write_corpus(tmp_path / "dup.jsonl", GOOD_LINES + [GOOD_LINES[2]])
    for spec in (toy_beir, dup_file):
        with pytest.raises(InputError, match=r":7: docid d3 appears twice \(first on line 3\)"):
            open_corpus(spec)
    tsv = tmp_path / "dup.tsv"
    tsv.write_text("a\tone\n\nb\ttwo\na\tthree\n")  # a blank line: line numbers, not document numbers
    with pytest.raises(InputError, match=r"dup.tsv:4: docid a appears twice \(first on line 1\)"):
        open_corpus(tsv)
    result = invoke("encode", "--encoder", "minilm", "--corpus", str(dup_file), "--output", str(tmp_path / "faiss"))
    assert result.exit_code == 3 and "docid d3 appears twice" in result.output
    assert not (tmp_path / "faiss").exists()


# ---------------------------------------------------------------------------------------------------------------
# 3. what we write always reads back


@pytest.mark.parametrize("run, message", [
    (Run({"q1": [Hit("d1", float("nan"))]}), "is nan"),
    (Run({"q1": [Hit("d1", float("inf"))]}), "is inf"),
    (Run({"q 1": [Hit("d1", 1.0)]}), "query id 'q 1'"),
    (Run({"q1": [Hit("", 1.0)]}), "docid ''"),
    (Run({"q1": [Hit("d 1", 1.0)]}), "docid 'd 1'"),
])
def test_runs_that_could_not_be_read_back_are_never_written(tmp_path, run, message):
    path = tmp_path / "out.trec"
    with pytest.raises(InputError, match=message):
        run.write(path)
    assert not path.exists() and leftovers(path) == []


def test_checkpoints_with_non_finite_weights_are_refused(tiny_lm, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.qpeft.checkpoint import WEIGHTS_NAME, load_checkpoint, save_checkpoint
    from pyserini_qpeft.qpeft.module import QPeftConfig, build_module

    config = QPeftConfig(variant="attn")
    path = save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm, ScorerConfig())
    state = load_file(str(path / WEIGHTS_NAME))
    name = sorted(state)[0]
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(path / WEIGHTS_NAME))
    with pytest.raises(ModelError, match="NaN or Inf"):
        load_checkpoint(path, tiny_lm)


def test_faiss_docid_lists_that_a_run_cannot_hold_are_refused(tmp_path):
    import numpy as np

    from pyserini_qpeft.search.dense import read_docids, write_faiss_index

    vectors = np.eye(3, dtype=np.float32)
    with pytest.raises(InputError, match="empty or contains whitespace"):
        write_faiss_index(tmp_path / "bad", ["d1", "", "d3"], vectors, {"encoder": "test"})
    assert not (tmp_path / "bad").exists()
    write_faiss_index(tmp_path / "ok", ["d1", "d2", "d3"], vectors, {"encoder": "test"})
    (tmp_path / "ok" / "docid").write_text("d1\n\nd3\n")  # edited by hand
    with pytest.raises(InputError, match=r"docid:2: docid '' is blank"):
        read_docids(tmp_path / "ok")


# ---------------------------------------------------------------------------------------------------------------
# 4. what a killed job leaves behind is swept by the next one


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_processes_are_swept(tmp_path):
    from pyserini_qpeft.artifacts import staging_dir

    target = tmp_path / "artifact"
    pid = dead_pid()
    stale_dir = tmp_path / f".artifact.{pid}.abc123.tmp"
    (stale_dir / "half").mkdir(parents=True)
    stale_old = tmp_path / f".artifact.old{pid}"
    stale_old.mkdir()
    live = tmp_path / f".artifact.{os.getppid()}.xyz.tmp"  # a running process's work is never touched
    live.mkdir()
    unrelated = tmp_path / ".artifact-notes"
    unrelated.write_text("mine")
    with staging_dir(target) as tmp:
        (tmp / "x").write_text("1")
    assert not stale_dir.exists() and not stale_old.exists()
    assert live.is_dir() and unrelated.read_text() == "mine" and (target / "x").read_text() == "1"


def test_another_hosts_temporaries_are_left_alone(tmp_path):
    """A process id means something on one host: on a shared file system a job on another node, whose pid happens
    to be free here, lost its temporary folder mid-write. Names carry a host tag; only this host's (and untagged
    ones, written before the tag) are judged by pid."""
    from pyserini_qpeft.artifacts import is_temporary_name, sweep_stale, temp_prefix
    from pyserini_qpeft.artifacts.files import host_tag

    pid = dead_pid()
    other = "0" * 8 if host_tag() != "0" * 8 else "1" * 8
    foreign = [tmp_path / f".artifact.{pid}-{other}.abc.tmp", tmp_path / f".artifact.old{pid}-{other}"]
    local = [tmp_path / f".artifact.{pid}-{host_tag()}.abc.tmp", tmp_path / f".artifact.old{pid}-{host_tag()}",
             tmp_path / f".artifact.{pid}.abc.tmp"]
    for path in foreign + local:
        path.mkdir()
        assert is_temporary_name(path.name)
    # a sibling named "artifact.<digits>" has temporaries that read as untagged ones of "artifact" (pid = its
    # digits): left alone, whoever wrote them
    sibling = tmp_path / f".artifact.{pid}.{pid}-{other}.abc.tmp"
    sibling.mkdir()
    assert sorted(sweep_stale(tmp_path / "artifact")) == sorted(local)
    assert all(p.is_dir() for p in foreign) and sibling.is_dir()
    assert temp_prefix(tmp_path / "artifact") == f".artifact.{os.getpid()}-{host_tag()}."


def test_a_killed_default_model_conversion_is_swept(tmp_path, monkeypatch):
    """The packaged model's one-time conversion writes a model-sized folder before its rename; a conversion killed
    there left it in the cache for good (it was named ``NAME.tmpPID``, which no sweep knew)."""
    from pyserini_qpeft.artifacts import is_temporary_name
    from pyserini_qpeft.lm.backbone import materialize_default_model

    monkeypatch.setenv("PYSERINI_QPEFT_CACHE", str(tmp_path))
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"")
    stale = target.with_name(f".{target.name}.{dead_pid()}.convert.tmp")
    (stale / "half").mkdir(parents=True)
    assert is_temporary_name(stale.name)
    assert materialize_default_model() == target
    assert not stale.exists() and (target / "config.json").is_file()


# ---------------------------------------------------------------------------------------------------------------
# 5. encodings: BOM ignored, undecodable bytes named


def test_a_bom_does_not_become_part_of_the_first_id(tmp_path):
    from pyserini_qpeft.data import read_qrels_file, read_topics_tsv
    from pyserini_qpeft.evaluation import evaluate

    bom = b"\xef\xbb\xbf"
    (tmp_path / "run.trec").write_bytes(bom + b"q3 Q0 d3 1 2.0 t\nq3 Q0 d1 2 1.0 t\n")
    (tmp_path / "qrels.txt").write_bytes(bom + b"q3 0 d3 1\n")
    (tmp_path / "topics.tsv").write_bytes(bom + b"q3\thow do cells divide\n")
    assert read_run(tmp_path / "run.trec").qids() == ["q3"]
    assert read_qrels_file(tmp_path / "qrels.txt") == {"q3": {"d3": 1}}
    assert read_topics_tsv(tmp_path / "topics.tsv")[0].qid == "q3"
    scores = evaluate(read_run(tmp_path / "run.trec"), read_qrels_file(tmp_path / "qrels.txt"), ["ndcg@10"])
    assert scores["ndcg@10"] == 1.0


@pytest.mark.parametrize("name, content", [
    ("run.trec", b"q1 Q0 d1 1 2.0 t\nq1 Q0 d\xff2 2 1.0 t\n"),
    ("qrels.txt", b"q1 0 d1 1\nq1 0 d\xe92 1\n"),
    ("topics.tsv", b"q1\tok\nq2\tvit\xffamin\n"),
    ("corpus.jsonl", (GOOD_LINES[0] + "\n").encode() + b'{"_id": "d2", "text": "caf\xe9"}\n'),
    ("queries.jsonl", b'{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "\xff"}\n'),
])
def test_undecodable_bytes_name_file_and_line(tmp_path, name, content):
    from pyserini_qpeft.data import read_corpus_jsonl, read_qrels_file, read_queries_jsonl, read_topics_tsv

    path = tmp_path / name
    path.write_bytes(content)
    reader = {"run.trec": read_run, "qrels.txt": read_qrels_file, "topics.tsv": read_topics_tsv,
              "corpus.jsonl": lambda p: list(read_corpus_jsonl(p)), "queries.jsonl": read_queries_jsonl}[name]
    with pytest.raises(InputError, match=rf"{name}:2: not UTF-8 text"):
        reader(path)


def test_undecodable_rerank_state_is_named(tmp_path):
    from pyserini_qpeft.rerank.lm import _State

    state = tmp_path / "out.trec.partial"
    good = _State(state, "abc")
    good.close()
    with open(state, "ab") as handle:
        handle.write(b"q1\td\xff1\t0.5\n#done\n")
    with pytest.raises(InputError, match="out.trec.partial:2: not UTF-8 text"):
        _State(state, "abc")


def test_cli_reports_bad_bytes_with_exit_3(tmp_path, toy_beir):
    run = tmp_path / "run.trec"
    run.write_bytes(b"q1 Q0 d\xff1 1 2.0 t\n")
    result = invoke("evaluate", "--qrels", str(toy_beir / "qrels" / "test.tsv"), "--run", str(run))
    assert result.exit_code == 3 and "run.trec:1: not UTF-8 text" in result.output


def test_a_run_docid_the_corpus_lacks_names_the_run_line_before_any_model_loads(tmp_path, toy_beir):
    """A run from another corpus: exit 3 naming the run file and line of the first unknown docid in the reranked
    depth (the corpus alone said which docid, not where it came from); no model is loaded (an unknown --model would
    fail with exit 6) and nothing is written."""
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\nq2 Q0 d3 1 3.0 t\nq2 Q0 x9 2 2.0 t\nq2 Q0 x8 3 1.0 t\n")
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tlung cancer\nq2\taspirin\n")
    args = ["rerank", "--run", str(run), "--topics", str(topics), "--corpus", str(toy_beir), "--reranker", "upr",
            "--model", str(tmp_path / "no-such-model"), "--output", str(tmp_path / "out.trec")]
    result = invoke(*args, "--rerank-depth", "2")
    assert result.exit_code == 3, result.output
    assert "run.trec:4: docid 'x9' of query 'q2' is not in the corpus" in result.output
    assert not (tmp_path / "out.trec").exists()
    # below the reranked depth an unknown docid is not read, so it is no error here (the model is, exit 6)
    assert invoke(*args, "--rerank-depth", "1").exit_code == 6


# ---------------------------------------------------------------------------------------------------------------
# 6. an output that cannot be written fails before the work


@pytest.mark.parametrize("command", ["search", "rerank", "fuse", "encode"])
def test_unwritable_output_fails_before_any_work(tmp_path, toy_beir, command, monkeypatch):
    import pyserini_qpeft.search as search_pkg

    monkeypatch.setattr(search_pkg, "bm25_search", lambda *a, **k: pytest.fail("work started"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    output = str(blocker / "out")
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 2.0 t\n")
    args = {
        "search": ["search", "--bm25", "--index", str(tmp_path), "--topics", str(toy_beir / "queries.jsonl"),
                   "--output", output],
        "rerank": ["rerank", "--run", str(run), "--topics", str(toy_beir / "queries.jsonl"), "--corpus",
                   str(toy_beir), "--output", output],
        "fuse": ["fuse", "--run", str(run), "--run", str(run), "--output", output],
        "encode": ["encode", "--encoder", "minilm", "--dataset", str(toy_beir), "--output", output],
    }[command]
    result = invoke(*args)
    assert result.exit_code == 3 and "a-file is a file, not a folder" in result.output, result.output
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("command", ["search", "rerank", "rerank-jsonl", "also-rerank", "fuse", "dev-split",
                                     "select-interpolation"])
def test_an_existing_file_that_is_not_the_commands_output_kind_is_never_replaced(tmp_path, toy_beir, command,
                                                                                   monkeypatch):
    """Data safety (audit Z): a file output replaces an existing file only when it holds that kind of output (a run,
    a weight JSON, rank_llm Result lines), as a rerun does; a user's notes are refused before any work (exit 3) and
    kept byte-identical."""
    import pyserini_qpeft.search as search_pkg

    monkeypatch.setattr(search_pkg, "bm25_search", lambda *a, **k: pytest.fail("work started"))
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a run\n")
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\n")
    topics = str(toy_beir / "queries.jsonl")
    rerank = ["rerank", "--run", str(run), "--topics", topics, "--corpus", str(toy_beir), "--model",
              str(tmp_path / "no-model")]
    args, kind = {
        "search": (["search", "--bm25", "--index", str(tmp_path), "--topics", topics, "--output", str(notes)], "run"),
        "rerank": ([*rerank, "--output", str(notes)], "run"),
        "rerank-jsonl": ([*rerank, "--output", str(tmp_path / "x.trec"), "--output-jsonl", str(notes)],
                         "rank_llm Result JSON-lines"),
        "also-rerank": ([*rerank, "--output", str(tmp_path / "x.trec"), "--also-rerank", "upr", "-", str(notes)],
                        "run"),
        "fuse": (["fuse", "--run", str(run), "--run", str(run), "--output", str(notes)], "run"),
        "dev-split": (["dev-split", "--dataset", str(toy_beir), "--negatives", str(run), "--output", str(notes)],
                      "run"),
        "select-interpolation": (["select-interpolation", "--first-stage", str(run), "--reranked", str(run),
                                  "--qrels", str(toy_beir / "qrels" / "test.tsv"), "--output", str(notes)], "JSON"),
    }[command]
    result = invoke(*args)
    assert result.exit_code == 3 and f"notes.txt: exists and is not a {kind}" in result.output, result.output
    assert notes.read_text() == "my notes, not a run\n"


def test_search_modes_exclude_each_other_and_bm25_parameters_are_not_dense_ones(tmp_path, toy_beir, monkeypatch):
    """`--bm25 --dense` searched densely and `--dense --k1 2` ignored --k1, both silently (audit Z); a FAISS index
    given without --dense says to add it."""
    import pyserini_qpeft.search as search_pkg

    monkeypatch.setattr(search_pkg, "bm25_search", lambda *a, **k: pytest.fail("work started"))
    base = ["search", "--index", str(tmp_path), "--topics", str(toy_beir / "queries.jsonl"), "--output",
            str(tmp_path / "run.trec")]
    both = invoke(*base, "--bm25", "--dense")
    assert both.exit_code == 2 and "--bm25 and --dense exclude each other" in both.output
    for extra, fragment in ((["--k1", "2.0"], "--k1 is BM25's"), (["--k1", "2", "--b", "0.5"], "--k1 and --b are")):
        refused = invoke(*base, "--dense", *extra)
        assert refused.exit_code == 2 and fragment in refused.output, refused.output
    assert not (tmp_path / "run.trec").exists()
    from pyserini_qpeft.search.dense import write_faiss_index
    from pyserini_qpeft.search.lucene import _searcher

    import numpy as np

    faiss_dir = write_faiss_index(tmp_path / "faiss", ["d1"], np.ones((1, 4), dtype=np.float32), {"encoder": "x"})
    with pytest.raises(InputError, match="is a FAISS index of `pyserini-qpeft encode`, not a Lucene one: search it "
                                         "with --dense"):
        _searcher(faiss_dir)


def test_what_an_output_file_may_replace():
    from pyserini_qpeft.artifacts import check_replaceable_file

    def replaceable(text: str | bytes, kind: str) -> bool:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "out"
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
            try:
                check_replaceable_file(path, kind)
            except InputError:
                return False
            return True

    assert replaceable("", "run") and replaceable("\nq1 Q0 d1 1 -2.5 bm25\n", "run")  # empty, a TREC run
    assert replaceable("q1\td1\t1\n", "run")  # MS MARCO
    assert not replaceable("q1 Q0 d1 one 2.5 bm25\n", "run") and not replaceable('{"_id": "d1"}\n', "run")
    assert not replaceable(b"\xff\xfe binary", "run") and not replaceable("a b c d e\n", "run")
    assert replaceable('{"alpha": 0.5}', "json") and not replaceable("alpha = 0.5", "json")
    assert replaceable('{"query": {"text": "q"}, "candidates": []}\n', "jsonl")
    assert not replaceable('{"_id": "d1", "text": "a corpus line"}\n', "jsonl")
    check_replaceable_file(Path("/nonexistent/out"), "run")  # nothing there: free


def test_output_file_path_that_is_a_folder(tmp_path):
    from pyserini_qpeft.artifacts import check_output_path

    with pytest.raises(InputError, match="output file path is an existing folder"):
        check_output_path(tmp_path)
    check_output_path(tmp_path / "new" / "deeper" / "run.trec")  # creatable: fine, and nothing is created
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------------------------
# 7. damaged artifacts get named errors


def test_damaged_faiss_folders_are_named(tmp_path):
    import numpy as np

    from pyserini_qpeft.search.dense import search_vectors, write_faiss_index

    vectors = np.eye(4, dtype=np.float32)
    for case in ("no-docid", "empty-index", "truncated-index"):
        folder = write_faiss_index(tmp_path / case, ["a", "b", "c", "d"], vectors, {"encoder": "test"})
        if case == "no-docid":
            (folder / "docid").unlink()
        elif case == "empty-index":
            (folder / "index").write_bytes(b"")
        else:
            data = (folder / "index").read_bytes()
            (folder / "index").write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError, match="damaged dense index"):
            search_vectors(folder, ["q"], vectors[:1], k=2)


@pytest.mark.jvm
def test_a_faiss_folder_whose_docid_list_and_vectors_disagree_is_named(tmp_path):
    import numpy as np

    from pyserini_qpeft.search.dense import search_vectors, write_faiss_index

    folder = write_faiss_index(tmp_path / "faiss", ["d1", "d2"], np.eye(2, 4, dtype=np.float32), {"encoder": "x"})
    with open(folder / "docid", "a") as extra:
        extra.write("d3\n")
    with pytest.raises(InputError, match="index holds 2 vectors but docid lists 3"):
        search_vectors(folder, ["q1"], np.ones((1, 4), dtype=np.float32), k=2)


def test_damaged_lucene_index_and_overlong_query_are_named(tmp_path, toy_beir):
    from pyserini_qpeft.search import build_index

    index = build_index(toy_beir / "corpus.jsonl", tmp_path / "index")
    long_topics = tmp_path / "long.tsv"
    long_topics.write_text("q1\t" + " ".join(f"w{i}" for i in range(2000)) + "\n")
    result = invoke("search", "--bm25", "--index", str(index), "--topics", str(long_topics), "--output",
                    str(tmp_path / "run.trec"), "-q")
    assert result.exit_code == 3 and "query q1 has 2000 distinct terms" in result.output
    assert not (tmp_path / "run.trec").exists()

    next(index.glob("*.si")).unlink()
    result = invoke("search", "--bm25", "--index", str(index), "--topics", str(toy_beir / "queries.jsonl"),
                    "--output", str(tmp_path / "run.trec"), "-q")
    assert result.exit_code == 3 and "damaged Lucene index" in result.output and "index --force" in result.output


@pytest.mark.parametrize("case", ["rerank-run", "rerank-corpus", "rerank-jsonl", "search-topics", "fuse-run",
                                  "fuse-run-relative", "compat-topics"])
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path, toy_beir, monkeypatch, case):
    """`--output` naming an input file (the run, topics, corpus) replaced that input with the new run (exit 0);
    now: exit 3 before any work, naming both flags, every input byte-identical. Two outputs that are one file
    likewise."""
    import pyserini_qpeft.search as search_pkg

    monkeypatch.setattr(search_pkg, "bm25_search", lambda *a, **k: pytest.fail("work started"))
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\n")
    other = tmp_path / "other.trec"
    other.write_text("q1 Q0 d2 1 3.0 t\n")
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\twhat causes lung cancer\n")
    corpus = toy_beir / "corpus.jsonl"
    before = {p: p.read_bytes() for p in (run, other, topics, corpus)}
    rerank = ["rerank", "--run", str(run), "--topics", str(topics), "--corpus", str(corpus), "--reranker", "upr",
              "--model", str(tmp_path / "no-model")]
    args, fragment = {
        "rerank-run": ([*rerank, "--output", str(run)], "--output is also the --run input"),
        "rerank-corpus": ([*rerank, "--output", str(corpus)], "exists and is not a run file"),  # refused as a non-run
        "rerank-jsonl": ([*rerank, "--output", str(tmp_path / "x.trec"), "--output-jsonl", str(tmp_path / "x.trec")],
                         "--output and --output-jsonl are the same file"),
        "search-topics": (["search", "--bm25", "--index", str(tmp_path), "--topics", str(topics), "--output",
                           str(topics)], "exists and is not a run file"),  # (topics are not a run either)
        "fuse-run": (["fuse", "--run", str(run), "--run", str(other), "--output", str(other)],
                     "--output is also the --run input"),
        # the same file by another spelling: relative against absolute (mutant audit W: O1 compared the paths)
        "fuse-run-relative": (["fuse", "--run", str(run), "--run", str(other), "--output", "./other.trec"],
                              "--output is also the --run input"),
    }.get(case, (None, None))
    monkeypatch.chdir(tmp_path)
    if case == "compat-topics":
        from pyserini_qpeft.search.compat import main

        monkeypatch.setattr("pyserini_qpeft.jvm.start_jvm", lambda: None)
        with pytest.raises(SystemExit) as exited:
            main(["lucene", "--index", str(tmp_path), "--topics", str(topics), "--output", str(topics)])
        assert exited.value.code == 3
    else:
        result = invoke(*args)
        assert result.exit_code == 3 and fragment in result.output, result.output
    assert {p: p.read_bytes() for p in before} == before


# ---------------------------------------------------------------------------------------------------------------
# 8. usage errors: exit 2 before any work; Ctrl-C: 130


@pytest.mark.parametrize("extra, fragment", [
    (["--k1", "-1"], "--k1"), (["--b", "7"], "--b"), (["--reranker", "nope"], "'nope' is not one of"),
    (["--run-tag", "a b"], "one word"),
])
def test_usage_errors_exit_2_before_any_work(tmp_path, toy_beir, monkeypatch, extra, fragment):
    import pyserini_qpeft.search as search_pkg

    monkeypatch.setattr(search_pkg, "bm25_search", lambda *a, **k: pytest.fail("work started"))
    result = invoke("search", "--bm25", "--index", str(tmp_path), "--topics", str(toy_beir / "queries.jsonl"),
                    "--output", str(tmp_path / "run.trec"), *extra)
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert not (tmp_path / "run.trec").exists()


def test_missing_path_of_an_existing_file_option_is_a_usage_error(tmp_path):
    result = invoke("rerank", "--run", str(tmp_path / "nope.trec"), "--topics", "t", "--output",
                    str(tmp_path / "o.trec"))
    assert result.exit_code == 2 and "does not exist" in result.output  # as the README's exit-code table says


def test_ctrl_c_exits_130(tmp_path, toy_beir, monkeypatch):
    import pyserini_qpeft.data as data_pkg

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_pkg, "load_topics", interrupted)
    result = invoke("search", "--bm25", "--index", str(tmp_path), "--topics", "x", "--output",
                    str(tmp_path / "run.trec"))
    assert result.exit_code == 130 and "interrupted" in result.output
    # `python -m pyserini_qpeft.search` says the same and exits the same (it printed a KeyboardInterrupt traceback)
    from pyserini_qpeft.search import compat

    monkeypatch.setattr(compat, "run", interrupted)
    with pytest.raises(SystemExit) as stop:
        compat.main(["lucene", "--index", str(tmp_path), "--topics", "x", "--output", str(tmp_path / "r.trec")])
    assert stop.value.code == 130


@click.command("nested-test")
@click.argument("folder")
def NESTED(folder):  # noqa: N802 - a command that runs another in-process, as repro does
    from pyserini_qpeft.cli.main import run_in_process

    run_in_process(["search", "--bm25", "--index", folder, "--topics", "x", "--output", f"{folder}/run.trec"])


def test_an_interrupt_inside_a_command_run_by_repro_is_the_outer_commands(tmp_path, monkeypatch):
    """`repro` runs its steps in-process: an interrupted step printed its own line and returned 130/143, which repro
    turned into "command failed with exit code 143" and exit 3 (bad input data). The interrupt now reaches the outer
    command: one line, exit 130 (Ctrl-C) or 143 (SIGTERM)."""
    import pyserini_qpeft.data as data_pkg
    from pyserini_qpeft.cli import main as cli_main
    from pyserini_qpeft.errors import Terminated

    for raised, code, line in ((KeyboardInterrupt, 130, "interrupted:"), (Terminated, 143, "terminated (SIGTERM)")):
        def stopped(*args, _raised=raised, **kwargs):
            raise _raised()

        monkeypatch.setattr(data_pkg, "load_topics", stopped)
        monkeypatch.setitem(cli_main.COMMANDS, "nested-test", ("test_faults:NESTED", "runs a search in-process"))
        result = CliRunner().invoke(cli_main.cli, ["nested-test", str(tmp_path)])
        assert result.exit_code == code, result.output
        assert result.output.count(line) == 1 and "command failed" not in result.output



def test_a_full_disk_is_exit_3_with_a_line_and_the_rerun_resumes(tmp_path, toy_beir, tiny_lm_path):
    """A rerank that meets a file-size limit (as a full disk) exits 3 with one line naming the file (it was exit 1,
    a traceback, and the traceback of a second failure from closing the state file); the rerun without the limit
    resumes and writes the run an uninterrupted rerank writes."""
    import resource

    from conftest import TOY_QUERIES

    run = tmp_path / "bm25.trec"
    run.write_text("".join(f"{q['_id']} Q0 d{i} {i} {10 - i} bm25\n" for q in TOY_QUERIES for i in range(1, 7)))
    args = [sys.executable, "-m", "pyserini_qpeft", "rerank", "--run", str(run), "--topics",
            str(toy_beir / "queries.jsonl"), "--corpus", str(toy_beir), "--reranker", "upr", "--model",
            str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "--batch-size-rerank", "2", "-q"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (400, 400))

    full = invoke(*args[3:], "--output", str(tmp_path / "full.trec"))  # in-process: the reference run
    assert full.exit_code == 0, full.output
    cut = subprocess.run([*args, "--output", str(tmp_path / "cut.trec")], capture_output=True, text=True, env=env,
                         preexec_fn=limited)
    assert cut.returncode == 3, cut.stderr
    assert "Traceback" not in cut.stderr and "cut.trec.partial: cannot write: File too large" in cut.stderr
    assert not (tmp_path / "cut.trec").exists() and (tmp_path / "cut.trec.partial").exists()
    again = subprocess.run([*args, "--output", str(tmp_path / "cut.trec")], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "cut.trec").read_bytes() == (tmp_path / "full.trec").read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# 9. rerank state: tied to the document text, one writer at a time


def test_a_rerank_state_written_before_the_weights_digest_still_resumes(tiny_lm_path, tmp_path):
    """States written before the LM's full-content digest joined the header (a local model) are this job's: they
    resume (and shards merge) as before, checked by the sampled fingerprint as then; states written now carry it."""
    import json as _json

    from pyserini_qpeft.data import Document
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.rerank.base import DictDocStore
    from pyserini_qpeft.rerank.lm import UPRReranker
    from pyserini_qpeft.types import Hit, Query, Run

    lm = FrozenLM.load(LMConfig(model=str(tiny_lm_path), device="cpu", dtype="fp32"))
    digest = lm.weights_sha256
    assert digest
    queries = [Query("q1", "what causes lung cancer")]
    docs = DictDocStore({"d1": Document("d1", "", "smoking causes lung cancer"), "d2": Document("d2", "", "aspirin")})
    run = Run({"q1": [Hit("d1", 2.0), Hit("d2", 1.0)]})
    reranker = UPRReranker(lm, ScorerConfig(batch_size=1))
    whole = reranker.rerank(queries, run, docs, depth=2, progress=False)
    state = tmp_path / "run.trec.partial"
    lm.weights_sha256 = None  # what an older version wrote: no digest in the header
    reranker.rerank(queries, run, docs, depth=2, progress=False, state_path=state)
    lm.weights_sha256 = digest
    old_header = state.read_text().splitlines()[0]
    resumed = reranker.rerank(queries, run, docs, depth=2, progress=False, state_path=state)
    assert [(h.docid, h.score) for h in resumed["q1"]] == [(h.docid, h.score) for h in whole["q1"]]
    assert state.read_text().splitlines()[0] == old_header  # continued as it was
    fresh = tmp_path / "new.trec.partial"
    reranker.rerank(queries, run, docs, depth=2, progress=False, state_path=fresh)
    assert _json.loads(fresh.read_text().splitlines()[0]) != _json.loads(old_header)  # the digest is in new ones

def test_a_qpeft_retr_state_scored_under_the_earlier_hint_choice_is_another_job(tiny_lm, tmp_path, monkeypatch):
    """Q-PEFT-R's hint tokens are chosen row by row with ties in passage order since 2026-12-07 (before, float noise
    of the batch broke them): a state written before would mix both choices, so it is refused, digest or not."""
    from pyserini_qpeft.data import Document
    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.qpeft.module import QPeftConfig, QPeftModule, build_module
    from pyserini_qpeft.rerank.base import DictDocStore
    from pyserini_qpeft.rerank.lm import LMReranker
    from pyserini_qpeft.types import Query

    queries = [Query("q1", "what causes lung cancer")]
    run = Run({"q1": [Hit(d["_id"], 6.0 - i) for i, d in enumerate(TOY_CORPUS)]})
    docs = DictDocStore({d["_id"]: Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS})
    module = build_module(tiny_lm, QPeftConfig(variant="retr", top_k=3))
    reranker = LMReranker(tiny_lm, ScorerConfig(batch_size=2), hint_module=module, name="qpeft-retr")
    assert "passage order" in module.selection_rule
    digest, state = tiny_lm.weights_sha256, tmp_path / "out.trec.partial"
    with monkeypatch.context() as m:  # what versions before wrote: no rule (and, older still, no digest)
        m.setattr(QPeftModule, "selection_rule", property(lambda self: None))
        tiny_lm.weights_sha256 = None
        try:
            reranker.rerank(queries, run, docs, depth=4, progress=False, state_path=state)
        finally:
            tiny_lm.weights_sha256 = digest
    with pytest.raises(InputError, match="belongs to another job"):
        reranker.rerank(queries, run, docs, depth=4, progress=False, state_path=state)
    state.unlink()
    whole = reranker.rerank(queries, run, docs, depth=4, progress=False)
    again = reranker.rerank(queries, run, docs, depth=4, progress=False, state_path=state)  # written now: this job's
    resumed = reranker.rerank(queries, run, docs, depth=4, progress=False, state_path=state)
    assert [(h.docid, h.score) for h in resumed["q1"]] == [(h.docid, h.score) for h in again["q1"]] == \
        [(h.docid, h.score) for h in whole["q1"]]
    # the other variants' states from before still resume: their hint choice did not change (audit V)
    attn = LMReranker(tiny_lm, ScorerConfig(batch_size=2), name="qpeft-attn",
                      hint_module=build_module(tiny_lm, QPeftConfig(variant="attn")))
    old = tmp_path / "attn.trec.partial"
    with monkeypatch.context() as m:
        m.setattr(QPeftModule, "selection_rule", property(lambda self: None))
        attn.rerank(queries, run, docs, depth=4, progress=False, state_path=old)
    attn.rerank(queries, run, docs, depth=4, progress=False, state_path=old)


def test_a_rerank_state_is_another_jobs_under_another_prompt_budget_query_text_or_hint_weights(tiny_lm, tmp_path):
    """What the state header pins besides the corpus: the scorer's settings, each query's text and a hint module's
    weights; any of them changed would mix two jobs' scores in one run (mutants audit U: P02-P04)."""
    import torch

    from pyserini_qpeft.data import Document
    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.qpeft.module import QPeftConfig, build_module
    from pyserini_qpeft.rerank.base import DictDocStore
    from pyserini_qpeft.rerank.lm import LMReranker
    from pyserini_qpeft.types import Query

    queries = [Query("q1", "what causes lung cancer")]
    run = Run({"q1": [Hit(d["_id"], 6.0 - i) for i, d in enumerate(TOY_CORPUS)]})
    docs = DictDocStore({d["_id"]: Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS})
    module = build_module(tiny_lm, QPeftConfig(variant="attn"))
    state = tmp_path / "out.trec.partial"

    def rerank(config=ScorerConfig(batch_size=2), hint=module, topics=queries):
        return LMReranker(tiny_lm, config, hint_module=hint, name="qpeft-attn").rerank(
            topics, run, docs, depth=4, progress=False, state_path=state)

    rerank()
    rerank()  # the same job resumes
    other = build_module(tiny_lm, QPeftConfig(variant="attn"))
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    for changed in (dict(config=ScorerConfig(batch_size=2, max_passage_tokens=8)), dict(hint=other),
                    dict(topics=[Query("q1", "what prevents lung cancer")])):
        with pytest.raises(InputError, match="belongs to another job"):
            rerank(**changed)


def test_rerank_state_from_another_corpus_is_refused_and_a_second_writer_is_locked_out(tiny_lm, tmp_path):
    import fcntl

    from pyserini_qpeft.data import Document
    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.rerank.base import DictDocStore
    from pyserini_qpeft.rerank.lm import UPRReranker
    from pyserini_qpeft.types import Query

    queries = [Query("q1", "what causes lung cancer")]
    run = Run({"q1": [Hit(d["_id"], 6.0 - i) for i, d in enumerate(TOY_CORPUS)]})
    docs = {d["_id"]: Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS}
    reranker = UPRReranker(tiny_lm, ScorerConfig(batch_size=2, prefix_batch_size=1))
    state = tmp_path / "out.trec.partial"
    reranker.rerank(queries, run, DictDocStore(docs), depth=4, progress=False, state_path=state)
    other = dict(docs, d1=Document("d1", "Lung cancer", "a different text"))
    with pytest.raises(InputError, match="belongs to another job"):
        reranker.rerank(queries, run, DictDocStore(other), depth=4, progress=False, state_path=state)
    # other LM weights under the same model path (the state would mix two models' scores)
    import copy

    swapped = copy.copy(tiny_lm)
    swapped.weights = "0" * 16
    with pytest.raises(InputError, match="belongs to another job"):
        UPRReranker(swapped, ScorerConfig(batch_size=2, prefix_batch_size=1)).rerank(
            queries, run, DictDocStore(docs), depth=4, progress=False, state_path=state)

    with open(state, "a") as holder:  # another process holds the state file
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another process is reranking into this output"):
            reranker.rerank(queries, run, DictDocStore(docs), depth=4, progress=False, state_path=state)


# ---------------------------------------------------------------------------------------------------------------
# 10. published artifacts get normal permissions


def test_published_artifacts_have_normal_permissions(tiny_lm, tmp_path):
    import numpy as np

    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.qpeft.checkpoint import save_checkpoint
    from pyserini_qpeft.qpeft.module import QPeftConfig, build_module
    from pyserini_qpeft.search.dense import write_faiss_index

    old = os.umask(0o022)
    try:
        config = QPeftConfig(variant="retr")
        outputs = [save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm,
                                   ScorerConfig()),
                   write_faiss_index(tmp_path / "faiss", ["a", "b"], np.eye(2, dtype=np.float32), {"encoder": "t"})]
        Run({"q": [Hit("a", 1.0)]}).write(tmp_path / "run.trec")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run.trec").stat().st_mode) == 0o644
    for folder in outputs:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
        for path in folder.rglob("*"):
            assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


# ---------------------------------------------------------------------------------------------------------------
# 11. an unknown model with no network fails in seconds


def test_pickled_weights_are_refused_as_a_model_error_and_never_run(tiny_lm_path, tmp_path):
    """transformers loads ``pytorch_model.bin`` with ``weights_only=True``, so a pickle payload does not run; the
    refusal was a traceback (exit 1), not the package's model error (exit 6)."""
    import shutil

    import torch

    from pyserini_qpeft.errors import ModelError
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig

    evil = tmp_path / "pickled"
    shutil.copytree(tiny_lm_path, evil)
    for weights in evil.glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Payload()}, evil / "pytorch_model.bin")
    with pytest.raises(ModelError, match="cannot load causal LM"):
        FrozenLM.load(LMConfig(model=str(evil), device="cpu", dtype="fp32"))
    assert not marker.exists()


def test_unknown_model_without_network_fails_fast(monkeypatch):
    import pyserini_qpeft.lm.hub as hub
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(ModelError, match="not in the Hugging Face cache, and .* cannot be reached"):
        FrozenLM.load(LMConfig(model="nobody/no-such-model-xyz", device="cpu", dtype="fp32"))
    assert hub.hub_reachable("host.invalid", timeout=1.0) is False
    # with HF_HUB_OFFLINE=1 nothing is probed: transformers fails fast itself (mutant audit X: hb5)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: pytest.fail("probed the Hub offline"))
    hub.check_model_findable("nobody/no-such-model-xyz")


@pytest.mark.parametrize("method", ["qpeft", "lmort"])
def test_training_never_writes_into_a_users_folder(tmp_path, toy_beir, method):
    folder = tmp_path / "my-results"
    (folder / "best").mkdir(parents=True)
    (folder / "best" / "paper.tex").write_text("precious")
    before = snapshot(folder)
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 2.0 t\n")
    result = invoke("train", method, "--dataset", str(toy_beir), "--negatives", str(run), "--output", str(folder),
                    "--model", "/nonexistent-model")
    assert result.exit_code == 3 and "holds no training run of ours" in result.output, result.output
    assert snapshot(folder) == before
    repo = tmp_path / "my-repo"  # only hidden entries, but a user's (a git checkout): not ours either
    (repo / ".git").mkdir(parents=True)
    result = invoke("train", method, "--dataset", str(toy_beir), "--negatives", str(run), "--output", str(repo),
                    "--model", "/nonexistent-model")
    assert result.exit_code == 3 and "holds no training run of ours" in result.output, result.output


def test_search_sample_queries_searches_only_the_sample(tmp_path, toy_beir, monkeypatch):
    import pyserini_qpeft.search as search_pkg
    from pyserini_qpeft.data import load_topics, sample_topics

    searched = []

    def fake_bm25(index, queries, config, progress=True):
        searched.extend(q.qid for q in queries)
        return Run({q.qid: [Hit("d1", 1.0)] for q in queries})

    monkeypatch.setattr(search_pkg, "bm25_search", fake_bm25)
    topics = str(toy_beir / "queries.jsonl")
    out = tmp_path / "run.trec"
    result = invoke("search", "--bm25", "--index", str(tmp_path), "--topics", topics, "--output", str(out),
                    "--sample-queries", "2", "--sample-seed", "3")
    assert result.exit_code == 0, result.output
    expected = [q.qid for q in sample_topics(load_topics(topics), 2, 3)]
    assert searched == expected and read_run(out).qids() == expected
    result = invoke("search", "--bm25", "--index", str(tmp_path), "--topics", topics, "--output", str(out),
                    "--sample-queries", "5")
    assert result.exit_code == 3 and "cannot sample 5 of 4 topics" in result.output, result.output



def test_an_ignored_sigterm_stays_ignored():
    """A command started with SIGTERM ignored (`trap '' TERM` in a wrapper) ran to the end; the SIGTERM-as-interrupt
    handler must not take that away (audit S-19)."""
    import signal

    from pyserini_qpeft.errors import sigterm_as_interrupt

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with sigterm_as_interrupt():
            assert callable(signal.getsignal(signal.SIGTERM))
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
