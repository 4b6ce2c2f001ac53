"""Q-PEFT hint module: shapes and masks, top-k distinct selection, frozen LM, gradients, explain, rerankers."""
from __future__ import annotations

import pytest
import torch

from conftest import TOY_CORPUS, TOY_QUERIES
from pyserini_qpeft.data import Document
from pyserini_qpeft.errors import InputError, ModelError
from pyserini_qpeft.cli.explain import format_explanation
from pyserini_qpeft.qpeft.explain import explain
from pyserini_qpeft.qpeft.module import QPeftConfig, build_module, parameter_report, trainable_parameters
from pyserini_qpeft.lm.scoring import QueryLikelihoodScorer, ScorerConfig

DOCS = {d["_id"]: Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS}
QUERIES = {q["_id"]: q["text"] for q in TOY_QUERIES}
VARIANTS = ("retr", "attn", "prompt")


def encode(lm, module, pairs):
    scorer = QueryLikelihoodScorer(lm, ScorerConfig(), hint_module=module)
    return scorer, scorer.encode([QUERIES[q] for q, _ in pairs], [DOCS[d] for _, d in pairs])


def test_config_validation_names_bad_value():
    with pytest.raises(ValueError, match="'bogus'"):
        QPeftConfig(variant="bogus")
    with pytest.raises(ValueError, match="top_k"):
        QPeftConfig(top_k=0)
    with pytest.raises(ValueError, match="dropout"):
        QPeftConfig(dropout=1.5)
    config = QPeftConfig(variant="retr", top_k=5)
    assert QPeftConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        QPeftConfig.from_dict({**config.to_dict(), "nope": 1})


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_masks_and_dtype(tiny_lm, variant):
    module = build_module(tiny_lm, QPeftConfig(variant=variant, top_k=4, num_virtual_tokens=5))
    _, batch = encode(tiny_lm, module, [("q1", "d1"), ("q2", "d3"), ("q4", "d6")])
    hints, mask = module(batch.query_ids, batch.query_mask, batch.passage_ids, batch.passage_mask)
    n = {"retr": 4, "attn": batch.query_ids.shape[1], "prompt": 5}[variant]
    assert hints.shape == (3, n, tiny_lm.hidden_size)
    assert mask.shape == (3, n)
    assert hints.dtype == tiny_lm.dtype
    assert torch.isfinite(hints).all()
    if variant == "attn":
        assert torch.equal(mask, batch.query_mask.long())
    if variant == "prompt":  # query independent: the same hints for every pair
        assert torch.equal(hints[0], hints[1]) and torch.equal(hints[1], hints[2])
    else:
        assert not torch.equal(hints[0, :2], hints[1, :2])


def test_retr_selects_distinct_tokens_best_first(tiny_lm):
    module = build_module(tiny_lm, QPeftConfig(variant="retr", top_k=50))
    _, batch = encode(tiny_lm, module, [("q1", "d1"), ("q3", "d3")])
    _, mask, ids, sims = module.select_tokens(batch.query_ids, batch.query_mask, batch.passage_ids, batch.passage_mask)
    for b in range(2):
        passage = batch.passage_ids[b][batch.passage_mask[b].bool()].tolist()
        chosen = ids[b][mask[b].bool()].tolist()
        assert len(chosen) == len(set(chosen)) == len(set(passage))  # k > distinct tokens: all, once each
        assert int(mask[b].sum()) < 50  # the rest is masked
        valid = sims[b][mask[b].bool()]
        assert torch.all(valid[:-1] >= valid[1:] - 1e-5)  # best first (at 5 decimals: ties go in passage order)
        # a passage token that also occurs in the query has cosine 1 and comes first
        query = set(batch.query_ids[b][batch.query_mask[b].bool()].tolist())
        shared = query & set(passage)
        assert shared and set(chosen[:len(shared)]) == shared
        assert valid[0].item() == pytest.approx(1.0, abs=1e-5)


