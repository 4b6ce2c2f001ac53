"""Training: examples from qrels + runs (skips, never test), dev carving, loss, the loop (frozen LM, loss goes
down, resume), and the `train qpeft` / `explain` commands end to end on the tiny model."""
from __future__ import annotations

import json
import random

import pytest
import torch
from click.testing import CliRunner

from conftest import TOY_CORPUS, TOY_QUERIES
from pyserini_qpeft.data import Document
from pyserini_qpeft.errors import InputError
from pyserini_qpeft.qpeft.module import QPeftConfig, build_module
from pyserini_qpeft.lm.scoring import ScorerConfig
from pyserini_qpeft.training.data import TrainingExample, build_examples, check_split, dev_count, split_dev
from pyserini_qpeft.qpeft.loss import qpeft_loss
from pyserini_qpeft.qpeft.step import QPeftTrainConfig, sample_step, train_qpeft
from pyserini_qpeft.training.state import read_trainer_state
from pyserini_qpeft.types import Hit, Run

CORPUS = {d["_id"]: Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS}
QUERIES = {q["_id"]: q["text"] for q in TOY_QUERIES}
DOCIDS = list(CORPUS)


def full_run() -> Run:
    return Run({q: [Hit(d, 10.0 - i) for i, d in enumerate(DOCIDS[k:] + DOCIDS[:k])]
                for k, q in enumerate(QUERIES)}, tag="bm25")


def toy_examples() -> list[TrainingExample]:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d4": 1}}
    return build_examples(QUERIES, qrels, full_run(), CORPUS, negative_depth=5, candidate_depth=6)[0]


# -------------------------------------------------------------------------------------------------- data


def test_build_examples_skips_and_counts():
    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d5": 0}, "q3": {"d3": 2}, "q4": {"d4": 1}}
    run = Run({"q1": [Hit("d1", 3.0), Hit("d2", 2.0), Hit("d3", 1.0)], "q2": [Hit("d1", 1.0)],
               "q4": [Hit("d4", 1.0)]})  # q3 not in the run; q4's only hit is relevant; q2 has no positive
    examples, stats = build_examples(QUERIES, qrels, run, CORPUS)
    assert [e.qid for e in examples] == ["q1"]
    assert examples[0].positives == ("d1",)
    assert examples[0].negatives == ("d2", "d3")  # judged non-relevant (rel 0) counts as negative, rank order
    assert (stats.no_positive, stats.not_in_run, stats.no_negative, stats.kept) == (1, 1, 1, 1)
    assert set(stats.skipped_qids) == {"q2", "q3", "q4"}
    assert "not in the corpus" not in stats.summary()
    _, stats = build_examples(QUERIES, {**qrels, "q1": {"d1": 1, "gone": 1, "d2": 0}}, run, CORPUS)
    assert stats.positives_missing_from_corpus == 1 and stats.summary().endswith(
        "; 1 judged positives are not in the corpus and were left out")
    with pytest.raises(InputError, match="no usable"):
        build_examples(QUERIES, {"q2": {"d5": 0}}, run)


def test_run_over_other_corpus_is_an_error():
    run = Run({"q1": [Hit("zzz", 2.0), Hit("d1", 1.0)]})
    with pytest.raises(InputError, match="zzz"):
        build_examples(QUERIES, {"q1": {"d1": 1}}, run, CORPUS)
    deeper = Run({"q1": [Hit("d1", 3.0), Hit("d2", 2.0), Hit("ghost", 1.0)]})  # within the negative depth
    with pytest.raises(InputError, match="run docid ghost \\(query q1\\) is not in the corpus"):
        build_examples(QUERIES, {"q1": {"d1": 1}}, deeper, CORPUS, negative_depth=3)
    # below the depth: not checked, and never a negative (the judged positive above it leaves room for it)
    examples, _ = build_examples(QUERIES, {"q1": {"d1": 1}}, deeper, CORPUS, negative_depth=2)
    assert examples[0].negatives == ("d2",)


def test_test_split_refused_and_cli_never_reads_test(tmp_path, toy_beir):
    with pytest.raises(InputError, match="test"):
        check_split("test")
    check_split("train")
    from pyserini_qpeft.cli.train import train as train_group

    run = tmp_path / "run.trec"
    full_run().write(run)
    result = CliRunner().invoke(train_group, ["qpeft", "--dataset", str(toy_beir), "--split", "test", "--negatives",
                                              str(run), "--output", str(tmp_path / "out")])
    assert isinstance(result.exception, InputError) and result.exception.exit_code == 3
    assert not (tmp_path / "out").exists()


def test_split_dev_disjoint_seeded():
    examples = [TrainingExample(f"q{i}", "t", ("d",), ("n",)) for i in range(50)]
    train_a, dev_a = split_dev(examples, 0.1, seed=3)
    train_b, dev_b = split_dev(examples, 0.1, seed=3)
    _, dev_c = split_dev(examples, 0.1, seed=4)
    assert len(dev_a) == 5 and len(train_a) == 45
    assert {e.qid for e in train_a}.isdisjoint({e.qid for e in dev_a})
    assert dev_a == dev_b and dev_a != dev_c
    assert len(split_dev(examples, 7, seed=0)[1]) == 7
    # the carve itself is pinned: a recorded run's dev queries are recomputed by --resume and `dev-split`
    ten = examples[:10]
    assert [e.qid for e in split_dev(ten, 3, seed=13)[1]] == ["q2", "q4", "q9"]
    assert [e.qid for e in split_dev(ten, 0.25, seed=0)[1]] == ["q6", "q9"]
    assert dev_count(10, 0.01) == 1  # a fraction holds out at least one query
    assert split_dev(examples, 0.0, seed=0) == (examples, [])  # no dev set (LMORT --dev-fraction 0)
    with pytest.raises(InputError, match="no training query"):  # a user mistake: exit code 3, not a traceback
        split_dev(examples, 50, seed=0)
    with pytest.raises(ValueError):
        split_dev(examples, 1.5, seed=0)


