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
from pyserini_qpeft.qpeft import QPeftConfig, build_module
from pyserini_qpeft.scoring import ScorerConfig
from pyserini_qpeft.training.data import (TrainingExample, build_examples, check_split, sample_step,
                                          split_dev)
from pyserini_qpeft.training.losses import qpeft_loss
from pyserini_qpeft.training.loop import TrainConfig, rank_metrics, read_trainer_state, train
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
    with pytest.raises(InputError, match="no usable"):
        build_examples(QUERIES, {"q2": {"d5": 0}}, run)


def test_run_over_other_corpus_is_an_error():
    run = Run({"q1": [Hit("zzz", 2.0), Hit("d1", 1.0)]})
    with pytest.raises(InputError, match="zzz"):
        build_examples(QUERIES, {"q1": {"d1": 1}}, run, CORPUS)


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
    with pytest.raises(ValueError):
        split_dev(examples, 50, seed=0)


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


def test_rank_metrics():
    scores = {"a": 3.0, "b": 2.0, "c": 2.0, "d": 1.0}
    m = rank_metrics(scores, {"c"})
    assert m["mrr@10"] == pytest.approx(1 / 3)  # tie of b and c broken by docid: b before c
    assert m["ndcg@10"] == pytest.approx(0.5)  # 1 / log2(3 + 1)


# -------------------------------------------------------------------------------------------------- loop


def run_train(lm, variant, out, epochs, resume=False, seed=0, lr=2e-2):
    examples = toy_examples()
    config = QPeftConfig(variant=variant, top_k=4, num_virtual_tokens=4, seed=seed)
    module = build_module(lm, config)
    tcfg = TrainConfig(epochs=epochs, batch_size=3, lr=lr, margin=0.5, hard_pool=1, warmup_steps=0, seed=seed,
                       dev_depth=6, eval_at_start=True)
    result = train(lm, module, config, ScorerConfig(max_passage_tokens=32), examples[:3], examples[3:], CORPUS,
                   tcfg, out, resume=resume, progress=False)
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


def test_resume_matches_uninterrupted(tiny_lm, tmp_path):
    straight, _ = run_train(tiny_lm, "attn", tmp_path / "a", epochs=4)
    run_train(tiny_lm, "attn", tmp_path / "b", epochs=2)
    with pytest.raises(InputError, match="resume"):
        run_train(tiny_lm, "attn", tmp_path / "b", epochs=4)
    resumed, result = run_train(tiny_lm, "attn", tmp_path / "b", epochs=4, resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-5, atol=1e-6)


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
    assert meta["training"]["train_queries"] + meta["training"]["dev_queries"] == 2

    result = CliRunner().invoke(explain, ["--reranker-checkpoint", str(out), "--query", "what causes lung cancer",
                                          "--dataset", str(toy_beir), "--docid", "d1", "--model", str(tiny_lm_path),
                                          "--device", "cpu", "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    assert "selected passage tokens" in result.output and "lung" in result.output
    result = CliRunner().invoke(explain, ["--reranker-checkpoint", str(out), "--query", "x", "--doc-text", "y",
                                          "--docid", "d1", "--model", str(tiny_lm_path)])
    assert result.exit_code == 2
