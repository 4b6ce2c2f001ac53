"""The paper-faithful Q-PEFT options: content-token filter, trainable query side, plain MLP with xavier init."""
from __future__ import annotations

import pytest
import torch

from conftest import TOY_CORPUS, TOY_QUERIES
from pyserini_qpeft.data import Document
from pyserini_qpeft.lm.scoring import QueryLikelihoodScorer, ScorerConfig
from pyserini_qpeft.qpeft.module import QPeftConfig, build_module
from pyserini_qpeft.qpeft.tokens import STOPWORDS, excluded_token_ids, is_content_token

DOCS = {d["_id"]: Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS}
QUERIES = {q["_id"]: q["text"] for q in TOY_QUERIES}
PAIRS = [("q1", "d1"), ("q2", "d2"), ("q4", "d4")]


def _encode(lm, module):
    scorer = QueryLikelihoodScorer(lm, ScorerConfig(), hint_module=module)
    return scorer, scorer.encode([QUERIES[q] for q, _ in PAIRS], [DOCS[d] for _, d in PAIRS])


def test_content_words():
    assert is_content_token(" cancer") and is_content_token("Aspirin")
    for text in ("-", ".", ",", " the", "is", "42", " x", "d3", ""):
        assert not is_content_token(text), text
    assert {"the", "of", "and", "is"} <= STOPWORDS


def test_content_filter_leaves_only_content_tokens(tiny_lm):
    tok = tiny_lm.tokenizer
    excluded = set(excluded_token_ids(tok, "content"))
    assert set(excluded_token_ids(tok, "special")) <= excluded
    module = build_module(tiny_lm, QPeftConfig(variant="retr", top_k=50, token_filter="content"))
    _, batch = _encode(tiny_lm, module)
    _, mask, ids, _ = module.select_tokens(batch.query_ids, batch.query_mask, batch.passage_ids, batch.passage_mask)
    chosen = [tok.decode([i]) for i in ids[mask.bool()].tolist()]
    assert chosen and all(is_content_token(t) for t in chosen), chosen
    plain = build_module(tiny_lm, QPeftConfig(variant="retr", top_k=50))
    _, mask0, ids0, _ = plain.select_tokens(batch.query_ids, batch.query_mask, batch.passage_ids, batch.passage_mask)
    everything = [tok.decode([i]) for i in ids0[mask0.bool()].tolist()]
    assert any(not is_content_token(t) for t in everything)  # the toy passages do contain stop-words ("the", "by")


def test_query_proj_starts_as_identity_and_learns(tiny_lm):
    base = build_module(tiny_lm, QPeftConfig(variant="retr", top_k=4))
    proj = build_module(tiny_lm, QPeftConfig(variant="retr", top_k=4, query_proj=True))
    _, batch = _encode(tiny_lm, base)
    args = (batch.query_ids, batch.query_mask, batch.passage_ids, batch.passage_mask)
    hints0, _ = base(*args)
    hints1, _ = proj(*args)
    torch.testing.assert_close(hints0, hints1)  # same value at init (same seed, identity map, gate == 1)
    hints1.float().pow(2).sum().backward()
    grad = proj.query_proj.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0  # the selection's similarity reaches the map


def test_plain_mlp_is_not_residual(tiny_lm):
    module = build_module(tiny_lm, QPeftConfig(variant="attn", attn_init="xavier", mlp="plain"))
    x = torch.randn(3, tiny_lm.hidden_size)
    expected = module.mlp.fc2(torch.relu(module.mlp.fc1(x)))
    torch.testing.assert_close(module.mlp(x), expected)
    assert float(module.mlp.fc1.bias.detach().abs().sum()) == 0.0
    residual = build_module(tiny_lm, QPeftConfig(variant="attn"))
    torch.testing.assert_close(residual.mlp(x), x + residual.mlp.fc2(torch.relu(residual.mlp.fc1(x))))