def test_unseen_dev_carve_holds_out_only_queries_whose_positives_no_training_query_shares():
    # q0..q19 share documents in pairs (q0 and q1 both judge s0 relevant ...); q20..q39 own theirs
    shared = [TrainingExample(f"q{i}", "t", (f"s{i // 2}",), ("n",)) for i in range(20)]
    own = [TrainingExample(f"q{i}", "t", (f"o{i}", f"s{i - 20}" if i == 20 else f"o{i}b"), ("n",))
           for i in range(20, 40)]
    examples = shared + own  # q20 also judges s0 relevant: not unseen (nor are q0, q1)
    train, dev = split_dev(examples, 8, seed=1, carve="unseen")
    assert len(dev) == 8 and {e.qid for e in train}.isdisjoint({e.qid for e in dev})
    seen_in_train = {d for e in train for d in e.positives}
    assert all(seen_in_train.isdisjoint(e.positives) for e in dev)
    assert {e.qid for e in dev} <= {f"q{i}" for i in range(21, 40)}
    assert split_dev(examples, 8, seed=1, carve="unseen") == (train, dev)  # seeded
    # the random carve is the recorded one: the same positions as before the option existed
    assert split_dev(examples, 8, seed=1) == split_dev(examples, 8, seed=1, carve="random")
    assert [e.qid for e in split_dev(examples, 8, seed=1)[1]] == [
        examples[i].qid for i in sorted(random.Random(1).sample(range(40), 8))]
    with pytest.raises(InputError, match="only 19 of the 40"):
        split_dev(examples, 20, seed=0, carve="unseen")
    with pytest.raises(ValueError, match="carve"):
        split_dev(examples, 8, seed=0, carve="disjoint")
    with pytest.raises(ValueError, match="dev_carve"):
        QPeftTrainConfig(dev_carve="disjoint")


def test_negative_policies_and_optional_negatives():
    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d2": 1}}
    run = Run({"q1": [Hit("d2", 3.0), Hit("d3", 2.0), Hit("d1", 1.5), Hit("d4", 1.0)]})  # q2 not in the run
    nonrel, _ = build_examples(QUERIES, qrels, run, CORPUS)
    assert [e.qid for e in nonrel] == ["q1"] and nonrel[0].negatives == ("d2", "d3", "d4")
    unjudged, stats = build_examples(QUERIES, qrels, run, CORPUS, negative_policy="unjudged", require_negative=False,
                                     negative_depth=1)
    assert [(e.qid, e.negatives) for e in unjudged] == [("q1", ("d3",)), ("q2", ())]  # depth counts after filtering
    assert stats.not_in_run == 1 and stats.kept == 2
    none, _ = build_examples(QUERIES, qrels, None, CORPUS, require_negative=False)
    assert all(e.negatives == () for e in none)
    with pytest.raises(InputError, match="negatives"):
        build_examples(QUERIES, qrels, None, CORPUS)
    with pytest.raises(ValueError, match="negative_policy"):
        build_examples(QUERIES, qrels, run, CORPUS, negative_policy="bm25")


def test_sample_step_in_batch_negatives_skip_relevant():
    batch = [TrainingExample("a", "qa", ("d1",), ("n1", "n2")), TrainingExample("b", "qb", ("d2",), ("n3",)),
             TrainingExample("c", "qc", ("d3", "d1"), ("n4",))]
    rows, pairs = sample_step(batch, random.Random(0), negatives_per_query=1, in_batch=True, hard_pool=1)
    assert all((p.query_index, p.positive) in rows and (p.query_index, p.negative) in rows for p in pairs)
    hard = [(p.query_index, p.negative) for p in pairs if p.kind == "hard"]
    assert hard == [(0, "n1"), (1, "n3"), (2, "n4")]
    in_batch = {(p.query_index, p.negative) for p in pairs if p.kind == "in_batch"}
    assert (2, "d1") not in in_batch  # d1 is relevant to query c
    assert {(0, "d2"), (1, "d1")} <= in_batch
    for p in pairs:
        if p.kind == "in_batch":
            assert p.negative not in batch[p.query_index].positives
            assert p.negative in {pp.positive for pp in pairs if pp.query_index != p.query_index}


def test_loss_formula():
    pos = torch.tensor([1.0, 2.0])
    neg = torch.tensor([3.0, 1.5])
    loss, stats = qpeft_loss(pos, neg, margin=1.0)
    # pair 1: relu(1 - 3 + 1) = 0, + 1; pair 2: relu(2 - 1.5 + 1) = 1.5, + 2
    assert loss.item() == pytest.approx((1.0 + 3.5) / 2)
    assert stats["pair_acc"] == 0.5 and stats["hinge"] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        qpeft_loss(pos, neg[:1], 0.1)


def test_hinge_on_fused_scores_drops_pairs_the_first_stage_already_separates():
    pos, neg = torch.tensor([2.0, 2.0]), torch.tensor([2.5, 1.0])
    # pair 1: the first stage prefers the positive by 1 nat: relu(2 - 2.5 + 0.2 - 1) = 0; pair 2: 2 - 1 + 0.2 = 1.2
    loss, stats = qpeft_loss(pos, neg, margin=0.2, pointwise_weight=0.1, prior=torch.tensor([1.0, 0.0]))
    assert stats["hinge"] == pytest.approx(0.6) and loss.item() == pytest.approx(0.6 + 0.1 * 2.0)
    assert stats["pair_acc"] == 0.5 and stats["nll_pos"] == pytest.approx(2.0)  # the LM's, not the fused scores'
    assert qpeft_loss(pos, neg, 0.2, 0.1, prior=torch.zeros(2))[0].item() == qpeft_loss(pos, neg, 0.2, 0.1)[0].item()
    with pytest.raises(ValueError):
        qpeft_loss(pos, neg, 0.2, prior=torch.zeros(3))


def test_first_stage_zscores_standardise_over_the_rerank_depth_and_floor_unretrieved_documents():
    from pyserini_qpeft.qpeft.first_stage import first_stage_zscores
    from pyserini_qpeft.qpeft.step import QPeftTrainConfig
    from pyserini_qpeft.types import Hit, Run

    run = Run({"q": [Hit("a", 10.0), Hit("b", 8.0), Hit("c", 6.0), Hit("d", 1.0)],
               "flat": [Hit("x", 3.0), Hit("y", 3.0)]})
    scores = first_stage_zscores(run, depth=3)
    std = (8 / 3) ** 0.5  # the top 3: mean 8, population std
    q = scores["q"]
    assert (q("a"), q("b"), q("c")) == pytest.approx((2 / std, 0.0, -2 / std))
    assert q("d") == pytest.approx(-7 / std)  # below the depth: same standardisation
    assert q("never-retrieved") == q("d")  # at most the last hit's score
    assert scores["flat"]("x") == scores["flat"]("z") == 0.0
    with pytest.raises(ValueError):
        first_stage_zscores(run, depth=0)
    with pytest.raises(InputError, match="hinge"):
        QPeftTrainConfig.build(first_stage_weight=0.3, loss="listwise")


