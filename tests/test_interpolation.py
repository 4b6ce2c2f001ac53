"""First-stage interpolation of a rerank, and the dev selection of its weight."""
from __future__ import annotations

import pytest

from pyserini_qpeft.search.fusion import ALPHA_GRID, interpolate_rerank, select_alpha
from pyserini_qpeft.types import Hit, Run


def _run(per_query: dict[str, dict[str, float]]) -> Run:
    return Run.from_dict(per_query)


# First stage ranks a > b > c > d > e; the LM (reranked top 3) ranks c > b > a. Relevant: b.
FIRST = _run({"q": {"a": 10.0, "b": 9.5, "c": 5.0, "d": 4.0, "e": 3.0}})
LM = _run({"q": {"c": -1.0, "b": -1.1, "a": -3.0, "d": -4.0, "e": -5.0}})
QRELS = {"q": {"b": 1}}


def _order(run: Run, qid: str = "q") -> list[str]:
    return [h.docid for h in run[qid]]


def test_endpoints_and_tail():
    assert _order(interpolate_rerank(FIRST, LM, alpha=1.0, depth=3)) == ["a", "b", "c", "d", "e"]
    assert _order(interpolate_rerank(FIRST, LM, alpha=0.0, depth=3)) == ["c", "b", "a", "d", "e"]
    # in between, b (second in both) wins; d and e stay below the reranked depth in first-stage order
    mixed = interpolate_rerank(FIRST, LM, alpha=0.5, depth=3)
    assert _order(mixed) == ["b", "a", "c", "d", "e"] or _order(mixed)[0] == "b"
    assert _order(mixed)[3:] == ["d", "e"]
    assert mixed["q"][2].score > mixed["q"][3].score > mixed["q"][4].score


def test_missing_reranker_score_is_an_error():
    partial = _run({"q": {"a": 1.0, "b": 0.5}})
    with pytest.raises(ValueError, match="no reranker score"):
        interpolate_rerank(FIRST, partial, alpha=0.5, depth=3)


def test_select_alpha_finds_the_interior_optimum():
    alpha, table = select_alpha(FIRST, LM, QRELS, depth=3)
    assert set(table) == set(ALPHA_GRID)
    assert table[0.0] < 1.0 and table[1.0] < 1.0  # each alone puts b second
    assert table[alpha] == 1.0 and 0.0 < alpha < 1.0
    # ties go to the weight nearest 0.5
    assert alpha == min((a for a, v in table.items() if v == 1.0), key=lambda a: (abs(a - 0.5), a))


def test_select_alpha_only_counts_judged_queries():
    first = Run.from_dict({"q": FIRST.to_dict()["q"], "unjudged": {"x": 1.0, "y": 0.0}})
    lm = Run.from_dict({"q": LM.to_dict()["q"], "unjudged": {"x": 0.0, "y": 1.0}})
    alpha, _ = select_alpha(first, lm, QRELS, depth=3)
    assert alpha == select_alpha(FIRST, LM, QRELS, depth=3)[0]
    with pytest.raises(ValueError, match="judged"):
        select_alpha(first, lm, {"other": {"x": 1}}, depth=3)


def test_inputs_are_not_mutated():
    before_first, before_lm = FIRST.to_dict(), LM.to_dict()
    interpolate_rerank(FIRST, LM, alpha=0.3, depth=3)
    assert FIRST.to_dict() == before_first and LM.to_dict() == before_lm
    assert isinstance(FIRST["q"][0], Hit)