def test_retr_ties_in_passage_order_whatever_the_batch(tiny_lm):
    """Passage tokens that also occur in the query tie at cosine 1: they fill the k slots in passage order, and a
    pair gets the same hints (so the same score) alone or batched next to longer queries and passages (the ties
    were broken by float noise of the padded batch product: audit T)."""
    module = build_module(tiny_lm, QPeftConfig(variant="retr", top_k=4))
    query = "the cell protein gene binds with the receptor in the tumour cell line"
    doc = Document("x", "", "receptor tumour with gene the protein cell binds line in")
    scorer = QueryLikelihoodScorer(tiny_lm, ScorerConfig(), hint_module=module)
    alone = scorer.encode([query], [doc])
    _, mask, ids, sims = module.select_tokens(alone.query_ids, alone.query_mask, alone.passage_ids, alone.passage_mask)
    passage = alone.passage_ids[0][alone.passage_mask[0].bool()].tolist()
    in_query = set(alone.query_ids[0][alone.query_mask[0].bool()].tolist())
    shared = list(dict.fromkeys(t for t in passage if t in in_query))
    assert len(shared) > 4  # more exact matches than slots: a tie decides
    assert ids[0].tolist() == shared[:4] and mask[0].tolist() == [1, 1, 1, 1]
    assert torch.allclose(sims[0], torch.ones(4), atol=1e-5)
    long_doc = Document("y", "t", " ".join(DOCS[d].text for d in DOCS))
    for others in ([(QUERIES["q1"] * 3, long_doc)], [(QUERIES["q2"], DOCS["d2"]), (query + " " + query, long_doc)]):
        queries, docs = [q for q, _ in others] + [query], [d for _, d in others] + [doc]
        batch = scorer.encode(queries, docs)
        _, m, got, _ = module.select_tokens(batch.query_ids, batch.query_mask, batch.passage_ids, batch.passage_mask)
        assert got[-1].tolist() == ids[0].tolist() and m[-1].tolist() == mask[0].tolist()
    one = QueryLikelihoodScorer(tiny_lm, ScorerConfig(batch_size=1, prefix_batch_size=1), hint_module=module)
    pairs = [(query, doc), (QUERIES["q1"] * 3, long_doc), (query + " " + query, doc), (QUERIES["q2"], long_doc)]
    together = scorer.score([q for q, _ in pairs], [d for _, d in pairs])
    single = one.score([q for q, _ in pairs], [d for _, d in pairs])
    assert together == pytest.approx(single, abs=1e-5)


def test_retr_k_smaller_than_passage_and_special_tokens_excluded(tiny_lm):
    module = build_module(tiny_lm, QPeftConfig(variant="retr", top_k=2))
    _, batch = encode(tiny_lm, module, [("q2", "d2")])
    pad = tiny_lm.tokenizer.pad_token_id
    passage = batch.passage_ids.clone()
    passage[0, 0] = pad  # a special token inside the passage is never a hint
    _, mask, ids, _ = module.select_tokens(batch.query_ids, batch.query_mask, passage, batch.passage_mask)
    assert mask.tolist() == [[1, 1]]
    assert pad not in ids[0].tolist()


def test_attn_ignores_passage_padding(tiny_lm):
    module = build_module(tiny_lm, QPeftConfig(variant="attn"))
    _, alone = encode(tiny_lm, module, [("q1", "d5")])
    _, padded = encode(tiny_lm, module, [("q1", "d5"), ("q1", "d4")])  # d4 is longer: d5's row gets padding
    assert padded.passage_mask[0].sum() < padded.passage_mask.shape[1]
    a, _ = module(alone.query_ids, alone.query_mask, alone.passage_ids, alone.passage_mask)
    b, _ = module(padded.query_ids, padded.query_mask, padded.passage_ids, padded.passage_mask)
    q = int(alone.query_mask.sum())
    torch.testing.assert_close(a[0, :q], b[0, :q], rtol=1e-5, atol=1e-6)


def test_frozen_embedding_is_referenced_not_owned(tiny_lm):
    for variant in VARIANTS:
        module = build_module(tiny_lm, QPeftConfig(variant=variant))
        names = [n for n, _ in module.named_parameters()] + list(module.state_dict())
        assert not any("embed" in n and "prompt" not in n for n in names), names
        vocab_ptr = tiny_lm.model.get_input_embeddings().weight.data_ptr()
        assert all(p.data_ptr() != vocab_ptr for p in module.parameters())
        assert all(p.shape[0] != tiny_lm.vocab_size for p in module.parameters())


