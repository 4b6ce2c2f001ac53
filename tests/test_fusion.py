"""Fusion: hand-computed RRF and interpolation values, determinism, validation."""
from __future__ import annotations

import math

import pytest

from pyserini_qpeft.search.fusion import interpolate, rrf
from pyserini_qpeft.types import Hit, Run


def _run(hits: dict[str, list[tuple[str, float]]]) -> Run:
    return Run({qid: [Hit(d, s) for d, s in h] for qid, h in hits.items()})


SPARSE = _run({"q1": [("a", 10.0), ("b", 8.0), ("c", 6.0)], "q2": [("x", 3.0)]})
DENSE = _run({"q1": [("b", 0.9), ("d", 0.7), ("a", 0.5)], "q3": [("y", 0.4), ("z", 0.2)]})


def test_rrf_hand_computed():
    fused = rrf([SPARSE, DENSE], rrf_k=60)
    scores = {h.docid: h.score for h in fused["q1"]}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["c"] == pytest.approx(1 / 63)
    assert scores["d"] == pytest.approx(1 / 62)
    assert [h.docid for h in fused["q1"]] == ["b", "a", "d", "c"]
    assert fused.qids() == ["q1", "q2", "q3"]  # first appearance order; queries of either run kept
    assert [h.docid for h in fused["q3"]] == ["y", "z"]


def test_rrf_depth_cuts_inputs_and_output():
    fused = rrf([SPARSE, DENSE], rrf_k=0, depth=1)
    # only rank-1 docs count (a from sparse, b from dense) with 1/(0+1) each: a tie broken by docid
    assert [(h.docid, h.score) for h in fused["q1"]] == [("a", 1.0)]


def test_rrf_defaults_and_k_are_pyserinis():
    fused = rrf([SPARSE, DENSE])  # Pyserini's --rrf.k 60 and --depth 1000
    assert {h.docid: h.score for h in fused["q1"]} == pytest.approx({"a": 1 / 61 + 1 / 63, "b": 1 / 62 + 1 / 61,
                                                                      "c": 1 / 63, "d": 1 / 62})
    # --k writes the top k of the fused pool; the pool still counts every hit within --depth
    top2 = rrf([SPARSE, DENSE], depth=3, k=2)
    assert [(h.docid, h.score) for h in top2["q1"]] == [(h.docid, h.score) for h in fused["q1"][:2]]
    assert len(rrf([SPARSE, DENSE], depth=3, k=5)["q1"]) == 4


def test_rrf_ties_are_deterministic():
    one = _run({"q": [("b", 1.0)]})
    two = _run({"q": [("a", 1.0)]})
    assert [h.docid for h in rrf([one, two])["q"]] == ["a", "b"]
    assert [h.docid for h in rrf([two, one])["q"]] == ["a", "b"]


def test_interpolate_minmax_hand_computed():
    fused = interpolate(SPARSE, DENSE, alpha=0.5, normalization="minmax")
    s = {h.docid: h.score for h in fused["q1"]}
    # sparse minmax: a=1, b=0.5, c=0 (d missing -> sparse min 0); dense: b=1, d=0.5, a=0 (c missing -> 0)
    assert s == pytest.approx({"a": 0.5, "b": 0.75, "c": 0.0, "d": 0.25})
    assert [h.docid for h in fused["q1"]] == ["b", "a", "d", "c"]
    # a query only in one run: single hit minmax -> 1.0, the other side contributes 0
    assert fused["q2"][0].score == pytest.approx(0.5)


def test_interpolate_none_and_alpha_extremes():
    only_sparse = interpolate(SPARSE, DENSE, alpha=1.0, normalization="none")
    assert [h.docid for h in only_sparse["q1"]][:3] == ["a", "b", "c"]
    s = {h.docid: h.score for h in only_sparse["q1"]}
    assert s["d"] == pytest.approx(0.0)  # unnormalised: missing from sparse -> 0, as pyserini.fusion sums raw scores
    only_dense = interpolate(SPARSE, DENSE, alpha=0.0, normalization="none")
    assert {h.docid: h.score for h in only_dense["q1"]}["c"] == pytest.approx(0.0)
    normalised = interpolate(SPARSE, DENSE, alpha=1.0, normalization="minmax")
    assert {h.docid: h.score for h in normalised["q1"]}["d"] == pytest.approx(0.0)  # min-max: the run's minimum


def test_interpolate_zscore_hand_computed():
    fused = interpolate(SPARSE, DENSE, alpha=0.5, normalization="zscore")
    sd = math.sqrt(((10 - 8) ** 2 + 0 + (6 - 8) ** 2) / 3)
    dm = (0.9 + 0.7 + 0.5) / 3
    dsd = math.sqrt(((0.9 - dm) ** 2 + (0.7 - dm) ** 2 + (0.5 - dm) ** 2) / 3)
    s = {h.docid: h.score for h in fused["q1"]}
    assert s["a"] == pytest.approx(0.5 * (2 / sd) + 0.5 * ((0.5 - dm) / dsd))
    assert s["d"] == pytest.approx(0.5 * (-2 / sd) + 0.5 * ((0.7 - dm) / dsd))


def test_fusion_does_not_mutate_inputs():
    before = SPARSE.to_dict(), DENSE.to_dict()
    rrf([SPARSE, DENSE])
    interpolate(SPARSE, DENSE)
    assert (SPARSE.to_dict(), DENSE.to_dict()) == before


@pytest.mark.parametrize("kwargs", [{"alpha": 1.5}, {"normalization": "max"}, {"depth": 0}])
def test_interpolate_validates(kwargs):
    with pytest.raises(ValueError):
        interpolate(SPARSE, DENSE, **kwargs)