def test_cli_rerank_interpolate(tiny_lm, tiny_lm_path, toy_beir, tmp_path):
    from click.testing import CliRunner

    from conftest import TOY_CORPUS, TOY_QUERIES
    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.data import Document
    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.rerank import DictDocStore, UPRReranker
    from pyserini_qpeft.types import Query, read_run

    docids = [d["_id"] for d in TOY_CORPUS]
    queries = [Query(q["_id"], q["text"]) for q in TOY_QUERIES]
    first = Run({q.qid: [Hit(d, 10.0 - i) for i, d in enumerate(docids[k:] + docids[:k])]
                 for k, q in enumerate(queries)}, tag="bm25")
    first.write(tmp_path / "bm25.trec")
    docs = DictDocStore({d["_id"]: Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS})
    upr = UPRReranker(tiny_lm, ScorerConfig()).rerank(queries, first, docs, depth=4, progress=False)
    base = ["rerank", "--run", str(tmp_path / "bm25.trec"), "--topics", str(toy_beir / "queries.jsonl"),
            "--corpus", str(toy_beir / "corpus.jsonl"), "--model", str(tiny_lm_path), "--device", "cpu",
            "--dtype", "fp32", "--rerank-depth", "4", "-q"]
    result = CliRunner().invoke(cli, base + ["--reranker", "upr", "--interpolate", "0.3",
                                             "--output", str(tmp_path / "interp.trec")])
    assert result.exit_code == 0, result.output
    expected = interpolate_rerank(first, upr, 0.3, depth=4)
    got = read_run(tmp_path / "interp.trec")
    assert {q: [h.docid for h in got[q]] for q in got} == {q: [h.docid for h in expected[q]] for q in expected}
    assert "upr+interp0.3" in (tmp_path / "interp.trec").read_text().splitlines()[0]
    bad = CliRunner().invoke(cli, base + ["--reranker", "upr", "--interpolate", "1.5",
                                          "--output", str(tmp_path / "bad.trec")])
    assert bad.exit_code == 2 and "interpolat" in bad.output
    # 'auto' needs a weight the reranker carries; identity carries none -> exit 3 before any work
    none = CliRunner().invoke(cli, base + ["--reranker", "identity", "--interpolate", "auto",
                                           "--output", str(tmp_path / "none.trec")])
    assert none.exit_code == 3 and "carries no interpolation weight" in none.output
    assert not (tmp_path / "none.trec").exists()