def test_trainable_parameter_counts(tiny_lm):
    h = tiny_lm.hidden_size
    mlp = 2 * h * h + 2 * h
    assert trainable_parameters(build_module(tiny_lm, QPeftConfig(variant="retr"))) == mlp
    assert trainable_parameters(build_module(tiny_lm, QPeftConfig(variant="attn"))) == mlp + 4 * h * h + 4 * h
    assert trainable_parameters(build_module(tiny_lm, QPeftConfig(variant="prompt", num_virtual_tokens=7))) \
        == mlp + 7 * h
    report = parameter_report(build_module(tiny_lm, QPeftConfig(variant="retr")), tiny_lm)
    assert report["percent_of_lm"] == pytest.approx(100 * mlp / tiny_lm.num_parameters())


def test_prompt_text_init_uses_text_token_embeddings(tiny_lm):
    module = build_module(tiny_lm, QPeftConfig(variant="prompt", num_virtual_tokens=3, prompt_init="text",
                                               prompt_init_text="lung cancer"))
    ids = tiny_lm.tokenizer("lung cancer", add_special_tokens=False)["input_ids"]
    expected = tiny_lm.embed(torch.tensor([(ids * 3)[:3]]))[0].float()
    torch.testing.assert_close(module.prompt.embedding.weight.detach(), expected)