def test_listwise_loss_is_softmax_cross_entropy_over_each_querys_negatives():
    from pyserini_qpeft.qpeft.loss import qpeft_listwise_loss

    nll_pos = torch.tensor([1.0, 2.0, 0.5], requires_grad=True)
    nll_neg = torch.tensor([[3.0, 1.5, 9.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    loss, stats = qpeft_listwise_loss(nll_pos, nll_neg, mask, temperature=0.5, pointwise_weight=0.1)
    ce = [torch.nn.functional.cross_entropy(torch.tensor([[-1.0, -3.0, -1.5]]) / 0.5, torch.tensor([0])),
          torch.nn.functional.cross_entropy(torch.tensor([[-2.0, -1.0]]) / 0.5, torch.tensor([0])),
          torch.tensor(0.0)]  # a query without negatives: its positive alone, CE 0
    want = sum(c + 0.1 * p for c, p in zip(ce, [1.0, 2.0, 0.5])) / 3
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert stats["listwise"] == pytest.approx(sum(c.item() for c in ce) / 3, rel=1e-6)
    assert stats["pair_acc"] == pytest.approx(2 / 3)  # real pairs only: 1 < 3 and 1 < 1.5 win, 2 < 1 does not
    loss.backward()
    assert nll_neg.grad[mask].abs().min() > 0 and not nll_neg.grad[~mask].any()  # padding gets no gradient
    with pytest.raises(ValueError):
        qpeft_listwise_loss(nll_pos, nll_neg[:2], mask[:2])
    with pytest.raises(ValueError):
        qpeft_listwise_loss(nll_pos, nll_neg, mask, temperature=0.0)
    with pytest.raises(ValueError, match="loss"):
        QPeftTrainConfig(loss="softmax")


def test_listwise_view_groups_each_querys_negatives_of_the_step():
    from pyserini_qpeft.qpeft.step import Pair, _listwise_view

    rows = [(0, "p0"), (0, "h0"), (0, "p1"), (1, "p1"), (1, "h1")]
    where = {r: k for k, r in enumerate(rows)}
    pairs = [Pair(0, "p0", "h0", "hard"), Pair(0, "p0", "p1", "in_batch"), Pair(1, "p1", "h1", "hard")]
    nll = torch.tensor([10.0, 11.0, 12.0, 13.0, 14.0])
    pos, neg, mask = _listwise_view(nll, pairs, where)
    assert pos.tolist() == [10.0, 13.0]
    assert mask.tolist() == [[True, True], [True, False]]
    assert neg[mask].tolist() == [11.0, 12.0, 14.0]


def reference_rank_metrics(scores, relevant, k=10):
    """The loop's own metric code before dev metrics moved to evaluation.py (ties by docid ascending)."""
    import math

    ranked = sorted(scores, key=lambda d: (-scores[d], d))[:k]
    mrr = next((1.0 / (r + 1) for r, d in enumerate(ranked) if d in relevant), 0.0)
    dcg = sum(1.0 / math.log2(r + 2) for r, d in enumerate(ranked) if d in relevant)
    ideal = sum(1.0 / math.log2(r + 2) for r in range(min(k, len(relevant))))
    return {f"mrr@{k}": mrr, f"ndcg@{k}": dcg / ideal if ideal else 0.0}


def test_dev_metrics_are_evaluation_metrics():
    from pyserini_qpeft.evaluation import evaluate
    from pyserini_qpeft.training.trainer import dev_metrics

    dev = [TrainingExample("a", "qa", ("c",), ()), TrainingExample("b", "qb", ("x", "y"), ())]
    run = Run({"a": [Hit("a1", 3.0), Hit("b1", 2.5), Hit("c", 2.0), Hit("d", 1.0)],
               "b": [Hit("y", 0.5), Hit("z", 0.4), Hit("x", 0.1)]})
    got = dev_metrics(run, dev, ["ndcg@10", "mrr@10"])
    assert got == {**evaluate(run, {"a": {"c": 1}, "b": {"x": 1, "y": 1}}, ["ndcg@10", "mrr@10"]), "queries": 2}
    for name in ("ndcg@10", "mrr@10"):  # without ties: the numbers the loop computed before the move
        ref = [reference_rank_metrics({h.docid: h.score for h in run[e.qid]}, set(e.positives))[name] for e in dev]
        assert got[name] == sum(ref) / 2
    # ties are ranked as trec_eval ranks them (docid descending), as for every evaluated run of the package
    tied = Run({"a": [Hit("b", 2.0), Hit("c", 2.0), Hit("a", 3.0)]})
    assert dev_metrics(tied, dev[:1], ["mrr@10"])["mrr@10"] == pytest.approx(1 / 2)



def test_dev_metrics_keep_graded_judgments():
    """Dev selection judges graded qrels as `evaluate` judges a test run (it judged every positive at 1): a run that
    ranks the grade-2 document first beats one that ranks the grade-1 document first."""
    from pyserini_qpeft.evaluation import evaluate
    from pyserini_qpeft.training.data import dev_qrels
    from pyserini_qpeft.training.trainer import dev_metrics

    qrels = {"a": {"d1": 1, "d2": 2, "n": 0}}
    run = Run({"a": [Hit("n", 3.0), Hit("d1", 2.0), Hit("d2", 1.0)]})
    examples, _ = build_examples({"a": "qa"}, qrels, run, negative_depth=5, candidate_depth=5)
    assert examples[0].positives == ("d1", "d2") and examples[0].grades == (1, 2)
    assert dev_qrels(examples) == {"a": {"d1": 1, "d2": 2}}
    swapped = Run({"a": [Hit("n", 3.0), Hit("d2", 2.0), Hit("d1", 1.0)]})
    graded = {name: dev_metrics(r, examples, ["ndcg@10"])["ndcg@10"] for name, r in (("d1", run), ("d2", swapped))}
    assert graded["d2"] > graded["d1"]
    assert graded["d1"] == evaluate(run, qrels, ["ndcg@10"])["ndcg@10"]
    # an example built by hand without grades is judged at 1, as before
    assert dev_qrels([TrainingExample("b", "qb", ("x", "y"), ())]) == {"b": {"x": 1, "y": 1}}

def test_dev_pool_run_ranks_only_the_first_stage_candidates_and_its_loss_skips_unretrieved_positives():
    """--dev-pool run: each dev query's run top-N only (a positive the first stage missed is not added, as in a test
    rerank); the dev loss then counts the queries with a retrieved positive. The recorded pool is unchanged."""
    from pyserini_qpeft.qpeft.loss import qpeft_dev_loss
    from pyserini_qpeft.qpeft.step import dev_candidates

    ex = TrainingExample("a", "qa", ("p",), ("n1", "n2"), candidates=("n1", "x", "n2"))
    assert dev_candidates(ex, 2) == ["p", "n1", "x"]
    assert dev_candidates(ex, 2, "run") == ["n1", "x"]
    missed = TrainingExample("b", "qb", ("m", "p2"), ("n3",), candidates=("p2", "n3"))
    run = Run({"a": [Hit("n1", -2.0), Hit("x", -3.0)], "b": [Hit("p2", -1.0), Hit("n3", -1.5)]})
    # query a has no scored positive (skipped); query b: its first *scored* positive p2 vs n3
    assert qpeft_dev_loss(run, [ex, missed], margin=1.0, pointwise_weight=0.5) == pytest.approx(
        max(0.0, 1.0 - 1.5 + 1.0) + 0.5 * 1.0)
    assert qpeft_dev_loss(Run({"a": [Hit("n1", -2.0)]}), [ex], margin=1.0) == 0.0
    # listwise: the scored positive against every scored run negative (query b: p2 vs n3)
    import math

    assert qpeft_dev_loss(run, [ex, missed], margin=1.0, pointwise_weight=0.5, loss="listwise",
                          temperature=0.5) == pytest.approx(math.log(1 + math.exp((-1.5 + 1.0) / 0.5)) + 0.5 * 1.0)
    with pytest.raises(ValueError, match="dev_pool"):
        QPeftTrainConfig(dev_pool="all")
    # hinge: against the top-ranked scored run negative (the hard one), not the others (mutant audit U: T11)
    hard = TrainingExample("c", "qc", ("p",), ("n1", "n2", "n3"), candidates=("n1", "n2", "n3"))
    scored = Run({"c": [Hit("p", -1.0), Hit("n2", -1.2), Hit("n3", -3.0)]})  # n1 unscored: n2 is the hard one
    assert qpeft_dev_loss(scored, [hard], margin=0.5) == pytest.approx(max(0.0, 1.0 - 1.2 + 0.5) + 1.0)


# -------------------------------------------------------------------------------------------------- loop


def run_train(lm, variant, out, epochs, resume=False, seed=0, lr=2e-2, **kw):
    examples = toy_examples()
    config = QPeftConfig(variant=variant, top_k=4, num_virtual_tokens=4, seed=seed)
    module = build_module(lm, config)
    tcfg = QPeftTrainConfig(**{"epochs": epochs, "batch_size": 3, "lr": lr, "margin": 0.5, "hard_pool": 1,
                               "warmup_steps": 0, "seed": seed, "dev_depth": 6, "eval_at_start": True, **kw})
    result = train_qpeft(lm, module, config, ScorerConfig(max_passage_tokens=32), examples[:3], examples[3:],
                         CORPUS, tcfg, out, resume=resume, progress=False)
    return module, result


@pytest.mark.parametrize("variant", ["retr", "attn", "prompt"])
def test_training_lowers_loss_and_keeps_lm_frozen(tiny_lm, tmp_path, variant):
    before = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    module, result = run_train(tiny_lm, variant, tmp_path / "out", epochs=20)
    losses = [h["train"]["loss"] for h in result.history]
    assert len(losses) == 20
    # same batch every epoch (hard_pool=1, no dropout): a deterministic objective that must go down (the tiny
    # random LM reacts weakly to hints, hence the small margin)
    assert losses[-1] < losses[0] - 0.004, losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 15, losses
    after = tiny_lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in tiny_lm.model.parameters())
    state = read_trainer_state(tmp_path / "out")
    assert state["completed_epochs"] == 20 and state["dev_baseline"]["queries"] == 1
    assert (tmp_path / "out" / "best" / "qpeft_config.json").is_file()
    assert not (tmp_path / "out" / "best" / "optimizer.safetensors").exists()
    best = json.loads((tmp_path / "out" / "best" / "qpeft_config.json").read_text())
    assert best["training"]["epoch"] == result.best_epoch
    assert best["training"]["dev_qids"] == ["q4"]


def test_each_epoch_seeds_torch_from_the_training_seed(tiny_lm, tmp_path, monkeypatch):
    """Dropout masks follow --seed: epoch e seeds torch with seed * 1000 + e, as the trainer documents (mutant audit
    U: T13 seeded it with e alone, the same masks for every seed)."""
    seeds = []
    real = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda value: seeds.append(value) or real(value))
    run_train(tiny_lm, "attn", tmp_path / "out", epochs=2, seed=3)
    assert 3001 in seeds and 3002 in seeds


def test_resume_matches_uninterrupted(tiny_lm, tmp_path):
    """Resuming after epoch 2 gives the uninterrupted run bit for bit: weights, losses, dev numbers."""
    kw = {"max_train_queries": 2, "warmup_steps": 3}  # batches differ per epoch; the warmup spans the interruption
    straight, full = run_train(tiny_lm, "attn", tmp_path / "a", epochs=4, lr=5e-2, **kw)
    run_train(tiny_lm, "attn", tmp_path / "b", epochs=2, lr=5e-2, **kw)
    with pytest.raises(InputError, match="resume"):
        run_train(tiny_lm, "attn", tmp_path / "b", epochs=4, lr=5e-2, **kw)
    resumed, result = run_train(tiny_lm, "attn", tmp_path / "b", epochs=4, resume=True, lr=5e-2, **kw)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    for a, b in zip(full.history, result.history):
        assert (a["train"], a["dev"], a["global_step"]) == (b["train"], b["dev"], b["global_step"])
    assert len({h["train"]["loss"] for h in full.history}) == 4  # the epochs really differ
    from safetensors.torch import load_file

    for name in ("optimizer.safetensors", "qpeft_model.safetensors"):
        a, b = load_file(str(tmp_path / "a" / "epoch-4" / name)), load_file(str(tmp_path / "b" / "epoch-4" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match="other"):  # other module settings than the saved run
        examples = toy_examples()
        config = QPeftConfig(variant="attn", top_k=4, num_virtual_tokens=4, num_heads=1, seed=0)
        train_qpeft(tiny_lm, build_module(tiny_lm, config), config, ScorerConfig(max_passage_tokens=32),
                    examples[:3], examples[3:], CORPUS, QPeftTrainConfig(epochs=5, dev_depth=6), tmp_path / "b",
                    resume=True, progress=False)


def test_resume_refuses_other_training_settings_or_dev_split(tiny_lm, tmp_path):
    """--resume may train longer (epochs) but not with another lr, loss or dev split than the interrupted run: that
    would silently mix two runs in one checkpoint."""
    run_train(tiny_lm, "attn", tmp_path / "r", epochs=1, lr=5e-2)
    with pytest.raises(InputError, match=r"other training settings.*--lr 0\.05 -> 0\.01") as err:
        run_train(tiny_lm, "attn", tmp_path / "r", epochs=2, resume=True, lr=1e-2)
    assert err.value.path == str(tmp_path / "r" / "trainer_state.json")  # names the recorded run
    # a state written before the trainer kept the record: the last epoch's checkpoint config is compared instead
    state_file = tmp_path / "r" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({k: v for k, v in state.items() if k not in ("train_config", "dev_qids")}))
    with pytest.raises(InputError, match=r"--lr 0\.05 -> 0\.01") as err:
        run_train(tiny_lm, "attn", tmp_path / "r", epochs=2, resume=True, lr=1e-2)
    assert err.value.path == str(tmp_path / "r" / "epoch-1" / "qpeft_config.json")
    state_file.write_text(json.dumps(state))
    with pytest.raises(InputError, match="other training settings.*--margin"):
        run_train(tiny_lm, "attn", tmp_path / "r", epochs=2, resume=True, lr=5e-2, margin=0.9)
    examples = toy_examples()
    config = QPeftConfig(variant="attn", top_k=4, num_virtual_tokens=4, seed=0)
    tcfg = QPeftTrainConfig(epochs=2, batch_size=3, lr=5e-2, margin=0.5, hard_pool=1, warmup_steps=0, seed=0,
                            dev_depth=6, eval_at_start=True)
    with pytest.raises(InputError, match="another dev split"):  # same settings, another held-out query
        train_qpeft(tiny_lm, build_module(tiny_lm, config), config, ScorerConfig(max_passage_tokens=32),
                    examples[1:], examples[:1], CORPUS, tcfg, tmp_path / "r", resume=True, progress=False)
    # the corpus's texts changed since (re-downloaded, repaired): the resumed epochs would train on other text
    examples = toy_examples()
    edited = {**CORPUS, "d1": Document("d1", CORPUS["d1"].title, CORPUS["d1"].text + " (revised)")}
    with pytest.raises(InputError, match="other document texts"):
        train_qpeft(tiny_lm, build_module(tiny_lm, config), config, ScorerConfig(max_passage_tokens=32),
                    examples[:3], examples[3:], edited, tcfg, tmp_path / "r", resume=True, progress=False)
    _, result = run_train(tiny_lm, "attn", tmp_path / "r", epochs=2, resume=True, lr=5e-2)  # longer: allowed
    assert [h["epoch"] for h in result.history] == [1, 2]


@pytest.mark.parametrize("pool,depth", [("positives+run", 6), ("run", 2)])
def test_dev_metrics_of_the_loop_equal_evaluate_on_the_dev_run(tiny_lm, tmp_path, pool, depth):
    """The recorded dev nDCG@10 / MRR@10 / loss are evaluation.evaluate (and the dev-loss formula) on a rerank of the
    dev candidates (those of --dev-pool) by the saved best module."""
    from pyserini_qpeft.evaluation import evaluate
    from pyserini_qpeft.qpeft.checkpoint import load_checkpoint
    from pyserini_qpeft.qpeft.step import QPeftStep, dev_candidates

    examples = toy_examples()
    train_ex, dev = examples[:2], examples[2:]
    config = QPeftConfig(variant="retr", top_k=4, seed=0)
    tcfg = QPeftTrainConfig(epochs=2, batch_size=2, lr=2e-2, margin=0.5, dev_depth=depth, dev_pool=pool,
                            eval_at_start=False)
    result = train_qpeft(tiny_lm, build_module(tiny_lm, config), config, ScorerConfig(max_passage_tokens=32),
                         train_ex, dev, CORPUS, tcfg, tmp_path / "out", progress=False)
    module, _, scfg, meta = load_checkpoint(tmp_path / "out", tiny_lm)  # the output folder resolves to best/
    step = QPeftStep(tiny_lm, module, config, scfg, CORPUS, tcfg)
    run = step.dev_run(dev)
    assert all(sorted(h.docid for h in run[e.qid]) == sorted(dev_candidates(e, depth, pool)) for e in dev)
    assert all(len(run[e.qid]) == depth for e in dev)
    want = evaluate(run, {e.qid: {d: 1 for d in e.positives} for e in dev}, ["ndcg@10", "mrr@10"])
    best = next(h for h in result.history if h["epoch"] == result.best_epoch)
    assert {k: best["dev"][k] for k in want} == want
    assert best["dev"]["loss"] == step.dev_extra(dev, run)["loss"]
    assert meta["dev_metrics"] == {k: best["dev"][k] for k in ("ndcg@10", "mrr@10", "loss")}
    assert meta["dev_baseline_upr"] == {}


# -------------------------------------------------------------------------------------------------- CLI


def test_cli_train_then_explain_and_rerank(tiny_lm_path, tmp_path, toy_beir):
    from pyserini_qpeft.cli.explain import explain
    from pyserini_qpeft.cli.train import train as train_group

    run = tmp_path / "run.trec"
    full_run().write(run)
    out = tmp_path / "ckpt"
    args = ["qpeft", "--variant", "retr", "--dataset", str(toy_beir), "--negatives", str(run), "--output", str(out),
            "--epochs", "2", "--batch-size", "2", "--dev-size", "1", "--top-k", "3", "--model", str(tiny_lm_path),
            "--device", "cpu", "--dtype", "fp32", "--quiet"]
    result = CliRunner().invoke(train_group, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["best"] == str(out / "best") and "ndcg@10" in summary["dev"]
    meta = json.loads((out / "best" / "qpeft_config.json").read_text())
    assert set(meta["training"]["dev_qids"]) | {"q1", "q2"} == {"q1", "q2"}  # only train-split queries
    # the first-stage weight for --interpolate auto, selected on the same dev queries (never test)
    assert meta["interpolation"]["alpha"] == summary["interpolation_alpha"] and 0 <= summary["interpolation_alpha"] <= 1
    assert meta["interpolation"]["selection"]["dev_queries"] == 1 and "dev queries" in meta["interpolation"]["source"]
    assert meta["training"]["train_queries"] + meta["training"]["dev_queries"] == 2
    # a dev depth under 10: the table scores what `rerank --rerank-depth 2 --interpolate` ranks, the hits below
    # the depth included (cut to the depth, "first stage alone" was 0 here: q1's relevant d1 is BM25's 3rd hit)
    from pyserini_qpeft.evaluation import evaluate
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
    from pyserini_qpeft.qpeft.interpolation import select_checkpoint_interpolation

    first = Run({"q1": [Hit("d2", 3.0), Hit("d3", 2.0), Hit("d1", 1.0)]}, tag="bm25")
    dev = [TrainingExample("q1", QUERIES["q1"], ("d1",), ("d2", "d3"))]
    record = select_checkpoint_interpolation(FrozenLM.load(LMConfig(model=str(tiny_lm_path), device="cpu",
                                                                    dtype="fp32")),
                                             out / "best", "retr", dev, first, {"q1": {"d1": 1}}, CORPUS, depth=2)
    alone = evaluate(first, {"q1": {"d1": 1}}, ("ndcg@10",))["ndcg@10"]
    assert record["selection"]["table"]["1.00"] == pytest.approx(alone, abs=1e-4) and alone > 0.4

    result = CliRunner().invoke(explain, ["--reranker-checkpoint", str(out), "--query", "what causes lung cancer",
                                          "--dataset", str(toy_beir), "--docid", "d1", "--model", str(tiny_lm_path),
                                          "--device", "cpu", "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    assert "selected passage tokens" in result.output and "lung" in result.output
    # the budgets `rerank` would score with: --max-passage-tokens as rerank takes it (the module reads 8 tokens)
    long_doc = " ".join(["lung cancer smoking risk"] * 20)
    result = CliRunner().invoke(explain, ["--reranker-checkpoint", str(out), "--query", "what causes lung cancer",
                                          "--doc-text", long_doc, "--model", str(tiny_lm_path), "--device", "cpu",
                                          "--dtype", "fp32", "--max-passage-tokens", "8", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["lm_passage_tokens"] == 8
    result = CliRunner().invoke(explain, ["--reranker-checkpoint", str(out), "--query", "x", "--doc-text", "y",
                                          "--docid", "d1", "--model", str(tiny_lm_path)])
    assert result.exit_code == 2

    from pyserini_qpeft.cli.main import cli

    reranked = tmp_path / "auto.trec"
    result = CliRunner().invoke(cli, ["rerank", "--run", str(run), "--topics", str(toy_beir / "queries.jsonl"),
                                      "--corpus", str(toy_beir), "--reranker", "qpeft-retr", "--reranker-checkpoint",
                                      str(out), "--interpolate", "auto", "--rerank-depth", "3", "--output",
                                      str(reranked), "--model", str(tiny_lm_path), "--device", "cpu", "--dtype",
                                      "fp32", "-q"])
    assert result.exit_code == 0, result.output
    assert reranked.read_text().split()[5] == f"qpeft-retr+interp{summary['interpolation_alpha']:g}"


def test_cli_train_without_selecting_an_interpolation_weight(tiny_lm_path, tmp_path, toy_beir):
    """--no-select-interpolation skips the dev rerank after training (repro selects its own weights): the same
    module, no carried weight, and `rerank --interpolate auto` with it says what to give instead."""
    from pyserini_qpeft.cli.main import cli
    from safetensors.torch import load_file

    run = tmp_path / "run.trec"
    full_run().write(run)
    common = ["train", "qpeft", "--variant", "retr", "--dataset", str(toy_beir), "--negatives", str(run), "--epochs",
              "1", "--batch-size", "2", "--dev-size", "1", "--top-k", "3", "--model", str(tiny_lm_path), "--device",
              "cpu", "--dtype", "fp32", "--quiet"]
    summaries = {}
    for name, flags in (("with", []), ("without", ["--no-select-interpolation"])):
        result = CliRunner().invoke(cli, [*common, "--output", str(tmp_path / name), *flags])
        assert result.exit_code == 0, result.output
        summaries[name] = json.loads(result.output[result.output.index("{"):])
    assert summaries["without"]["interpolation_alpha"] is None and summaries["with"]["interpolation_alpha"] is not None
    meta = json.loads((tmp_path / "without" / "best" / "qpeft_config.json").read_text())
    assert "interpolation" not in meta
    card = (tmp_path / "without" / "best" / "README.md").read_text()  # the model card says what made the module
    for said in (f"dataset: `{toy_beir}`, split `train`", f"hard negatives from: `{run}`", "seed 0 (dev carve seed 0)",
                 "train qpeft --variant retr"):
        assert said in card, (said, card)
    assert meta["source_commit"] is None or meta["source_commit"] in card
    weights = [{f"{f.name}:{k}": v for f in sorted((tmp_path / name / "best").glob("*.safetensors"))
                for k, v in load_file(str(f)).items()} for name in ("with", "without")]
    assert weights[0] and weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    result = CliRunner().invoke(cli, ["rerank", "--run", str(run), "--topics", str(toy_beir / "queries.jsonl"),
                                      "--corpus", str(toy_beir), "--reranker", "qpeft-retr", "--reranker-checkpoint",
                                      str(tmp_path / "without"), "--interpolate", "auto", "--rerank-depth", "3",
                                      "--output", str(tmp_path / "auto.trec"), "--model", str(tiny_lm_path),
                                      "--device", "cpu", "--dtype", "fp32", "-q"])
    assert result.exit_code == 3 and "--no-select-interpolation" in result.output
    assert "select-interpolation" in result.output and not (tmp_path / "auto.trec").exists()


def test_cli_user_mistakes_exit_3(tmp_path, toy_beir):
    from pyserini_qpeft.cli.train import train as train_group

    run = tmp_path / "run.trec"
    full_run().write(run)
    base = ["qpeft", "--dataset", str(toy_beir), "--negatives", str(run), "--output", str(tmp_path / "out"),
            "--model", "/nonexistent-model"]
    result = CliRunner().invoke(train_group, [*base, "--dev-size", "2"])  # 2 training queries in the toy split
    assert isinstance(result.exception, InputError) and result.exception.exit_code == 3
    assert "no training query" in str(result.exception)
    for args in (["lmort", "--split", "test"], ["lmort", "--split", "test", "--layers", "1,2"]):
        result = CliRunner().invoke(train_group, [*args, "--dataset", str(toy_beir), "--output", str(tmp_path / "l")])
        assert isinstance(result.exception, InputError) and result.exception.exit_code == 3, result.output
    from pyserini_qpeft.cli.lmort import lmort

    result = CliRunner().invoke(lmort, ["analyze", "--dataset", str(toy_beir), "--split", "test", "--output",
                                        str(tmp_path / "an")])
    assert isinstance(result.exception, InputError) and result.exception.exit_code == 3
    assert not (tmp_path / "an").exists()


def test_cli_defaults_come_from_the_configs():
    from pyserini_qpeft.cli.lmort import train as lmort_train
    from pyserini_qpeft.cli.train import train_qpeft
    from pyserini_qpeft.lmort.step import LMORTTrainConfig

    q = {p.name: p.default for p in train_qpeft.params}
    for name in ("epochs", "batch_size", "lr", "margin", "hard_pool", "dev_depth", "seed", "selection_metric",
                 "negative_policy", "warmup_steps", "weight_decay"):
        assert q[name] == QPeftTrainConfig.default(name), name
    m = {p.name: p.default for p in lmort_train.params}
    for name in ("epochs", "batch_size", "lr", "hard_negatives", "negative_depth", "seed", "negative_policy",
                 "warmup_ratio", "weight_decay"):
        assert m[name] == LMORTTrainConfig.default(name), name
    assert m["dev_fraction"] == LMORTTrainConfig.default("dev_size")


def test_dev_prefix_memo_changes_no_number(tiny_lm, tmp_path):
    """Training with the dev prefix memo (the default) and without one (PrefixMemo(0)) gives the same weights and
    the same dev numbers, bit for bit; with it, every dev evaluation after the first runs no passage prefix."""
    from pyserini_qpeft.lm.memo import PrefixMemo

    def train(out, memo):
        examples = toy_examples()
        config = QPeftConfig(variant="attn", seed=0)
        module = build_module(tiny_lm, config)
        tcfg = QPeftTrainConfig(epochs=3, batch_size=3, lr=5e-2, margin=0.5, hard_pool=1, warmup_steps=0,
                                dev_depth=6, eval_at_start=True)
        result = train_qpeft(tiny_lm, module, config, ScorerConfig(max_passage_tokens=32), examples[:3],
                             examples[3:], CORPUS, tcfg, out, progress=False, prefix_memo=memo)
        return module, result

    memo = PrefixMemo(1 << 30)
    with_memo, a = train(tmp_path / "a", memo)
    without, b = train(tmp_path / "b", PrefixMemo(0))
    assert [h["dev"] for h in a.history] == [h["dev"] for h in b.history]
    assert a.dev_baseline == b.dev_baseline
    assert all(torch.equal(with_memo.state_dict()[k], v) for k, v in without.state_dict().items())
    # evaluations: untrained + zero-shot baseline + 3 epochs; only the first one ran the prefixes
    assert memo.misses == len(memo) > 0 and memo.hits == 4 * memo.misses


def test_eval_every_selects_among_mid_epoch_checkpoints_without_changing_the_training(tiny_lm, tmp_path):
    """`eval_every`: dev is also measured inside each epoch; best/ is the best of every evaluation, a mid-epoch one
    saved as epoch-E-step-S/ with the weights of exactly that step; the training itself is the plain run's."""
    from safetensors.torch import load_file

    kw = {"batch_size": 1, "selection_metric": "loss", "eval_at_start": False}  # 3 steps per epoch; dev loss is continuous
    kw.update(lr=0.3, seed=1)  # on the toy data this run's best dev loss is at step 5, inside epoch 2
    plain_module, plain = run_train(tiny_lm, "attn", tmp_path / "plain", epochs=3, **kw)
    module, result = run_train(tiny_lm, "attn", tmp_path / "every", epochs=3, eval_every=1, **kw)
    for key, value in plain_module.state_dict().items():  # the mid-epoch evaluations changed no step
        assert torch.equal(module.state_dict()[key], value), key
    assert [(h["train"], h["dev"]) for h in result.history] == [(h["train"], h["dev"]) for h in plain.history]
    checks = [(c["global_step"], c["dev"]["loss"]) for h in result.history for c in h["dev_steps"]]
    assert [s for s, _ in checks] == [1, 2, 4, 5, 7, 8]  # steps 3, 6, 9 are the epoch ends
    every = checks + [(h["global_step"], h["dev"]["loss"]) for h in result.history]
    best_step, best_loss = min(every, key=lambda c: (c[1], c[0]))
    assert result.best_dev["loss"] == best_loss and result.best_step == best_step
    assert result.best_epoch == (best_step - 1) // 3 + 1
    saved = json.loads((tmp_path / "every" / "best" / "qpeft_config.json").read_text())
    assert saved["training"]["global_step"] == best_step and saved["dev_metrics"]["loss"] == best_loss
    done = json.loads((tmp_path / "every" / "training_done.json").read_text())
    assert done["best_step"] == best_step
    # best/ holds the weights of that very step: a plain run stopped there ends with them
    assert best_step % 3, "the toy run should pick a mid-epoch step, or this test checks only the old path"
    run_train(tiny_lm, "attn", tmp_path / "short", epochs=3, max_steps=best_step, **kw)
    a = load_file(str(tmp_path / "every" / "best" / "qpeft_model.safetensors"))
    b = load_file(str(tmp_path / "short" / f"epoch-{result.best_epoch}" / "qpeft_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(str(tmp_path / "every" / f"epoch-{result.best_epoch}-step-{best_step}" / "qpeft_model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_a_second_training_into_the_same_output_is_locked_out(tiny_lm, tmp_path):
    """While one process trains into a folder (it holds the folder's flock), another is refused before it reads or
    writes anything there; the lock file is gone after a training, and a refused first run leaves no folder."""
    from pyserini_qpeft.training.resume import training_lock
    from pyserini_qpeft.training.state import LOCK_NAME

    out = tmp_path / "out"
    with training_lock(out, True):
        with pytest.raises(InputError, match="another process is training into this output"):
            run_train(tiny_lm, "retr", out, epochs=1)
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]
    assert not out.exists()  # the lock made the folder, nothing else was written: removed again
    run_train(tiny_lm, "retr", out, epochs=1)
    assert (out / "trainer_state.json").is_file() and not (out / LOCK_NAME).exists()
    # a folder the user made beforehand is theirs: left in place although nothing was written into it
    mine = tmp_path / "mine"
    mine.mkdir()
    with training_lock(mine, True):
        pass
    assert mine.is_dir() and not any(mine.iterdir())


def test_resume_refuses_another_prompt_passage_budget_or_training_data(tiny_lm, tmp_path, monkeypatch):
    """The module learns to serve one prompt on one set of (query, positive, hard negative) examples: --resume
    with another --prompt / --max-passage-tokens / --instruction, or another --negatives run, is refused (exit 3)
    instead of mixing two runs' epochs in one folder. Batch sizes may change."""
    import dataclasses

    examples = toy_examples()
    config = QPeftConfig(variant="retr", top_k=4)
    tcfg = QPeftTrainConfig(epochs=1, batch_size=3, hard_pool=1, dev_depth=6, eval_at_start=True)

    def train(out, scorer, train_examples, epochs=1):
        return train_qpeft(tiny_lm, build_module(tiny_lm, config), config, scorer, train_examples, examples[3:],
                           CORPUS, dataclasses.replace(tcfg, epochs=epochs), out, resume=epochs > 1,
                           progress=False)

    base = ScorerConfig(max_passage_tokens=32)
    train(tmp_path / "r", base, examples[:3])
    for scorer in (ScorerConfig(max_passage_tokens=64), ScorerConfig(max_passage_tokens=32, instruction="hi")):
        with pytest.raises(InputError, match="other model settings"):
            train(tmp_path / "r", scorer, examples[:3], epochs=2)
    other = [dataclasses.replace(ex, negatives=tuple(reversed(ex.negatives))) for ex in examples[:3]]
    assert other != list(examples[:3])
    with pytest.raises(InputError, match="other training data"):
        train(tmp_path / "r", base, other, epochs=2)
    # the LM in another precision (--dtype auto resolved otherwise on another CPU): refused, naming the flag
    import torch

    with monkeypatch.context() as patch:
        patch.setattr(tiny_lm, "dtype", torch.bfloat16)
        with pytest.raises(InputError, match="--resume in bfloat16, but the run .* trained in float32: pass --dtype "
                                             "fp32 "):
            train(tmp_path / "r", base, examples[:3], epochs=2)
    train(tmp_path / "r", dataclasses.replace(base, batch_size=7), examples[:3], epochs=2)  # allowed


def test_resume_extends_an_early_stopped_or_finished_run_and_unmarks_it_until_done(tiny_lm, tmp_path, monkeypatch):
    """`--resume` may raise --patience: a run that stopped early goes on (its stop is judged with the new value);
    a finished run extended with more epochs loses training_done.json until the extension finishes, so a killed
    extension is not taken for a finished run (repro reuses trainings by that file)."""
    import json

    from pyserini_qpeft.qpeft.step import QPeftStep

    out = tmp_path / "out"
    run_train(tiny_lm, "retr", out, epochs=2)
    state = json.loads((out / "trainer_state.json").read_text())
    state["stopped_early"] = True  # as a --patience run that stopped after epoch 2 records it
    (out / "trainer_state.json").write_text(json.dumps(state))
    _, result = run_train(tiny_lm, "retr", out, epochs=3, resume=True)  # no --patience now: epoch 3 runs
    assert [h["epoch"] for h in result.history][-1] == 3 and not result.stopped_early
    assert json.loads((out / "training_done.json").read_text())["completed_epochs"] == 3

    def killed(self, batch, rng):
        raise KeyboardInterrupt

    monkeypatch.setattr(QPeftStep, "step", killed)
    with pytest.raises(KeyboardInterrupt):
        run_train(tiny_lm, "retr", out, epochs=4, resume=True)
    assert not (out / "training_done.json").exists()


def test_resume_refuses_a_new_max_steps_after_a_cut_inside_an_epoch(tiny_lm, tmp_path):
    """A run cut by --max-steps inside an epoch would resume at the next epoch, not finish the cut one: a new
    --max-steps is refused there (at an epoch's end it continues as a straight run would)."""
    out = tmp_path / "cut"
    run_train(tiny_lm, "retr", out, epochs=2, batch_size=1, max_steps=2)  # 3 steps per epoch: cut inside epoch 1
    with pytest.raises(InputError, match="stopped at --max-steps 2 inside epoch 1"):
        run_train(tiny_lm, "retr", out, epochs=2, batch_size=1, max_steps=4, resume=True)
    edge = tmp_path / "edge"
    run_train(tiny_lm, "retr", edge, epochs=2, batch_size=1, max_steps=3)  # exactly epoch 1
    _, result = run_train(tiny_lm, "retr", edge, epochs=2, batch_size=1, max_steps=6, resume=True)
    assert [h["global_step"] for h in result.history] == [3, 6]


def test_the_training_job_runs_from_python_with_paths(tiny_lm_path, tmp_path, toy_beir):
    """`run_qpeft_job` is what `train qpeft` runs; from Python, paths are paths (a Path for --negatives trained an
    epoch, then failed to save: "PosixPath is not JSON serializable")."""
    from pyserini_qpeft.lm.backbone import LMConfig
    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.qpeft.train import QPeftJob, run_qpeft_job

    run = tmp_path / "run.trec"
    full_run().write(run)
    summary = run_qpeft_job(QPeftJob(dataset=toy_beir, negatives=run, output=tmp_path / "out",
                                     module=QPeftConfig(variant="retr", top_k=3),
                                     train=QPeftTrainConfig.build(epochs=1, batch_size=2, dev_size=1),
                                     scorer=ScorerConfig(max_passage_tokens=32),
                                     lm=LMConfig(model=str(tiny_lm_path), device="cpu", dtype="fp32"), progress=False))
    meta = json.loads((tmp_path / "out" / "best" / "qpeft_config.json").read_text())
    assert summary["best"] == str(tmp_path / "out" / "best") and meta["training"]["negatives"] == str(run)


def test_a_checkpoint_recording_no_dev_queries_is_refused_by_dev_split(tmp_path):
    from pyserini_qpeft.training.data import checkpoint_dev_qids

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "qpeft_config.json").write_text(json.dumps({"training": {"dev_qids": []}}))
    with pytest.raises(InputError, match="records no dev queries"):
        checkpoint_dev_qids(folder)
    (folder / "qpeft_config.json").write_text(json.dumps({"training": {"dev_qids": ["q2", "q1"]}}))
    assert checkpoint_dev_qids(folder) == ["q2", "q1"]