def test_dev_split_select_and_fuse_cli(toy_beir, tmp_path):
    """dev-split carves the same dev queries as `train qpeft`; select-interpolation writes the weight that
    `fuse --method rerank-interpolation --alpha FILE` and `rerank --interpolate FILE` read."""
    import json

    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.data import BeirDataset
    from pyserini_qpeft.training.data import load_training_data, split_dev
    from pyserini_qpeft.types import read_run

    docs = ["d1", "d2", "d3", "d4", "d5", "d6"]
    first = Run({q: [Hit(d, 6.0 - i) for i, d in enumerate(docs[k:] + docs[:k])]
                 for k, q in enumerate(["q1", "q2", "q3", "q4"])}, tag="bm25")
    first.write(tmp_path / "bm25-train.trec")
    runner = CliRunner()
    out = runner.invoke(cli, ["dev-split", "--dataset", str(toy_beir), "--negatives", str(tmp_path / "bm25-train.trec"),
                              "--dev-size", "1", "--seed", "3", "--output", str(tmp_path / "dev.trec"), "-q"])
    assert out.exit_code == 0, out.output
    dev_run = read_run(tmp_path / "dev.trec")
    examples, _, _ = load_training_data(BeirDataset(toy_beir), "train", first, negative_depth=20)
    assert dev_run.qids() == [e.qid for e in split_dev(examples, 1, 3)[1]]
    qid = dev_run.qids()[0]
    assert [h.docid for h in dev_run[qid]] == [h.docid for h in first[qid]]
    out = runner.invoke(cli, ["dev-split", "--dataset", str(toy_beir), "--negatives", str(tmp_path / "bm25-train.trec"),
                              "--dev-size", "1", "--seed", "4", "--dev-carve", "unseen", "--output",
                              str(tmp_path / "dev-unseen.trec"), "-q"])
    assert out.exit_code == 0, out.output
    assert read_run(tmp_path / "dev-unseen.trec").qids() == [e.qid for e in split_dev(examples, 1, 4, "unseen")[1]]
    refused = runner.invoke(cli, ["dev-split", "--dataset", str(toy_beir), "--split", "test", "--negatives",
                                  str(tmp_path / "bm25-train.trec"), "--output", str(tmp_path / "x.trec"), "-q"])
    assert refused.exit_code == 3

    # a "reranker" that reverses the top 3: interpolation helps or not depending on the relevant docid's place
    reranked = Run({q: [Hit(h.docid, float(i)) for i, h in enumerate(dev_run[q][:3])] for q in dev_run.qids()})
    reranked.write(tmp_path / "dev-rr.trec")
    out = runner.invoke(cli, ["select-interpolation", "--first-stage", str(tmp_path / "dev.trec"), "--reranked",
                              str(tmp_path / "dev-rr.trec"), "--qrels", str(toy_beir / "qrels" / "train.tsv"),
                              "--depth", "3", "--output", str(tmp_path / "alpha.json")])
    assert out.exit_code == 0, out.output
    record = json.loads((tmp_path / "alpha.json").read_text())
    assert record["format"] == "pyserini_qpeft.interpolation/1" and record["dev_queries"] == 1
    assert "warning" not in out.output
    with pytest.MonkeyPatch.context() as env:  # selecting on a test split by name is allowed, with a warning
        env.setenv("PYSERINI_QPEFT_DATA", str(toy_beir.parent))
        on_test = runner.invoke(cli, ["select-interpolation", "--first-stage", str(tmp_path / "dev.trec"),
                                      "--reranked", str(tmp_path / "dev-rr.trec"), "--qrels",
                                      f"beir-v1.0.0-{toy_beir.name}-test", "--depth", "3", "--output",
                                      str(tmp_path / "alpha-test.json")])
    assert f"warning: --qrels beir-v1.0.0-{toy_beir.name}-test selects the weight on test queries" in on_test.output
    assert len(record["table"]) == 21 and record["alpha"] in ALPHA_GRID

    out = runner.invoke(cli, ["fuse", "--method", "rerank-interpolation", "--run", str(tmp_path / "dev.trec"),
                              "--run", str(tmp_path / "dev-rr.trec"), "--depth", "3", "--alpha",
                              str(tmp_path / "alpha.json"), "--output", str(tmp_path / "fused.trec")])
    assert out.exit_code == 0, out.output
    expected = interpolate_rerank(dev_run, reranked, record["alpha"], depth=3)
    assert read_run(tmp_path / "fused.trec").to_dict().keys() == expected.to_dict().keys()
    assert [h.docid for h in read_run(tmp_path / "fused.trec")[qid]] == [h.docid for h in expected[qid]]
    assert "selected reranking the top" not in out.output
    # a selection at a --depth beyond the runs' hits records the depth the dev reranks covered (audit V: a rerank
    # at that --depth on runs as deep warned "1000 vs 3")
    Run({q: [Hit(h.docid, float(i)) for i, h in enumerate(dev_run[q])] for q in dev_run.qids()}).write(
        tmp_path / "dev-rr-all.trec")  # every hit reranked
    deep = runner.invoke(cli, ["select-interpolation", "--first-stage", str(tmp_path / "dev.trec"), "--reranked",
                               str(tmp_path / "dev-rr-all.trec"), "--qrels", str(toy_beir / "qrels" / "train.tsv"),
                               "--depth", "1000", "--output", str(tmp_path / "alpha-deep.json")])
    assert deep.exit_code == 0, deep.output
    covered = max(len(dev_run[q]) for q in dev_run.qids())
    assert covered < 1000 and json.loads((tmp_path / "alpha-deep.json").read_text())["depth"] == covered
    same = runner.invoke(cli, ["fuse", "--method", "rerank-interpolation", "--run", str(tmp_path / "dev.trec"),
                               "--run", str(tmp_path / "dev-rr-all.trec"), "--depth", "1000", "--alpha",
                               str(tmp_path / "alpha-deep.json"), "--output", str(tmp_path / "fused-deep.trec")])
    assert same.exit_code == 0 and "selected reranking the top" not in same.output, same.output
    # the file's weight applied at another depth than it was selected at: said, and applied as given
    other = runner.invoke(cli, ["fuse", "--method", "rerank-interpolation", "--run", str(tmp_path / "dev.trec"),
                                "--run", str(tmp_path / "dev-rr.trec"), "--depth", "2", "--alpha",
                                str(tmp_path / "alpha.json"), "--output", str(tmp_path / "fused2.trec")])
    assert other.exit_code == 0, other.output
    assert (f"warning: --alpha {tmp_path / 'alpha.json'}: it was selected reranking the top 3, this rerank covers "
            f"the top 2") in other.output
    at2 = interpolate_rerank(dev_run, reranked, record["alpha"], depth=2)
    assert {q: [h.docid for h in hits] for q, hits in read_run(tmp_path / "fused2.trec").hits.items()} == \
        {q: [h.docid for h in hits] for q, hits in at2.hits.items()}
    (tmp_path / "bogus.json").write_text("{}")
    bad = runner.invoke(cli, ["fuse", "--method", "rerank-interpolation", "--run", str(tmp_path / "dev.trec"),
                              "--run", str(tmp_path / "dev-rr.trec"), "--depth", "3", "--alpha",
                              str(tmp_path / "bogus.json"), "--output", str(tmp_path / "f2.trec")])
    assert bad.exit_code == 2 and "selection file" in bad.output