@pytest.mark.parametrize("variant", ["attn", "retr"])
def test_prompt_tokens_put_learned_query_independent_vectors_ahead_of_the_hints(tiny_lm, tmp_path, variant):
    """--prompt-tokens P: hints = [P learned vectors, the same for every pair; the module's own hints, unchanged
    at init]; both parts train, the scorer takes them, checkpoints keep them."""
    from pyserini_qpeft.qpeft.checkpoint import load_checkpoint, save_checkpoint

    base = build_module(tiny_lm, QPeftConfig(variant=variant, top_k=4))
    config = QPeftConfig(variant=variant, top_k=4, prompt_tokens=3)
    module = build_module(tiny_lm, config)
    scorer, batch = _encode(tiny_lm, module)
    args = (batch.query_ids, batch.query_mask, batch.passage_ids, batch.passage_mask)
    hints0, mask0 = base(*args)
    hints, mask = module(*args)
    assert hints.shape == (len(PAIRS), 3 + hints0.shape[1], tiny_lm.hidden_size)
    torch.testing.assert_close(hints[:, 3:], hints0)  # the query-dependent part starts as without the option
    assert mask[:, :3].eq(1).all() and torch.equal(mask[:, 3:], mask0)
    torch.testing.assert_close(hints[0, :3], hints[1, :3])  # query-independent
    scores = scorer.forward(batch)
    assert scores.shape == (len(PAIRS),) and torch.isfinite(scores).all()
    scores.sum().backward()
    assert float(module.prompt.embedding.weight.grad.abs().sum()) > 0
    assert float(module.mlp.fc1.weight.grad.abs().sum()) > 0
    save_checkpoint(tmp_path / "ckpt", module, config, tiny_lm, ScorerConfig())
    loaded, loaded_config, _, _ = load_checkpoint(tmp_path / "ckpt", tiny_lm)
    assert loaded_config == config
    torch.testing.assert_close(loaded(*args)[0], hints.detach())


def test_option_validation():
    with pytest.raises(ValueError, match="query_proj"):
        QPeftConfig(variant="attn", query_proj=True)
    with pytest.raises(ValueError, match="'wide'"):
        QPeftConfig(mlp="wide")
    with pytest.raises(ValueError, match="'words'"):
        QPeftConfig(token_filter="words")
    with pytest.raises(ValueError, match="num_virtual_tokens"):
        QPeftConfig(variant="prompt", prompt_tokens=4)
    with pytest.raises(ValueError, match="non-negative"):
        QPeftConfig(prompt_tokens=-1)
    old = {k: v for k, v in QPeftConfig().to_dict().items() if k not in ("mlp", "token_filter", "query_proj", "prompt_tokens")}
    assert QPeftConfig.from_dict(old) == QPeftConfig()  # checkpoints written before these options still load


def test_checkpoint_round_trip_keeps_query_proj(tiny_lm, tmp_path):
    from pyserini_qpeft.qpeft.checkpoint import load_checkpoint, save_checkpoint

    config = QPeftConfig(variant="retr", top_k=4, query_proj=True, token_filter="content", mlp="plain")
    module = build_module(tiny_lm, config)
    with torch.no_grad():
        module.query_proj.weight.add_(0.01)
    save_checkpoint(tmp_path / "ckpt", module, config, tiny_lm, ScorerConfig())
    loaded, loaded_config, _, _ = load_checkpoint(tmp_path / "ckpt", tiny_lm)
    assert loaded_config == config
    torch.testing.assert_close(loaded.query_proj.weight, module.query_proj.weight)