def test_rrf_validates():
    with pytest.raises(ValueError):
        rrf([])
    with pytest.raises(ValueError):
        rrf([SPARSE], rrf_k=-1)


def test_fuse_rrf_reads_pyserinis_flags_and_writes_pyserinis_run(tmp_path):
    """`fuse --runs A B --rrf.k 10 --depth 4 --k 3 --runtag T` = `python -m pyserini.fusion` with the same flags."""
    import random
    import subprocess
    import sys

    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.types import read_run

    rng = random.Random(0)
    paths = []
    for name in ("a", "b"):
        run = Run({q: [Hit(f"d{n}", rng.random()) for n in rng.sample(range(12), 6)] for q in ("q1", "q2")})
        paths.append(tmp_path / f"{name}.trec")
        run.write(paths[-1])
    flags = ["--runs", *map(str, paths), "--method", "rrf", "--rrf.k", "10", "--depth", "4", "--k", "3",
             "--runtag", "fused"]
    ours = CliRunner().invoke(cli, ["fuse", *flags, "--output", str(tmp_path / "ours.trec")])
    assert ours.exit_code == 0, ours.output
    subprocess.run([sys.executable, "-m", "pyserini.fusion", *flags, "--output", str(tmp_path / "theirs.trec")],
                   check=True, capture_output=True, timeout=300)

    def lines(path):
        return sorted(line.split() for line in path.read_text().splitlines())

    theirs = lines(tmp_path / "theirs.trec")
    assert len(theirs) == 6 and {row[5] for row in theirs} == {"fused"}
    mine = lines(tmp_path / "ours.trec")
    assert mine == theirs  # the same hits, ranks, tie order and scores, written in full as pyserini.fusion does
    # interpolation without normalisation: pyserini.fusion's weighted sum (a document missing from a run adds 0)
    flags = ["--runs", *map(str, paths), "--method", "interpolation", "--alpha", "0.3", "--depth", "4", "--k", "5",
             "--runtag", "fused"]
    ours = CliRunner().invoke(cli, ["fuse", *flags, "--normalization", "none", "--output", str(tmp_path / "oi.trec")])
    assert ours.exit_code == 0, ours.output
    subprocess.run([sys.executable, "-m", "pyserini.fusion", *flags, "--output", str(tmp_path / "ti.trec")],
                   check=True, capture_output=True, timeout=300)
    theirs, mine = lines(tmp_path / "ti.trec"), lines(tmp_path / "oi.trec")
    assert len(theirs) == 10 and mine == theirs
    # RRF sums that differ only past the 6th decimal (1/75 + 1/88 vs 1/69 + 1/98 at k 60, audit R-3): ranked by the
    # fused score as in pyserini.fusion (printed to 6 decimals they tied and went by docid: "x", the lower, first)
    first = Run({"q": [Hit(f"f{n:02d}", 100.0 - n) for n in range(1, 15)] + [Hit("y", 85.0 - 14), Hit("x", 0.5)]})
    ranks_a = {"x": 9, "y": 15}
    ranks_b = {"x": 38, "y": 28}
    runs = []
    for name, ranks in (("ra", ranks_a), ("rb", ranks_b)):
        fill = [f"p{name}{n:02d}" for n in range(40)]
        order = []
        for rank in range(1, 41):
            order.append(next(d for d, r in ranks.items() if r == rank) if rank in ranks.values() else fill.pop())
        runs.append(tmp_path / f"{name}.trec")
        Run({"q": [Hit(d, 100.0 - i) for i, d in enumerate(order)]}).write(runs[-1])
    flags = ["--runs", *map(str, runs), "--method", "rrf", "--rrf.k", "60", "--depth", "40", "--k", "40",
             "--runtag", "f"]
    assert CliRunner().invoke(cli, ["fuse", *flags, "--output", str(tmp_path / "nt.trec")]).exit_code == 0
    subprocess.run([sys.executable, "-m", "pyserini.fusion", *flags, "--output", str(tmp_path / "nt-theirs.trec")],
                   check=True, capture_output=True, timeout=300)
    assert (tmp_path / "nt.trec").read_text().split() == (tmp_path / "nt-theirs.trec").read_text().split()
    order = [line.split()[2] for line in (tmp_path / "nt.trec").read_text().splitlines()]
    assert order.index("y") < order.index("x")  # 1/75 + 1/88 = 0.02469697 > 1/69 + 1/98 = 0.02469684
    legacy = CliRunner().invoke(cli, ["fuse", "--run", str(paths[0]), "--run", str(paths[1]), "--runtag", "a b",
                                      "--output", str(tmp_path / "x.trec")])
    assert legacy.exit_code == 2 and "--runtag" in legacy.output
    # a weight (or a select-interpolation file) or a normalisation given to RRF is refused, not silently ignored
    for extra in (["--alpha", "0.3"], ["--normalization", "zscore"]):
        ignored = CliRunner().invoke(cli, ["fuse", "--run", str(paths[0]), "--run", str(paths[1]), "--method", "rrf",
                                           *extra, "--output", str(tmp_path / "y.trec")])
        assert ignored.exit_code == 2 and f"{extra[0]} does not apply to --method rrf" in ignored.output
        assert not (tmp_path / "y.trec").exists()
    both = CliRunner().invoke(cli, ["fuse", "--run", str(paths[0]), "--run", str(paths[1]), "--method", "rrf",
                                    "--alpha", "0.3", "--normalization", "zscore", "--output", str(tmp_path / "y.trec")])
    assert both.exit_code == 2 and "--alpha and --normalization do not apply to --method rrf" in both.output