def test_upr_carries_its_documented_weight_and_upr_instruct_none(tiny_lm, caplog, tmp_path):
    import json
    import logging

    from pyserini_qpeft.rerank import build_reranker
    from pyserini_qpeft.rerank.lm import UPR_INTERPOLATION
    from pyserini_qpeft.rerank.pipeline import interpolation_alpha

    upr = build_reranker("upr", lm=tiny_lm)
    with caplog.at_level(logging.WARNING):
        assert interpolation_alpha(upr, "auto") == UPR_INTERPOLATION["alpha"] == 0.4
    # said without -v: the weight was selected on SciFact with SmolLM2, whatever dataset and model this is
    assert "first-stage weight 0.40, selected on 80 SciFact train queries" in caplog.text
    assert "select one on its dev queries (`pyserini-qpeft select-interpolation`)" in caplog.text
    assert "selected reranking the top" not in caplog.text  # no depth given: nothing to compare
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        interpolation_alpha(upr, "auto", depth=20)
    assert "selected reranking the top" not in caplog.text  # the depth it was selected at
    with caplog.at_level(logging.WARNING):
        interpolation_alpha(upr, "auto", depth=100)
    assert "selected reranking the top 20, this rerank covers the top 100" in caplog.text
    # a checkpoint's carried record keeps its depth in its selection record
    retr = build_reranker("upr", lm=tiny_lm)
    retr.interpolation = {"alpha": 0.3, "source": "dev", "selection": {"depth": 10}}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert interpolation_alpha(retr, "auto", depth=20) == 0.3
    assert "selected reranking the top 10, this rerank covers the top 20" in caplog.text
    assert interpolation_alpha(upr, 0.25) == 0.25 and interpolation_alpha(upr, None) is None
    # a selection file's weight (--interpolate FILE) is checked against the depth the same way
    from pyserini_qpeft.rerank.flags import SelectedWeight, interpolation_weight
    from pyserini_qpeft.search.fusion import selection_record

    (tmp_path / "sel.json").write_text(json.dumps(selection_record(0.35, {0.35: 0.5}, "ndcg@10", 20, "zscore", 4)))
    weight = interpolation_weight(str(tmp_path / "sel.json"))
    assert isinstance(weight, SelectedWeight) and weight == 0.35 and weight.depth == 20
    import copy
    import pickle

    for clone in (pickle.loads(pickle.dumps(weight)), copy.deepcopy(weight)):
        assert (type(clone), clone, clone.path, clone.depth) == (SelectedWeight, 0.35, weight.path, 20)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert interpolation_alpha(upr, weight, depth=20) == 0.35
    assert "selected reranking the top" not in caplog.text
    with caplog.at_level(logging.WARNING):
        assert type(interpolation_alpha(upr, weight, depth=100)) is float
    assert (f"--interpolate {tmp_path / 'sel.json'}: first-stage weight 0.35; it was selected reranking the top 20, "
            f"this rerank covers the top 100") in caplog.text
    from pyserini_qpeft.errors import InputError

    with pytest.raises(InputError, match="carries no interpolation weight"):
        interpolation_alpha(build_reranker("upr-instruct", lm=tiny_lm), "auto")