def test_dev_seed_keeps_the_dev_queries_of_another_seed(tiny_lm_path, toy_beir, tmp_path):
    """`--seed 1 --dev-seed 0` holds out the dev queries `--seed 0` holds out (a row's second seed selects its
    interpolation weight on the same held-out queries), while the initialisation follows --seed."""
    import json

    from click.testing import CliRunner

    from conftest import TOY_QUERIES
    from pyserini_qpeft.cli.main import cli

    docids = [json.loads(line)["_id"] for line in (toy_beir / "corpus.jsonl").read_text().splitlines()]
    (tmp_path / "neg.trec").write_text("".join(f"{q['_id']} Q0 {d} {r + 1} {len(docids) - r}.0 bm25\n"
                                               for q in TOY_QUERIES for r, d in enumerate(docids)))
    common = ["train", "qpeft", "--variant", "attn", "--dataset", str(toy_beir), "--negatives",
              str(tmp_path / "neg.trec"), "--epochs", "1", "--batch-size", "2", "--dev-size", "1", "--dev-depth", "2",
              "--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "--quiet"]

    def trained(name: str, *flags: str) -> dict:
        out = CliRunner().invoke(cli, [*common, *flags, "--output", str(tmp_path / name)])
        assert out.exit_code == 0, out.output
        return json.loads((tmp_path / name / "best" / "qpeft_config.json").read_text())["training"]

    seed0, seed1 = trained("s0", "--seed", "0"), trained("s1", "--seed", "1", "--dev-seed", "0")
    # the checkpoint names the command that ran, also in-process (pytest's sys.argv is not that command)
    import shlex

    ran = "pyserini-qpeft " + shlex.join([*common, "--seed", "0", "--output", str(tmp_path / "s0")])
    assert seed0["command"] == ran and ran in (tmp_path / "s0" / "best" / "README.md").read_text()
    assert seed1["dev_qids"] == seed0["dev_qids"]
    assert seed1["train_config"]["seed"] == 1 and seed1["train_config"]["dev_seed"] == 0
    assert seed0["train_config"]["dev_seed"] is None
    w0 = (tmp_path / "s0" / "best" / "qpeft_model.safetensors").read_bytes()
    assert w0 != (tmp_path / "s1" / "best" / "qpeft_model.safetensors").read_bytes()
    trained("p", "--prompt-tokens", "2")  # the flag reaches the saved module config
    assert json.loads((tmp_path / "p" / "best" / "qpeft_config.json").read_text())["qpeft_config"]["prompt_tokens"] == 2
    linear = trained("lin", "--lr-schedule", "linear", "--warmup-steps", "0")  # the flag reaches the train config
    assert linear["train_config"]["lr_schedule"] == "linear" and seed0["train_config"]["lr_schedule"] == "constant"
    listwise = trained("lw", "--seed", "0", "--loss", "listwise", "--temperature", "0.5")
    assert (listwise["train_config"]["loss"], listwise["train_config"]["temperature"]) == ("listwise", 0.5)
    assert seed0["train_config"]["loss"] == "hinge"
    assert (tmp_path / "lw" / "best" / "qpeft_model.safetensors").read_bytes() != w0  # same seed, other loss
    state = json.loads((tmp_path / "lw" / "trainer_state.json").read_text())
    assert "listwise" in state["history"][0]["train"] and "hinge" not in state["history"][0]["train"]
    fused = trained("fs", "--seed", "0", "--first-stage-weight", "5", "--first-stage-depth", "3")  # beyond the papers
    assert (fused["train_config"]["first_stage_weight"], fused["train_config"]["first_stage_depth"]) == (5.0, 3)
    assert seed0["train_config"]["first_stage_weight"] == 0.0
    assert (tmp_path / "fs" / "best" / "qpeft_model.safetensors").read_bytes() != w0  # same seed, fused hinge
    out = CliRunner().invoke(cli, [*common, "--loss", "listwise", "--first-stage-weight", "1",
                                   "--output", str(tmp_path / "bad")])
    assert out.exit_code != 0 and "hinge" in out.output


def test_attn_init_identity_and_xavier(tiny_lm):
    """identity (default): the attention starts as a lookup of the matching passage tokens (Q = c I with the
    documented sharpness, K = V = out = I); xavier (the paper's): torch's xavier-uniform projections (mutants
    audit U: Q05, Q10)."""
    import math

    hidden = tiny_lm.hidden_size
    config = QPeftConfig(variant="attn", num_heads=2)
    module = build_module(tiny_lm, config)
    attention, eye = module.attention, torch.eye(hidden)
    weight = module.embedding.weight.detach().float()  # a tiny vocabulary: every row is in the init's sample
    c = config.attn_init_sharpness * math.sqrt(hidden // 2) * 2 / float(weight.pow(2).sum(-1).mean())
    q, k, v = attention.in_proj_weight.detach().chunk(3)
    torch.testing.assert_close(q, c * eye, rtol=1e-4, atol=0.0)
    for block in (k, v, attention.out_proj.weight.detach()):
        torch.testing.assert_close(block, eye)
    assert float(attention.in_proj_bias.detach().abs().sum()) == 0.0
    # a query token that occurs in the passage attends to it most
    ids = torch.tensor([[11, 40, 73, 90, 120]])
    _, weights = module.attend(ids[:, 2:3], torch.ones(1, 1), ids, torch.ones(1, 5), need_weights=True)
    assert int(weights.mean(1)[0, 0].argmax()) == 2
    xavier = build_module(tiny_lm, QPeftConfig(variant="attn", num_heads=2, attn_init="xavier"))
    w = xavier.attention.in_proj_weight.detach()
    assert float(w.abs().max()) <= math.sqrt(6 / (hidden + 3 * hidden)) + 1e-6
    assert not torch.allclose(w.chunk(3)[1], eye, atol=0.1)