def test_same_seed_same_init_different_seed_differs(tiny_lm):
    a = build_module(tiny_lm, QPeftConfig(variant="attn", seed=1)).state_dict()
    b = build_module(tiny_lm, QPeftConfig(variant="attn", seed=1)).state_dict()
    c = build_module(tiny_lm, QPeftConfig(variant="attn", seed=2)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mlp.fc1.weight"], c["mlp.fc1.weight"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_module_only_and_lm_unchanged(tiny_lm, variant):
    module = build_module(tiny_lm, QPeftConfig(variant=variant, top_k=4))
    before = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    scorer, batch = encode(tiny_lm, module, [("q1", "d1"), ("q1", "d2"), ("q3", "d3")])
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    loss = -scorer.forward(batch).mean()
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert all(p.grad is None for p in tiny_lm.model.parameters())
    optimizer.step()
    after = tiny_lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert -scorer.forward(batch).mean().item() != pytest.approx(loss.item(), abs=1e-7)  # the module did change


def test_initial_hints_near_neutral_but_not_zero(tiny_lm):
    module = build_module(tiny_lm, QPeftConfig(variant="retr", top_k=3))
    _, batch = encode(tiny_lm, module, [("q1", "d1")])
    hints, mask = module(batch.query_ids, batch.query_mask, batch.passage_ids, batch.passage_mask)
    _, _, ids, _ = module.select_tokens(batch.query_ids, batch.query_mask, batch.passage_ids, batch.passage_mask)
    tokens = tiny_lm.embed(ids)
    assert float(hints.detach().abs().sum()) > 0
    rel = float((hints.detach() - tokens).norm() / tokens.norm())
    assert 0 < rel < 0.5  # residual MLP with a small last layer: hints start close to the selected tokens


@pytest.mark.parametrize("variant", VARIANTS)
def test_explain(tiny_lm, variant):
    module = build_module(tiny_lm, QPeftConfig(variant=variant, top_k=3))
    scorer = QueryLikelihoodScorer(tiny_lm, ScorerConfig(), hint_module=module)
    info = explain(tiny_lm, module, scorer, QUERIES["q1"], DOCS["d1"], top=3)
    assert info["variant"] == variant and info["docid"] == "d1"
    assert info["score"] == pytest.approx(scorer.score([QUERIES["q1"]], [DOCS["d1"]])[0], abs=1e-5)
    base = QueryLikelihoodScorer(tiny_lm, ScorerConfig()).score([QUERIES["q1"]], [DOCS["d1"]])[0]
    assert info["score_without_hints"] == pytest.approx(base, abs=1e-5)
    if variant == "attn":
        assert len(info["heads"]) == 2
        for rows in info["heads"]:
            assert len(rows) == 3 and all(0 <= r["weight"] <= 1 for r in rows)
            assert rows[0]["weight"] >= rows[-1]["weight"]
    else:
        assert len(info["tokens"]) == 3
    if variant == "retr":  # the query's own words in the passage are found first
        assert "lung" in "".join(t["token"] for t in info["tokens"]) or "causes" in "".join(
            t["token"] for t in info["tokens"])
    if variant != "prompt":
        assert info["passage_tokens"] == info["lm_passage_tokens"] == len(scorer.doc_tokens(DOCS["d1"]).passage)
    # retr's tokens are ranked by similarity; prompt's rows are its hint vectors in order, not a ranking
    header = {"retr": "  rank   cosine  token", "prompt": "  hint   cosine  token", "attn": "  rank   pos   weight  token"}
    assert header[variant] in format_explanation(info).splitlines()
    if variant == "retr":
        assert [t["similarity"] for t in info["tokens"]] == sorted((t["similarity"] for t in info["tokens"]),
                                                                   reverse=True)


def test_explain_says_how_much_of_the_passage_the_module_read(tiny_lm):
    """`train qpeft --hint-passage-tokens`: the module reads more of the passage than the LM's prompt holds."""
    module = build_module(tiny_lm, QPeftConfig(variant="retr", top_k=3))
    scorer = QueryLikelihoodScorer(tiny_lm, ScorerConfig(max_passage_tokens=4, hint_passage_tokens=64),
                                   hint_module=module)
    info = explain(tiny_lm, module, scorer, QUERIES["q1"], DOCS["d1"], top=3)
    assert info["lm_passage_tokens"] == 4 < info["passage_tokens"]
    base = QueryLikelihoodScorer(tiny_lm, ScorerConfig(max_passage_tokens=4)).score([QUERIES["q1"]], [DOCS["d1"]])[0]
    assert info["score_without_hints"] == pytest.approx(base, abs=1e-5)
    text = format_explanation(info)
    assert f"the module read {info['passage_tokens']}, the LM's prompt holds 4" in text


def test_registered_rerankers_check_variant(tiny_lm, tmp_path, caplog):
    from pyserini_qpeft.qpeft.checkpoint import save_checkpoint
    from pyserini_qpeft.qpeft.config import NAME_TO_VARIANT, RERANKER_NAMES
    from pyserini_qpeft.qpeft.module import VARIANTS as MODULE_VARIANTS
    from pyserini_qpeft.rerank import build_reranker, reranker_names

    assert set(NAME_TO_VARIANT) <= set(reranker_names())  # no import needed to register them
    assert sorted(NAME_TO_VARIANT.values()) == sorted(MODULE_VARIANTS)  # one reranker per variant
    assert {RERANKER_NAMES[v]: v for v in MODULE_VARIANTS} == NAME_TO_VARIANT
    config = QPeftConfig(variant="retr", top_k=3)
    module = build_module(tiny_lm, config)
    path = save_checkpoint(tmp_path / "ckpt", module, config, tiny_lm, ScorerConfig(batch_size=5))
    reranker = build_reranker("qpeft-retr", lm=tiny_lm, checkpoint=path, scorer_overrides={"batch_size": 3})
    assert reranker.name == "qpeft-retr" and reranker.config.batch_size == 3
    assert reranker.scorer.hint_module.config == config
    import logging

    with caplog.at_level(logging.WARNING):  # another passage budget than training's: allowed, and said
        build_reranker("qpeft-retr", lm=tiny_lm, checkpoint=path,
                       scorer_overrides={"max_passage_tokens": ScorerConfig().max_passage_tokens})
        assert not caplog.records
        build_reranker("qpeft-retr", lm=tiny_lm, checkpoint=path, scorer_overrides={"max_passage_tokens": 64})
    assert f"was trained with max_passage_tokens {ScorerConfig().max_passage_tokens}; scoring with 64" in caplog.text
    with pytest.raises(ModelError, match="'retr'"):
        build_reranker("qpeft-attn", lm=tiny_lm, checkpoint=path)
    with pytest.raises(InputError, match="reranker-checkpoint"):
        build_reranker("prompt-tuning", lm=tiny_lm)