def test_hybrid_weight_selection_counts_only_the_first_runs_queries():
    """select_alpha(method="interpolation") scores `interpolate(sparse, dense)` on the sparse run's (dev) queries
    only, even when the dense run covers more queries."""
    from pyserini_qpeft.evaluation import evaluate
    from pyserini_qpeft.search.fusion import interpolate

    sparse = _run({"q": {"a": 3.0, "b": 2.0, "c": 1.0}})
    dense = _run({"q": {"c": 0.9, "b": 0.8, "d": 0.1}, "other": {"a": 1.0}})
    qrels = {"q": {"b": 1}, "other": {"zzz": 1}}
    alpha, table = select_alpha(sparse, dense, qrels, depth=1000, method="interpolation")
    for a in (0.0, 0.3, 1.0):
        fused = interpolate(sparse, _run({"q": {"c": 0.9, "b": 0.8, "d": 0.1}}), a, "zscore", 1000)
        assert table[a] == pytest.approx(evaluate(fused, {"q": {"b": 1}}, ["ndcg@10"])["ndcg@10"])
    assert table[1.0] < 1.0 and table[alpha] == 1.0  # b first only when both runs count
    with pytest.raises(ValueError, match="method must be one of"):
        select_alpha(sparse, dense, qrels, depth=10, method="rrf")


def test_selection_files_apply_only_to_their_fusion(tmp_path):
    """A hybrid weight file drives `fuse --method interpolation` with its own normalization; a rerank (`fuse
    --method rerank-interpolation`, `rerank --interpolate`) refuses it, and an explicit other normalization is a
    usage error."""
    import json

    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.rerank.flags import interpolation_weight
    from pyserini_qpeft.search.fusion import interpolate, selection_record
    from pyserini_qpeft.types import read_run

    FIRST.write(tmp_path / "sparse.trec")
    LM.write(tmp_path / "dense.trec")
    record = selection_record(0.25, {0.25: 1.0}, "ndcg@10", 1000, "minmax", 1, method="interpolation")
    (tmp_path / "hybrid.json").write_text(json.dumps(record))
    base = ["fuse", "--run", str(tmp_path / "sparse.trec"), "--run", str(tmp_path / "dense.trec"),
            "--alpha", str(tmp_path / "hybrid.json")]
    out = CliRunner().invoke(cli, base + ["--method", "interpolation", "--output", str(tmp_path / "h.trec")])
    assert out.exit_code == 0, out.output
    expected = interpolate(FIRST, LM, 0.25, "minmax", 1000)
    got = read_run(tmp_path / "h.trec")["q"]
    assert [h.docid for h in got] == [h.docid for h in expected["q"]]
    assert [h.score for h in got] == pytest.approx([h.score for h in expected["q"]], abs=1e-6)  # 6 decimals in TREC
    other = CliRunner().invoke(cli, base + ["--method", "interpolation", "--normalization", "zscore",
                                            "--output", str(tmp_path / "h2.trec")])
    assert other.exit_code == 2 and "selected with --normalization minmax" in other.output
    rerank = CliRunner().invoke(cli, base + ["--method", "rerank-interpolation", "--depth", "3",
                                             "--output", str(tmp_path / "r.trec")])
    assert rerank.exit_code == 2 and "selected for --method interpolation" in rerank.output
    assert not (tmp_path / "h2.trec").exists() and not (tmp_path / "r.trec").exists()
    with pytest.raises(ValueError, match="not for a rerank"):
        interpolation_weight(str(tmp_path / "hybrid.json"))
    # a rerank weight selected on min-max scores: `fuse` applies it with min-max, `rerank --interpolate` (z-scores
    # only) refuses it instead of applying the weight to other scores than it was selected on
    minmax = selection_record(0.25, {0.25: 1.0}, "ndcg@10", 3, "minmax", 1, method="rerank-interpolation")
    (tmp_path / "rr-minmax.json").write_text(json.dumps(minmax))
    with pytest.raises(ValueError, match="selected with --normalization minmax; `rerank --interpolate` applies"):
        interpolation_weight(str(tmp_path / "rr-minmax.json"))
    zscore = {**minmax, "normalization": "zscore"}
    (tmp_path / "rr-zscore.json").write_text(json.dumps(zscore))
    assert interpolation_weight(str(tmp_path / "rr-zscore.json")) == 0.25
    # without --alpha: the default weight (rrf ignores it)
    for method in ("rrf", "interpolation"):
        plain = CliRunner().invoke(cli, ["fuse", "--run", str(tmp_path / "sparse.trec"), "--run",
                                         str(tmp_path / "dense.trec"), "--method", method,
                                         "--output", str(tmp_path / f"{method}.trec")])
        assert plain.exit_code == 0, plain.output
    # records from before hybrids had a method are rerank weights
    legacy = {k: v for k, v in selection_record(0.4, {0.4: 1.0}, "ndcg@10", 3, "zscore", 1).items() if k != "method"}
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    assert interpolation_weight(str(tmp_path / "legacy.json")) == 0.4
    with pytest.raises(ValueError, match="neither a weight in \\[0, 1\\] nor an existing selection file"):
        interpolation_weight(str(tmp_path / "missing.json"))  # not "could not convert string to float"


