"""Run/Hit types and TREC run I/O: deterministic order, atomic writes, errors that name file and line."""
from __future__ import annotations

import os

import pytest

from pyserini_qpeft.errors import InputError
from pyserini_qpeft.artifacts import atomic_write
from pyserini_qpeft.types import Hit, Run, read_run, write_run


def test_ties_break_by_docid_and_roundtrip(tmp_path):
    run = Run({"q1": [Hit("b", 1.0), Hit("c", 2.0), Hit("a", 1.0)], "q2": [Hit("x", 0.5)]})
    assert [h.docid for h in run["q1"]] == ["c", "a", "b"]
    path = tmp_path / "run.trec"
    write_run(run, path, tag="t")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 c 1 2.000000 t"
    assert lines[1].startswith("q1 Q0 a 2 ")
    back = read_run(path)
    assert back.to_dict() == run.to_dict()
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_hits_that_tie_once_printed_are_written_in_the_order_they_read_back(tmp_path):
    """Scores are printed to 6 decimals (as Pyserini prints them): two hits that differ only below that tie in the
    file; their lines and rank column follow the docid order a reader gives them (Pyserini's RRF takes the rank
    column; `fuse` and `rerank` read tied hits by docid), so file order = read-back order."""
    run = Run({"q1": [Hit("z", 0.9), Hit("b", 0.12345649), Hit("a", 0.12345641), Hit("c", 0.1)]})
    assert [h.docid for h in run["q1"]] == ["z", "b", "a", "c"]  # in memory: by the full score
    path = tmp_path / "run.trec"
    write_run(run, path, tag="t")
    assert [line.split()[2:5] for line in path.read_text().splitlines()] == [
        ["z", "1", "0.900000"], ["a", "2", "0.123456"], ["b", "3", "0.123456"], ["c", "4", "0.100000"]]
    assert [h.docid for h in read_run(path)["q1"]] == ["z", "a", "b", "c"]
    write_run(run, path, tag="t", depth=2)  # the cut takes the printed order's first hits
    assert [line.split()[2] for line in path.read_text().splitlines()] == ["z", "a"]


@pytest.mark.parametrize("line,needle", [
    ("q1 Q0 d1 1 1.0\n", "expected 6 columns"),
    ("q1 Q0 d1 1 1.0 t extra\n", "expected 6 columns"),  # a seventh column (mutant audit W: T11)
    ("q1 Q0 d1 one 1.0 t\n", "non-numeric"),
    ("q1 Q0 d1 1.5 1.0 t\n", "non-numeric"),
    ("q1 Q0 d1 1 abc t\n", "non-numeric"),
    ("q1 Q0 d1 1 nan t\n", "NaN"),
])
def test_malformed_run_lines_name_file_and_line(tmp_path, line, needle):
    path = tmp_path / "bad.trec"
    path.write_text("q0 Q0 d0 1 2.0 t\n" + line)
    with pytest.raises(InputError) as err:
        read_run(path)
    assert f"{path}:2:" in str(err.value) and needle in str(err.value)
    assert err.value.exit_code == 3


def test_a_rank_written_as_a_float_is_read(tmp_path):
    """Some tools write the rank column as 1.0, 2.0: trec_eval ignores the column; so do we, once it is whole."""
    path = tmp_path / "floats.trec"
    path.write_text("q1 Q0 d1 1.0 3.0 t\nq1 Q0 d2 2.0 2.0 t\n")
    assert [h.docid for h in read_run(path)["q1"]] == ["d1", "d2"]


def test_msmarco_runs_read_by_rank(tmp_path):
    """Pyserini's --output-format msmarco (qid<TAB>docid<TAB>rank) reads as a run ranked by rank; a TREC line in it,
    or an MS MARCO line in a TREC run, names file and line."""
    path = tmp_path / "run.msmarco.tsv"
    path.write_text("1048585\t7187158\t1\n1048585\t7187157\t2\n2\t9\t2\n2\t8\t1\n")
    run = read_run(path)
    assert [h.docid for h in run["1048585"]] == ["7187158", "7187157"] and [h.docid for h in run["2"]] == ["8", "9"]
    assert run.tag == "msmarco" and run["2"][0].score == -1.0
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("1\t7\t1\n1 Q0 8 2 1.0 t\n")
    with pytest.raises(InputError, match=r"mixed.tsv:2: expected MS MARCO's 3 tab-separated columns"):
        read_run(mixed)
    trec = tmp_path / "trec.txt"
    trec.write_text("1 Q0 7 1 2.0 t\n1\t8\t2\n")
    with pytest.raises(InputError, match=r"trec.txt:2: expected 6 columns"):
        read_run(trec)
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t7\t0\n")
    with pytest.raises(InputError, match=r"bad.tsv:1: rank 0 \(an MS MARCO run ranks from 1\)"):
        read_run(bad)


def test_msmarco_output_reads_back_in_the_same_order(tmp_path):
    run = Run({"7": [Hit("b", 2.0), Hit("a", 2.0), Hit("c", 5.0)], "3": [Hit("x", -1.0)]})
    run.write(tmp_path / "run.tsv", output_format="msmarco", depth=2)
    assert (tmp_path / "run.tsv").read_text() == "7\tc\t1\n7\ta\t2\n3\tx\t1\n"  # ties by docid, as TREC
    back = read_run(tmp_path / "run.tsv")
    assert {q: [h.docid for h in back[q]] for q in back} == {"7": ["c", "a"], "3": ["x"]}
    with pytest.raises(ValueError, match="output_format"):
        run.write(tmp_path / "run.kilt", output_format="kilt")


def test_duplicate_docid_and_empty_and_missing(tmp_path):
    dup = tmp_path / "dup.trec"
    dup.write_text("q Q0 d 1 2.0 t\nq Q0 d 2 1.0 t\n")
    with pytest.raises(InputError, match="appears twice"):
        read_run(dup)
    empty = tmp_path / "empty.trec"
    empty.write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_run(empty)
    with pytest.raises(InputError, match="not found"):
        read_run(tmp_path / "missing.trec")


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as out:
            out.write("partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_tag_rejected(tmp_path):
    with pytest.raises(InputError):
        write_run(Run({"q": [Hit("d", 1.0)]}), tmp_path / "r.trec", tag="two words")
    assert not (tmp_path / "r.trec").exists()
