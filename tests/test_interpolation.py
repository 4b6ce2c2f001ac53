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