def test_dev_split_from_a_checkpoint(toy_beir, tmp_path):
    """`dev-split --checkpoint` restricts the run to the dev queries a trained checkpoint recorded (LMORT's own
    carve for its hybrid weight); missing queries, a folder without a checkpoint and --dev-size are refused."""
    import json

    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.types import read_run

    run = Run({q: [Hit("d1", 2.0), Hit("d2", 1.0)] for q in ["q1", "q2", "q3"]}, tag="bm25")
    run.write(tmp_path / "train.trec")
    best = tmp_path / "lmort-out" / "best"
    best.mkdir(parents=True)
    (best / "lmort_config.json").write_text(json.dumps({"module_type": "lmort", "training": {"dev_qids": ["q3", "q1"]}}))
    base = ["dev-split", "--dataset", str(toy_beir), "--negatives", str(tmp_path / "train.trec"), "-q"]
    out = CliRunner().invoke(cli, base + ["--checkpoint", str(tmp_path / "lmort-out"), "--output", str(tmp_path / "d.trec")])
    assert out.exit_code == 0, out.output
    dev = read_run(tmp_path / "d.trec")
    assert dev.qids() == ["q3", "q1"] and [h.docid for h in dev["q3"]] == ["d1", "d2"]
    (best / "lmort_config.json").write_text(json.dumps({"training": {"dev_qids": ["q9"]}}))
    missing = CliRunner().invoke(cli, base + ["--checkpoint", str(best), "--output", str(tmp_path / "m.trec")])
    assert missing.exit_code == 3 and "not in the run" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    none = CliRunner().invoke(cli, base + ["--checkpoint", str(empty), "--output", str(tmp_path / "n.trec")])
    assert none.exit_code == 3 and "not a trained checkpoint" in none.output
    both = CliRunner().invoke(cli, base + ["--checkpoint", str(best), "--dev-size", "1", "--output", str(tmp_path / "b.trec")])
    assert both.exit_code == 2
    assert not any((tmp_path / f).exists() for f in ("m.trec", "n.trec", "b.trec"))


def test_average_reranks_means_normalised_scores_over_the_depth():
    """Several reranks of the same hits as one reranker: the mean of each one's per-query z-scores over the first
    stage's top depth; below it the first-stage order stays."""
    from pyserini_qpeft.search.fusion import average_reranks

    other = _run({"q": {"a": 100.0, "b": 0.0, "c": 50.0, "d": 7.0, "e": 9.0}})
    avg = average_reranks(FIRST, [LM, other], depth=3)
    # LM over a, b, c: -3.0, -1.1, -1.0 -> z = (-1.4056, 0.5623, 0.8433); other: 100, 0, 50 -> z = (1.2247, -1.2247, 0)
    lm_z = {"a": -3.0, "b": -1.1, "c": -1.0}
    mean = sum(lm_z.values()) / 3
    std = (sum((v - mean) ** 2 for v in lm_z.values()) / 3) ** 0.5
    expected = {d: ((lm_z[d] - mean) / std + z) / 2 for d, z in (("a", 1.5 ** 0.5), ("b", -(1.5 ** 0.5)), ("c", 0.0))}
    got = {h.docid: h.score for h in avg["q"][:3]}
    assert got == pytest.approx(expected)
    assert _order(avg) == ["c", "a", "b", "d", "e"]  # c: 0.42, a: -0.09, b: -0.33; d, e below in BM25 order
    # one rerank: its own order; the mean of a rerank with itself: the same scores
    assert _order(average_reranks(FIRST, [LM], depth=3)) == _order(interpolate_rerank(FIRST, LM, 0.0, depth=3))
    assert average_reranks(FIRST, [LM, LM], depth=3).to_dict() == average_reranks(FIRST, [LM], depth=3).to_dict()
    with pytest.raises(ValueError, match="no reranker score"):
        average_reranks(FIRST, [LM, _run({"q": {"a": 1.0, "b": 0.5}})], depth=3)
    with pytest.raises(ValueError, match="at least one"):
        average_reranks(FIRST, [], depth=3)


def test_fuse_and_select_interpolation_average_several_reranks(tmp_path):
    """`fuse --method rerank-interpolation` with several reranks interpolates their average; `select-interpolation`
    with --reranked repeated selects the weight for that average, and names a rerank that misses a score."""
    import json

    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.search.fusion import average_reranks
    from pyserini_qpeft.types import read_run

    other = _run({"q": {"a": 100.0, "b": 0.0, "c": 50.0, "d": 7.0, "e": 9.0}})
    for name, run in (("first", FIRST), ("lm", LM), ("other", other)):
        run.write(tmp_path / f"{name}.trec")
    (tmp_path / "qrels.tsv").write_text("q 0 b 1\n")
    runs = ["--run", str(tmp_path / "first.trec"), "--run", str(tmp_path / "lm.trec"), "--run",
            str(tmp_path / "other.trec")]
    runner = CliRunner()
    out = runner.invoke(cli, ["fuse", "--method", "rerank-interpolation", *runs, "--depth", "3", "--alpha", "0.3",
                              "--output", str(tmp_path / "fused.trec")])
    assert out.exit_code == 0, out.output
    expected = interpolate_rerank(FIRST, average_reranks(FIRST, [LM, other], depth=3), 0.3, depth=3)
    assert [(h.docid, round(h.score, 4)) for h in read_run(tmp_path / "fused.trec")["q"]] == \
        [(h.docid, round(h.score, 4)) for h in expected["q"]]

    out = runner.invoke(cli, ["select-interpolation", "--first-stage", str(tmp_path / "first.trec"), "--reranked",
                              str(tmp_path / "lm.trec"), "--reranked", str(tmp_path / "other.trec"), "--qrels",
                              str(tmp_path / "qrels.tsv"), "--depth", "3", "--output", str(tmp_path / "alpha.json")])
    assert out.exit_code == 0, out.output
    record = json.loads((tmp_path / "alpha.json").read_text())
    alpha, table = select_alpha(FIRST, average_reranks(FIRST, [LM, other], depth=3), QRELS, depth=3)
    assert record["alpha"] == alpha and record["table"] == {f"{a:.2f}": round(v, 6) for a, v in table.items()}
    assert record["reranked"] == [str(tmp_path / "lm.trec"), str(tmp_path / "other.trec")]

    _run({"q": {"a": 1.0, "b": 0.5}}).write(tmp_path / "short.trec")
    for command in (["fuse", "--method", "rerank-interpolation", *runs, "--run", str(tmp_path / "short.trec"),
                     "--depth", "3", "--output", str(tmp_path / "f2.trec")],
                    ["select-interpolation", "--first-stage", str(tmp_path / "first.trec"), "--reranked",
                     str(tmp_path / "lm.trec"), "--reranked", str(tmp_path / "short.trec"), "--qrels",
                     str(tmp_path / "qrels.tsv"), "--depth", "3", "--output", str(tmp_path / "a2.json")]):
        bad = runner.invoke(cli, command)
        assert bad.exit_code == 3 and "short.trec" in bad.output and "no reranker score" in bad.output, bad.output
    assert not (tmp_path / "f2.trec").exists() and not (tmp_path / "a2.json").exists()
    refused = runner.invoke(cli, ["fuse", "--method", "interpolation", *runs, "--output", str(tmp_path / "f3.trec")])
    assert refused.exit_code == 2 and "exactly two" in refused.output
