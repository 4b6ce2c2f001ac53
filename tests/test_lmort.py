"""LMORT on the tiny random Llama: layer states, pooling, analysis, tuner, checkpoints, training end to end."""
from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pytest
import torch

from pyserini_qpeft.errors import ModelError
from pyserini_qpeft.lmort.tuner import (LMORTConfig, LMORTModel, LMORTTuner, layer_token_states, load_lmort, pool,
                                  read_lmort_meta, save_lmort, tokenize)
from pyserini_qpeft.lmort.analysis import (LayerReport, alignment, analyze_layers, plot_report,
                                           pooled_layer_vectors, uniformity)

TEXTS = ["the cat sat on the mat", "cells", "smoking causes lung cancer in the park", "aspirin"]


def test_truncated_forward_matches_full_hidden_states(tiny_lm):
    batch = tokenize(tiny_lm, TEXTS, 32)
    with torch.no_grad():
        full = tiny_lm.model.model(**batch, output_hidden_states=True).hidden_states
    blocks = tiny_lm.model.model.layers
    hooks_before = [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in blocks]
    assert len(full) == tiny_lm.num_layers + 1
    for layers in ([0], [1], [0, 1], [1, 2], [2]):
        got = layer_token_states(tiny_lm, batch["input_ids"], batch["attention_mask"], layers)
        assert sorted(got) == layers
        mask = batch["attention_mask"].bool()
        for layer in layers:
            torch.testing.assert_close(got[layer][mask], full[layer][mask], atol=1e-5, rtol=1e-5)
    # no hooks are left behind
    assert [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in blocks] == hooks_before


def test_long_texts_keep_their_beginning_whatever_the_tokenizer_says(tiny_lm_path, tmp_path):
    """A tokenizer saved with truncation_side="left" (some chat models') still cuts LMORT's texts at the end."""
    import shutil

    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig

    folder = tmp_path / "left"
    shutil.copytree(tiny_lm_path, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "truncation_side": "left"}))
    lm = FrozenLM.load(LMConfig(model=str(folder), device="cpu", dtype="fp32"))
    text = "smoking causes lung cancer in the park"
    full = lm.tokenizer(text)["input_ids"]
    assert len(full) > 4 and tokenize(lm, [text], 4)["input_ids"][0].tolist() == full[:4]


def test_truncated_forward_stops_early(tiny_lm):
    calls = []
    handle = tiny_lm.model.model.layers[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        batch = tokenize(tiny_lm, TEXTS, 32)
        layer_token_states(tiny_lm, batch["input_ids"], batch["attention_mask"], [1])
        assert calls == []  # block 2 (index 1) never ran
        layer_token_states(tiny_lm, batch["input_ids"], batch["attention_mask"], [2])
        assert calls == [1]
    finally:
        handle.remove()


def test_layer_range_checked(tiny_lm):
    batch = tokenize(tiny_lm, TEXTS, 32)
    with pytest.raises(ValueError, match="layers must be in"):
        layer_token_states(tiny_lm, batch["input_ids"], batch["attention_mask"], [tiny_lm.num_layers + 1])


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pooling_is_padding_invariant(tiny_lm, pooling):
    right = tokenize(tiny_lm, TEXTS, 32, padding_side="right")
    left = tokenize(tiny_lm, TEXTS, 32, padding_side="left")
    assert not torch.equal(right["attention_mask"], left["attention_mask"])  # padding really differs
    layers = list(range(tiny_lm.num_layers + 1))
    sr = layer_token_states(tiny_lm, right["input_ids"], right["attention_mask"], layers)
    sl = layer_token_states(tiny_lm, left["input_ids"], left["attention_mask"], layers)
    for layer in layers:
        torch.testing.assert_close(pool(sr[layer], right["attention_mask"], pooling),
                                   pool(sl[layer], left["attention_mask"], pooling), atol=1e-5, rtol=1e-4)
    # and a padded text equals the same text encoded alone
    alone = tokenize(tiny_lm, TEXTS[1:2], 32)
    sa = layer_token_states(tiny_lm, alone["input_ids"], alone["attention_mask"], layers)
    torch.testing.assert_close(pool(sa[layers[-1]], alone["attention_mask"], pooling)[0],
                               pool(sr[layers[-1]], right["attention_mask"], pooling)[1], atol=1e-5, rtol=1e-4)


def test_pool_hand_computed_and_nan_safe():
    states = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [float("nan"), 9.0]],
                           [[float("inf"), 5.0], [2.0, 2.0], [4.0, 6.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])  # row 0 right-padded, row 1 left-padded
    torch.testing.assert_close(pool(states, mask, "mean"), torch.tensor([[2.0, 1.0], [3.0, 4.0]]))
    torch.testing.assert_close(pool(states, mask, "last"), torch.tensor([[3.0, 2.0], [4.0, 6.0]]))
    with pytest.raises(ValueError, match="pooling"):
        pool(states, mask, "max")


def test_alignment_uniformity_hand_computed():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert alignment(x, x) == pytest.approx(0.0)
    assert alignment(x, x[::-1]) == pytest.approx(2.0)
    assert uniformity(x) == pytest.approx(-4.0)  # ||e1 - e2||^2 = 2 -> log exp(-4)
    y = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # distinct ordered pairs: 2 with distance 0, 4 with distance 2 -> log((2 + 4 e^-4) / 6)
    assert uniformity(y) == pytest.approx(math.log((2 + 4 * math.exp(-4)) / 6))


def test_analyze_layers_report_and_plot(tiny_lm, tmp_path):
    pairs = [("what causes lung cancer", "smoking causes lung cancer"), ("how do cells divide", "cells divide by mitosis"),
             ("does aspirin help the heart", "aspirin reduces the risk of heart attack")]
    unif = [t for p in pairs for t in p] + ["sleep affects memory consolidation"]
    report = analyze_layers(tiny_lm, pairs, unif, pooling="mean", max_length=32, batch_size=2)
    assert len(report.alignment) == len(report.uniformity) == tiny_lm.num_layers + 1
    # chosen among the transformer layers 1..L; the embedding layer only in the ablation
    assert report.align_layer == 1 + int(np.argmin(report.alignment[1:]))
    assert report.unif_layer == 1 + int(np.argmin(report.uniformity[1:]))
    assert report.extra["with_embeddings"] == [int(np.argmin(report.alignment)), int(np.argmin(report.uniformity))]
    ablation = analyze_layers(tiny_lm, pairs, unif, pooling="mean", max_length=32, batch_size=2,
                              include_embeddings=True)
    assert [ablation.align_layer, ablation.unif_layer] == report.extra["with_embeddings"]
    # the numbers are the formulas applied to the pooled vectors
    vecs = pooled_layer_vectors(tiny_lm, [q for q, _ in pairs] + [d for _, d in pairs], [1], max_length=32)[1]
    assert report.alignment[1] == pytest.approx(alignment(vecs[:3], vecs[3:]), rel=1e-5)
    report.write_json(tmp_path / "r.json")
    assert LayerReport.read_json(tmp_path / "r.json") == report
    from pyserini_qpeft.errors import InputError

    for text, message in (("not json", "cannot read the layer report"), ('{"model": {}}', "not a layer report"),
                          ("[1, 2]", "not a layer report")):  # a damaged or foreign --analysis file: exit 3, named
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InputError, match=f"bad.json: {message}"):
            LayerReport.read_json(tmp_path / "bad.json")
    plot_report(report, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("bad", [{"pooling": "max"}, {"num_blocks": 0}, {"temperature": 0.0}, {"dim": 30},
                                 {"align_layer": -1}, {"dropout": 1.0}])
def test_config_validation_names_bad_value(bad):
    kwargs = {"align_layer": 1, "unif_layer": 2, **bad}
    with pytest.raises(ValueError) as info:
        LMORTConfig(**kwargs)
    assert str(list(bad.values())[0]) in str(info.value) or list(bad)[0] in str(info.value)


def _tuner(lm, **kw):
    config = LMORTConfig(align_layer=1, unif_layer=2, dim=32, num_heads=4, ffn_dim=64, dropout=0.0, **kw)
    torch.manual_seed(0)
    return config, LMORTTuner(config, lm.hidden_size)


def test_tuner_shapes_and_norm(tiny_lm):
    config, tuner = _tuner(tiny_lm, out_dim=16)
    model = LMORTModel(tiny_lm, tuner, config)
    vecs = model.encode_batch(TEXTS)
    assert vecs.shape == (len(TEXTS), 16)
    torch.testing.assert_close(vecs.norm(dim=-1), torch.ones(len(TEXTS)))
    # padding must not change a text's vector
    torch.testing.assert_close(model.encode_batch(TEXTS[1:2])[0], vecs[1], atol=1e-5, rtol=1e-4)


def test_checkpoint_roundtrip_and_only_tuner_weights(tiny_lm, tmp_path):
    from safetensors.torch import load_file

    config, tuner = _tuner(tiny_lm)
    before = LMORTModel(tiny_lm, tuner, config).encode_batch(TEXTS)
    save_lmort(tmp_path / "ckpt", tuner, config, tiny_lm.identity())
    meta = read_lmort_meta(tmp_path / "ckpt")
    assert meta["module_type"] == "lmort" and meta["base_model"] == tiny_lm.identity()
    saved = load_file(str(tmp_path / "ckpt" / "lmort_model.safetensors"))
    assert sum(v.numel() for v in saved.values()) == tuner.num_parameters()
    assert not any(k.startswith(("model.", "lm_head")) for k in saved)
    loaded = load_lmort(tmp_path / "ckpt", tiny_lm)
    torch.testing.assert_close(loaded.encode_batch(TEXTS), before)


def test_checkpoint_refuses_other_base_model(tiny_lm, tmp_path):
    from conftest import build_tiny_lm

    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig

    config, tuner = _tuner(tiny_lm)
    save_lmort(tmp_path / "ckpt", tuner, config, tiny_lm.identity())
    other = FrozenLM.load(LMConfig(model=str(build_tiny_lm(tmp_path / "other", seed=1)), device="cpu", dtype="fp32"))
    with pytest.raises(ModelError, match="trained on base model"):
        load_lmort(tmp_path / "ckpt", other)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "lmort_config.json").write_text(json.dumps({"module_type": "qpeft"}))
    with pytest.raises(ModelError, match="module_type"):
        load_lmort(tmp_path / "bad", tiny_lm)
    # a config that parses but cannot be built (no config, an unknown field of a newer version, bad heads): exit 6
    meta_path = tmp_path / "ckpt" / "lmort_config.json"
    meta = json.loads(meta_path.read_text())
    for broken in ({k: v for k, v in meta.items() if k != "config"}, {**meta, "config": {**meta["config"], "x": 1}},
                   {**meta, "config": {**meta["config"], "num_heads": 5}}):
        meta_path.write_text(json.dumps(broken))
        with pytest.raises(ModelError, match="holds no usable tuner config"):
            load_lmort(tmp_path / "ckpt", tiny_lm)



def test_checkpoint_weights_checked_like_qpeft_ones(tiny_lm, tmp_path):
    """LMORT weights go through the same reader as Q-PEFT's (artifacts.load_weights): a missing file, garbage,
    a missing key, a wrong shape and NaN each give a ModelError naming the problem."""
    from safetensors.torch import load_file, save_file

    config, tuner = _tuner(tiny_lm)
    save_lmort(tmp_path / "ckpt", tuner, config, tiny_lm.identity())
    weights = tmp_path / "ckpt" / "lmort_model.safetensors"
    good = load_file(str(weights))
    name = sorted(good)[0]
    cases = [({k: v for k, v in good.items() if k != name}, f"missing \\['{name}'\\]"),
             ({**good, "extra": torch.zeros(1)}, "unexpected \\['extra'\\]"),
             ({**good, name: torch.zeros(*good[name].shape, 2)}, f"{name} has shape"),
             ({**good, name: torch.full_like(good[name], float("nan"))}, "NaN or Inf")]
    for state, message in cases:
        save_file(state, str(weights))
        with pytest.raises(ModelError, match=message):
            load_lmort(tmp_path / "ckpt", tiny_lm)
    weights.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="corrupt weights"):
        load_lmort(tmp_path / "ckpt", tiny_lm)
    weights.unlink()
    with pytest.raises(ModelError, match="weights file lmort_model.safetensors is missing"):
        load_lmort(tmp_path / "ckpt", tiny_lm)

def _negatives_run(path):
    from pyserini_qpeft.types import Hit, Run

    Run({"q1": [Hit("d2", 3.0), Hit("d1", 2.0), Hit("d5", 1.0)],
         "q2": [Hit("d3", 3.0), Hit("d2", 2.0), Hit("d6", 1.0)]}).write(path)
    return path


def test_lmort_examples_drop_judged_docs_from_negatives():
    from pyserini_qpeft.lmort.step import LMORTTrainConfig
    from pyserini_qpeft.training.data import build_examples
    from pyserini_qpeft.types import Hit, Run

    run = Run({"q1": [Hit("d2", 3.0), Hit("d1", 2.0), Hit("d9", 1.7), Hit("d5", 1.0)]})
    policy = LMORTTrainConfig.default("negative_policy")
    assert policy == "unjudged"
    ex, _ = build_examples({"q1": "a", "q2": "b"}, {"q1": {"d1": 1, "d9": 0}, "q2": {"d7": 1}}, run,
                           {d: d for d in ("d1", "d2", "d5", "d7", "d9")}, negative_depth=10,
                           negative_policy=policy, require_negative=False)
    # d9 is judged (non-relevant) and d1 relevant: neither is a negative; q2 is kept for in-batch negatives
    assert [(e.qid, e.positives, e.negatives) for e in ex] == [("q1", ("d1",), ("d2", "d5")), ("q2", ("d7",), ())]


def test_cli_analyze_train_resume_encode_search(tiny_lm_path, toy_beir, tmp_path, monkeypatch):
    """The whole LMORT path on the tiny model: analyze -> train -> resume -> encode -> dense search."""
    from click.testing import CliRunner

    from pyserini_qpeft.cli.encode import encode
    from pyserini_qpeft.cli.lmort import lmort
    from pyserini_qpeft.search.encoders import dense_search
    from pyserini_qpeft.types import Query

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    common = ["--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "--quiet"]
    res = runner.invoke(lmort, ["analyze", "--dataset", str(toy_beir), "--max-length", "32", "--output", "an", *common])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert (tmp_path / "an" / "layers.png").is_file()
    negatives = _negatives_run(tmp_path / "neg.trec")
    train_args = ["train", "--dataset", str(toy_beir), "--negatives", str(negatives), "--layers", "auto",
                  "--analysis", "an/layer_report.json", "--output", "ckpt", "--batch-size", "2", "--dim", "32",
                  "--ffn-dim", "64", "--max-length", "32", "--dev-fraction", "0", "--pseudo-queries", "1",
                  "--pseudo-epochs", "1", *common]
    res = runner.invoke(lmort, [*train_args, "--epochs", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["layers"] == [report["align_layer"], report["unif_layer"]]
    # a second run into the same folder must ask for --resume; with it, training continues to epoch 2 -- but not
    # under the default linear schedule, whose learning rate follows the planned steps (that would restart its decay)
    res = runner.invoke(lmort, [*train_args, "--epochs", "2"])
    assert res.exit_code != 0
    res = runner.invoke(lmort, [*train_args, "--epochs", "2", "--resume"])
    assert res.exit_code != 0 and "follows its planned steps" in str(res.exception), res.output  # exit 3 via main
    state = json.loads((tmp_path / "ckpt" / "trainer_state.json").read_text())
    state["train_config"].update(lr_schedule="constant", warmup_ratio=0.0)  # as a constant-schedule run records it
    (tmp_path / "ckpt" / "trainer_state.json").write_text(json.dumps(state))
    res = runner.invoke(lmort, [*train_args, "--epochs", "2", "--resume", "--lr-schedule", "constant",
                                "--warmup-ratio", "0"])
    assert res.exit_code == 0, res.output
    state = json.loads((tmp_path / "ckpt" / "trainer_state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2] and state["best_epoch"] in (1, 2)
    # --resume with other layers: named as such before the state cache is touched (the cache took the blame)
    other = [a if a != "auto" else "1,1" for a in train_args if a not in ("--analysis", "an/layer_report.json")]
    res = runner.invoke(lmort, [*other, "--epochs", "3", "--resume", "--lr-schedule", "constant", "--warmup-ratio", "0"])
    assert re.search(r"--resume with other tuner settings than this folder's run: .*(align|unif)_layer",
                     str(res.exception)), res.output
    for epoch in (1, 2):  # the shared layout: epoch-N/ with optimizer state, best/ without
        assert (tmp_path / "ckpt" / f"epoch-{epoch}" / "lmort_model.safetensors").is_file()
        assert (tmp_path / "ckpt" / f"epoch-{epoch}" / "optimizer.json").is_file()
    assert (tmp_path / "ckpt" / "best" / "lmort_config.json").is_file()
    assert not (tmp_path / "ckpt" / "best" / "optimizer.safetensors").exists()
    assert not (tmp_path / "ckpt" / "lmort_config.json").exists()
    best_meta = read_lmort_meta(tmp_path / "ckpt")  # the output folder resolves to best/
    assert best_meta["training"]["epoch"] == state["best_epoch"] and best_meta["lm_model"] == str(tiny_lm_path)
    assert best_meta["command"].startswith("pyserini-qpeft ")  # the group invoked directly: sys.argv's command
    assert best_meta["training"]["train_config"]["pseudo_queries"] == 1 and best_meta["pseudo_pairs"] == 5
    assert best_meta["training"]["train_config"]["pseudo_epochs"] == 1
    assert list((tmp_path / "ckpt" / "state-cache").glob("shard-*.safetensors"))
    # a model card says what trained the tuner, as Q-PEFT's does
    card = (tmp_path / "ckpt" / "best" / "README.md").read_text()
    assert f"LMORT tuner over layers {report['align_layer']} (alignment)" in card and best_meta["command"] in card
    assert f"- dataset: `{best_meta['dataset']}`, split `train`" in card and str(negatives.resolve()) in card
    assert "- 2 training queries" in card and "- seed 13 (dev carve seed 13)" in card and "lmort:PATH" in card

    res = runner.invoke(encode, ["--encoder", "lmort:ckpt", "--dataset", str(toy_beir), "--output", "idx",
                                 "--device", "cpu", "--dtype", "fp32", "--quiet"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["encoder"] == "lmort" and meta["num_docs"] == 6 and meta["dim"] == 32
    assert (tmp_path / "idx" / "docid").read_text().split() == ["d1", "d2", "d3", "d4", "d5", "d6"]
    run = dense_search(tmp_path / "idx", [Query("q3", "how do cells divide"), Query("q4", "vitamin d")], k=3,
                       progress=False, device="cpu", dtype="fp32")
    assert run.qids() == ["q3", "q4"] and all(len(run[q]) == 3 for q in run)
    # the query vectors come from the checkpoint: rebuild by hand and compare scores
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
    from pyserini_qpeft.search.encoders import search_vectors

    lm = FrozenLM.load(LMConfig(model=str(tiny_lm_path), device="cpu", dtype="fp32"))
    qv = load_lmort(tmp_path / "ckpt", lm).encode_batch(["how do cells divide"]).numpy()
    direct = search_vectors(tmp_path / "idx", ["q3"], qv, k=3)
    assert [h.docid for h in direct["q3"]] == [h.docid for h in run["q3"]]
    assert [h.score for h in direct["q3"]] == pytest.approx([h.score for h in run["q3"]], abs=1e-5)

    # the CLI: --remove-query drops a hit whose docid is the qid from the top --hits, as Pyserini (and our BM25) do
    from pyserini_qpeft.cli.search import search
    from pyserini_qpeft.types import read_run

    (tmp_path / "topics.tsv").write_text("d1\thow do cells divide\nq4\tvitamin d\n")
    res = runner.invoke(search, ["--dense", "--index", "idx", "--topics", "topics.tsv", "--output", "dense.trec",
                                 "--hits", "6", "--remove-query", "--device", "cpu", "--dtype", "fp32", "--quiet"])
    assert res.exit_code == 0, res.output
    cli_run = read_run(tmp_path / "dense.trec")
    assert {q: len(cli_run[q]) for q in cli_run.qids()} == {"d1": 5, "q4": 6}  # all 6 docs; d1's own one dropped
    assert "d1" not in [h.docid for h in cli_run["d1"]]
    # the checkpoint retrained or replaced after the encode: refused, not searched with mismatched query vectors;
    # gone: the message says where it was
    import shutil

    weights = tmp_path / "ckpt" / "best" / "lmort_model.safetensors"
    original = weights.read_bytes()
    shutil.copy(tmp_path / "ckpt" / "epoch-1" / "lmort_model.safetensors", weights)
    if weights.read_bytes() == original:  # best/ was epoch 1: take epoch 2's weights
        shutil.copy(tmp_path / "ckpt" / "epoch-2" / "lmort_model.safetensors", weights)
    with pytest.raises(ModelError, match="whose weights have changed since"):
        dense_search(tmp_path / "idx", [Query("q3", "how do cells divide")], k=3, progress=False, device="cpu",
                     dtype="fp32")
    weights.write_bytes(original)
    (tmp_path / "ckpt").rename(tmp_path / "ckpt-moved")
    with pytest.raises(ModelError, match="which is not there any more.*--query-encoder-checkpoint"):
        dense_search(tmp_path / "idx", [Query("q3", "how do cells divide")], k=3, progress=False, device="cpu",
                     dtype="fp32")
    # moved: searched from its new place (the recorded weights checked), the same hits as before the move
    moved = dense_search(tmp_path / "idx", [Query("q3", "how do cells divide"), Query("q4", "vitamin d")], k=3,
                         progress=False, device="cpu", dtype="fp32", checkpoints=[tmp_path / "ckpt-moved"])
    assert [(q, [(h.docid, h.score) for h in moved[q]]) for q in moved.qids()] == \
        [(q, [(h.docid, h.score) for h in run[q]]) for q in run.qids()]
    res = runner.invoke(search, ["--dense", "--index", "idx", "--topics", "topics.tsv", "--output", "moved.trec",
                                 "--hits", "6", "--remove-query", "--query-encoder-checkpoint", "ckpt-moved",
                                 "--device", "cpu", "--dtype", "fp32", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "moved.trec").read_bytes() == (tmp_path / "dense.trec").read_bytes()
    # another checkpoint's weights, the wrong count, or BM25: refused
    other = next(tmp_path / "ckpt-moved" / f"epoch-{e}" for e in (1, 2)
                 if (tmp_path / "ckpt-moved" / f"epoch-{e}" / "lmort_model.safetensors").read_bytes() != original)
    with pytest.raises(ModelError, match="does not hold the weights"):
        dense_search(tmp_path / "idx", [Query("q3", "x")], k=3, progress=False, device="cpu", dtype="fp32",
                     checkpoints=[other])
    from pyserini_qpeft.errors import InputError

    with pytest.raises(InputError, match="1 LMORT checkpoint"):
        dense_search(tmp_path / "idx", [Query("q3", "x")], k=3, progress=False, device="cpu", dtype="fp32",
                     checkpoints=[tmp_path / "ckpt-moved"] * 2)
    res = runner.invoke(search, ["--bm25", "--index", "idx", "--topics", "topics.tsv", "--output", "x.trec",
                                 "--query-encoder-checkpoint", "ckpt-moved"])
    assert res.exit_code == 2 and "--query-encoder-checkpoint is for --dense" in res.output


def test_a_state_cache_is_built_by_one_job_at_a_time(tiny_lm, tmp_path):
    """Two jobs adding to one cache (seeds share it) both appended shard 0 and indexed the other's ids; a second
    build now waits for the first's lock, then adds only what is still missing after the first's shards."""
    import fcntl
    import threading
    import time

    from pyserini_qpeft.lmort.cache import StateCache
    from pyserini_qpeft.training.parallel import SINGLE

    key = {"model": tiny_lm.identity(), "layers": [1, 2], "max_length": 32}
    (tmp_path / "c").mkdir()
    held = open(tmp_path / "c" / ".build.lock", "a")  # another job, building
    fcntl.flock(held.fileno(), fcntl.LOCK_EX)
    done = threading.Event()
    cache = StateCache(tmp_path / "c", key)

    def build():
        cache.build(tiny_lm, {f"t{i}": t for i, t in enumerate(TEXTS)}, (1, 2), 32, batch_size=3, progress=False)
        done.set()

    worker = threading.Thread(target=build)
    worker.start()
    time.sleep(1.0)
    assert not done.is_set() and not list((tmp_path / "c").glob("shard-*"))  # waits, writes nothing
    other = StateCache(tmp_path / "c", key)  # meanwhile the other job's shard lands (it holds the lock)
    other._build(tiny_lm, {"t0": TEXTS[0]}, (1, 2), 32, 3, 512, False, SINGLE)
    held.close()
    worker.join(60)
    assert done.is_set()
    shards = sorted(p.name for p in (tmp_path / "c").glob("shard-*"))
    assert shards == ["shard-00000.safetensors", "shard-00001.safetensors"]  # the waiting job added after it
    fresh = StateCache(tmp_path / "c", key)
    fresh.load()
    assert set(fresh.entries) == {f"t{i}" for i in range(len(TEXTS))} and fresh.entries["t0"][0] == 0


def test_state_cache_reuse_and_key_check(tiny_lm, tmp_path, monkeypatch):
    from pyserini_qpeft.lmort import cache as lmort_cache
    from pyserini_qpeft.lmort.cache import StateCache

    texts = {f"t{i}": t for i, t in enumerate(TEXTS)}
    key = {"model": tiny_lm.identity(), "layers": [1, 2], "max_length": 32}
    cache = StateCache(tmp_path / "c", key)
    cache.build(tiny_lm, texts, (1, 2), 32, batch_size=3, shard_size=2, progress=False)
    assert len(list((tmp_path / "c").glob("shard-*.safetensors"))) == 2
    unif, align, mask = cache.batch(["t1", "t2"])
    batch = tokenize(tiny_lm, [TEXTS[1], TEXTS[2]], 32)
    states = layer_token_states(tiny_lm, batch["input_ids"], batch["attention_mask"], [1, 2])
    assert torch.equal(mask, batch["attention_mask"].cpu())
    m = mask.bool()
    # stored in bf16: equal to the LM's states up to bf16 rounding
    torch.testing.assert_close(unif[m], states[2][m].bfloat16().float())
    torch.testing.assert_close(align[m], states[1][m].bfloat16().float())
    # a rebuild with the same key computes nothing
    monkeypatch.setattr(lmort_cache, "layer_token_states", lambda *a, **k: pytest.fail("recomputed a cached text"))
    again = StateCache(tmp_path / "c", key)
    again.build(tiny_lm, texts, (1, 2), 32, progress=False)
    assert set(again.entries) == set(texts)
    with pytest.raises(ModelError, match="state cache was built with"):
        StateCache(tmp_path / "c", {**key, "max_length": 64}).load()
    # a stored id whose text changed is refused even when its token count did not (both cut at 32 tokens)
    monkeypatch.undo()
    StateCache(tmp_path / "c3", key).build(tiny_lm, {"t9": " ".join(["lung cancer risk"] * 40)}, (1, 2), 32,
                                           progress=False)
    with pytest.raises(ModelError, match="stored from another text than the one given for it now"):
        StateCache(tmp_path / "c3", key).build(tiny_lm, {"t9": " ".join(["heart attack risk"] * 40), "t10": "x"},
                                               (1, 2), 32, progress=False)
    # a cache written before token digests were kept (index.json without "tokens") is checked by token count
    legacy = tmp_path / "c4"
    StateCache(legacy, key).build(tiny_lm, {"t9": "lung cancer"}, (1, 2), 32, progress=False)
    index = json.loads((legacy / "index.json").read_text())
    del index["tokens"]
    (legacy / "index.json").write_text(json.dumps(index))
    StateCache(legacy, key).build(tiny_lm, {"t9": "lung cancer", "t10": "x"}, (1, 2), 32, progress=False)
    with pytest.raises(ModelError, match="stored from another text than the one given for it now"):
        StateCache(legacy, key).build(tiny_lm, {"t9": "lung cancer risk in smokers", "t11": "y"}, (1, 2), 32,
                                      progress=False)


def test_state_cache_keeps_an_fp16_lms_states_in_fp16(tiny_lm, tmp_path, monkeypatch):
    """bf16 halves an fp32 LM's cache; an fp16 LM's states are stored as it computes them (fp16)."""
    from pyserini_qpeft.lmort.cache import StateCache

    key = {"model": tiny_lm.identity(), "layers": [1, 2], "max_length": 32}
    StateCache(tmp_path / "fp32", key).build(tiny_lm, {"t0": TEXTS[0]}, (1, 2), 32, progress=False)
    assert StateCache(tmp_path / "fp32", key).store_dtype() is None  # nothing loaded yet
    loaded = StateCache(tmp_path / "fp32", key)
    loaded.load()
    assert loaded.store_dtype() == "bf16"
    monkeypatch.setattr(tiny_lm, "dtype", torch.float16)
    half = StateCache(tmp_path / "fp16", key)
    half.build(tiny_lm, {"t0": TEXTS[0]}, (1, 2), 32, progress=False)
    assert half.store_dtype() == "fp16"


def test_info_nce_masks_other_positives():
    from pyserini_qpeft.lmort.step import info_nce

    q = torch.tensor([[1.0, 0.0]])
    d = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    invalid = torch.tensor([[False, True, False]])
    loss = info_nce(q, d, torch.tensor([0]), invalid, temperature=1.0)
    assert float(loss) == pytest.approx(-math.log(math.e / (math.e + 1.0)))
    unmasked = info_nce(q, d, torch.tensor([0]), torch.zeros_like(invalid), temperature=1.0)
    assert float(unmasked) > float(loss)
    # logits are similarities divided by the temperature (mutant audit U: L09)
    sharp = info_nce(q, d, torch.tensor([0]), invalid, temperature=0.5)
    assert float(sharp) == pytest.approx(math.log1p(math.exp(-1.0 / 0.5)))


def test_analysis_pairs_are_the_relevant_judgments_only(tmp_path):
    """`lmort analyze` measures alignment on (query, relevant document) pairs: a grade-0 judgment is no pair."""
    from conftest import write_beir
    from pyserini_qpeft.data import BeirDataset
    from pyserini_qpeft.lmort.analysis import training_pairs

    root = write_beir(tmp_path / "toy")
    with open(root / "qrels" / "train.tsv", "a", newline="") as qrels:
        qrels.write("q1\td3\t0\r\n")
    dataset = BeirDataset(root)
    pairs = training_pairs(dataset, "train", None, 0)
    corpus = dataset.load_corpus()
    assert len(pairs) == 2 and (dataset.queries()["q1"], corpus["d3"].contents()) not in pairs


def test_mean_pairwise_distance_hand_computed():
    from pyserini_qpeft.lmort.analysis import mean_pairwise_distance

    y = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert mean_pairwise_distance(y) == pytest.approx(8 / 6)


def test_train_lmort_shared_split_resume_and_dev_metrics(tiny_lm, tmp_path, monkeypatch):
    """LMORT through the shared loop: split_dev's dev set, resume == uninterrupted (dropout on), dev metrics equal
    evaluation.evaluate on the step's dev run, the output folder loads as its best/."""
    import dataclasses

    from conftest import TOY_CORPUS, TOY_QUERIES

    from pyserini_qpeft.evaluation import evaluate
    from pyserini_qpeft.lmort.cache import StateCache
    from pyserini_qpeft.lmort.step import LMORTStep, LMORTTrainConfig
    from pyserini_qpeft.lmort.train import train_lmort
    from pyserini_qpeft.training.data import build_examples, split_dev
    from pyserini_qpeft.types import Hit, Run

    corpus = {d["_id"]: d["text"] for d in TOY_CORPUS}
    queries = {q["_id"]: q["text"] for q in TOY_QUERIES}
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(queries, start=1)}
    run = Run({q: [Hit(d, 6.0 - j) for j, d in enumerate(corpus)] for q in queries})
    examples, _ = build_examples(queries, qrels, run, corpus, negative_policy="unjudged", require_negative=False)
    config = LMORTConfig(align_layer=1, unif_layer=2, dim=32, num_heads=4, ffn_dim=64, max_length=32)
    kw = {"batch_size": 2, "dev_size": 1, "lr": 1e-2}
    cache_dir = tmp_path / "cache"

    def run_train(out, epochs, resume=False):
        return train_lmort(tiny_lm, examples, corpus, config, LMORTTrainConfig(epochs=epochs, **kw), out,
                           cache_dir=cache_dir, resume=resume, progress=False)

    full = run_train(tmp_path / "a", 3)
    # interrupt a same-config run while it saves epoch 2 (the linear LR decay depends on the planned epochs, so
    # an interrupted run, not a shorter one, is what resume must reproduce)
    original_save, calls = LMORTStep.save, []

    def crashing_save(self, folder, extra):
        calls.append(folder)
        if len(calls) == 2:
            raise KeyboardInterrupt
        original_save(self, folder, extra)

    monkeypatch.setattr(LMORTStep, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        run_train(tmp_path / "b", 3)
    monkeypatch.undo()
    resumed = run_train(tmp_path / "b", 3, resume=True)
    assert [h["train"] for h in full["history"]] == [h["train"] for h in resumed["history"]]
    assert [h["dev"] for h in full["history"]] == [h["dev"] for h in resumed["history"]]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "epoch-3" / "lmort_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "epoch-3" / "lmort_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    train_set, dev_set = split_dev(examples, 1, LMORTTrainConfig.default("seed"))
    assert full["dev_queries"] == 1 and full["history"][0]["dev"]["queries"] == 1
    # the best tuner, reloaded through the output folder, reproduces its recorded dev metrics
    model = load_lmort(tmp_path / "a", tiny_lm)
    pool = sorted({d for e in dev_set for d in (*e.positives, *e.negatives)})
    cache = StateCache(cache_dir, {"model": tiny_lm.identity(), "layers": [1, 2], "max_length": 32})
    cache.load()
    step = LMORTStep(tiny_lm, model.tuner, config, cache, LMORTTrainConfig(**kw), pool)
    dev_run = step.dev_run(dev_set)
    want = evaluate(dev_run, {e.qid: {d: 1 for d in e.positives} for e in dev_set}, list(step.dev_metrics))
    best = next(h for h in full["history"] if h["epoch"] == full["best_epoch"])
    assert {k: best["dev"][k] for k in want} == want
    # without hard negatives the dev pool is every training positive, not the dev query's own positive alone
    # (which every epoch ranked first: best/ was always epoch 1)
    bare = [dataclasses.replace(e, negatives=()) for e in examples]
    summary = train_lmort(tiny_lm, bare, corpus, config, LMORTTrainConfig(epochs=1, **kw), tmp_path / "bare",
                          cache_dir=cache_dir, progress=False)
    assert summary["dev_pool"] == len({d for e in examples for d in e.positives}) > 1


def _index_vectors(folder):
    import faiss

    index = faiss.read_index(str(folder / "index"))
    return index.reconstruct_n(0, index.ntotal)


def test_encode_from_state_cache(tiny_lm_path, toy_beir, tmp_path, monkeypatch):
    """`encode --state-cache`: documents come from the states training stored (bf16), the LM runs only for the
    documents not stored yet, and the vectors are what training's own cached encoding computes."""
    from click.testing import CliRunner

    from pyserini_qpeft.cli.encode import encode
    from pyserini_qpeft.cli.lmort import lmort
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
    from pyserini_qpeft.lmort import cache as lmort_cache
    from pyserini_qpeft.lmort import tuner as lmort_tuner
    from pyserini_qpeft.lmort.cache import StateCache, encode_cached, state_key
    from pyserini_qpeft.search.encoders import dense_search
    from pyserini_qpeft.types import Query

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    device = ["--device", "cpu", "--dtype", "fp32", "--quiet"]
    res = runner.invoke(lmort, ["train", "--dataset", str(toy_beir), "--negatives", str(_negatives_run(tmp_path / "neg.trec")),
                                "--layers", "1,2", "--output", "ckpt", "--batch-size", "2", "--dim", "32", "--ffn-dim",
                                "64", "--max-length", "32", "--dev-fraction", "0", "--epochs", "1", "--cache-dir", "states",
                                "--model", str(tiny_lm_path), *device])
    assert res.exit_code == 0, res.output
    stored = {i for shard in json.loads((tmp_path / "states" / "index.json").read_text())["shards"] for i in shard}
    missing = {f"d{k}" for k in range(1, 7)} - {i[2:] for i in stored if i.startswith("d:")}
    assert missing  # training stored only the documents its examples use

    computed = []
    real = lmort_cache.layer_token_states

    def counting(lm, input_ids, attention_mask, layers):
        computed.append(int(input_ids.shape[0]))
        return real(lm, input_ids, attention_mask, layers)

    def no_live_encode(*args, **kwargs):
        raise AssertionError("a document was encoded live")

    monkeypatch.setattr(lmort_cache, "layer_token_states", counting)
    monkeypatch.setattr(lmort_tuner, "layer_token_states", no_live_encode)
    args = ["--encoder", "lmort:ckpt", "--dataset", str(toy_beir), "--state-cache", "states", "--batch-size", "4", *device]
    res = runner.invoke(encode, [*args, "--output", "cached"])
    assert res.exit_code == 0, res.output
    assert sum(computed) == len(missing)  # the LM ran for the unstored documents only
    computed.clear()
    res = runner.invoke(encode, [*args, "--output", "cached2"])
    assert res.exit_code == 0, res.output
    assert computed == []  # now every document is stored
    meta = json.loads((tmp_path / "cached" / "meta.json").read_text())
    assert meta["doc_states"] == {"cache": str((tmp_path / "states").resolve()), "dtype": "bf16"}
    monkeypatch.setattr(lmort_tuner, "layer_token_states", real)

    # the index holds exactly what training's cached encoding gives (batching aside) ...
    lm = FrozenLM.load(LMConfig(model=str(tiny_lm_path), device="cpu", dtype="fp32"))
    model = load_lmort(tmp_path / "ckpt", lm)
    states = StateCache(tmp_path / "states", state_key(lm, model.config.layers, model.config.max_length))
    states.load()
    docids = (tmp_path / "cached" / "docid").read_text().split()
    expected = encode_cached(model.tuner, states, [f"d:{d}" for d in docids]).numpy()
    np.testing.assert_allclose(_index_vectors(tmp_path / "cached"), expected, atol=1e-6, rtol=0)
    assert np.array_equal(_index_vectors(tmp_path / "cached"), _index_vectors(tmp_path / "cached2"))
    # ... and differs from a live (fp32-state) encode only by the bf16 rounding of the states
    res = runner.invoke(encode, ["--encoder", "lmort:ckpt", "--dataset", str(toy_beir), "--batch-size", "4",
                                 "--output", "live", *device])
    assert res.exit_code == 0, res.output
    live, cached = _index_vectors(tmp_path / "live"), _index_vectors(tmp_path / "cached")
    assert 0 < np.abs(live - cached).max() < 0.02
    assert (live * cached).sum(axis=1).min() > 0.999  # unit vectors: cosine
    run = dense_search(tmp_path / "cached", [Query("q3", "how do cells divide")], k=3, progress=False, device="cpu",
                       dtype="fp32")
    assert len(run["q3"]) == 3

    # usage errors, before any work
    res = runner.invoke(encode, ["--encoder", "minilm", "--dataset", str(toy_beir), "--state-cache", "states",
                                 "--output", "m", *device])
    assert res.exit_code == 2 and "for the lmort encoder" in res.output
    res = runner.invoke(encode, [*args, "--output", "s", "--shard-id", "0", "--shard-num", "2"])
    assert res.exit_code == 2 and "one process" in res.output
    # a folder filled from another corpus is refused when a docid's stored length differs from this corpus' text
    corpus = toy_beir / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "text": first["text"] + " and a few more words here"})
    corpus.write_text("\n".join(lines) + "\n")
    computed.clear()
    res = runner.invoke(encode, [*args, "--output", "other"])
    assert isinstance(res.exception, ModelError) and "another dataset" in str(res.exception)
    assert computed == [] and not (tmp_path / "other").exists()  # refused before any work


def test_pseudo_query_is_a_long_enough_sentence_fixed_by_docid_else_the_title():
    from pyserini_qpeft.data.corpus import Document
    from pyserini_qpeft.lmort.pseudo import PseudoPair, pseudo_pairs, pseudo_query, split_sentences

    text = ("Short one. We measured the effect of aspirin on heart attacks in adults. "
            "(Results) Aspirin lowered the risk by a third in this cohort! Too short.")
    assert split_sentences(text) == ["Short one.", "We measured the effect of aspirin on heart attacks in adults.",
                                     "(Results) Aspirin lowered the risk by a third in this cohort!", "Too short."]
    long_enough = split_sentences(text)[1:3]
    picked = {pseudo_query(f"doc{i}", "Title", text) for i in range(20)}
    assert picked == set(long_enough)  # only sentences of >= 6 words, and the docid decides which
    assert pseudo_query("doc3", "Title", text) == pseudo_query("doc3", "Other title", text)
    assert pseudo_query("d", "  A title ", "too short") == "A title"
    assert pseudo_query("d", "", "too short") is None
    corpus = {"a": Document("a", "Lung cancer", "smoking causes it"), "b": Document("b", "", "tiny"),
              "c": Document("c", "T", text), "d": Document("d", "", "Only the title could be asked for here."),
              "e": Document("e", "Title only", "")}
    pairs = pseudo_pairs(corpus)
    assert list(pairs) == ["a", "c", "d", "e"]
    assert pairs["a"] == PseudoPair("Lung cancer", "smoking causes it")  # the title: the rest is the text
    sentence = pairs["c"].query  # a sentence: the rest is the title and the other sentences
    assert pairs["c"].rest == "T " + " ".join(x for x in split_sentences(text) if x != sentence)
    assert pairs["d"] == PseudoPair("Only the title could be asked for here.", corpus["d"].contents())
    assert pairs["e"] == PseudoPair("Title only", corpus["e"].contents())  # nothing else: the whole document


def test_pseudo_pairs_join_each_step_and_zero_leaves_training_unchanged(tiny_lm, tmp_path):
    """--pseudo-queries 0 trains bit for bit as before even when pseudo-queries are given; > 0 caches ``p:`` states,
    adds the pairs to every step and changes the tuner; ``rest`` positives are cached as ``r:`` texts, and a
    document's two forms are never each other's negatives; bad settings are refused."""
    from conftest import TOY_CORPUS, TOY_QUERIES
    from safetensors.torch import load_file

    from pyserini_qpeft.data.corpus import Document
    from pyserini_qpeft.errors import InputError
    from pyserini_qpeft.lmort.cache import StateCache
    from pyserini_qpeft.lmort.pseudo import PseudoPair, pseudo_pairs
    from pyserini_qpeft.lmort.step import LMORTTrainConfig
    from pyserini_qpeft.lmort.train import train_lmort
    from pyserini_qpeft.training.data import build_examples
    from pyserini_qpeft.types import Hit, Run

    docs = {d["_id"]: Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS}
    corpus = {d: doc.contents() for d, doc in docs.items()}
    pseudo = pseudo_pairs(docs)
    assert sorted(pseudo) == ["d1", "d2", "d3", "d4", "d6"]  # d5 has neither a long sentence nor a title
    queries = {q["_id"]: q["text"] for q in TOY_QUERIES}
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(queries, start=1)}
    run = Run({q: [Hit(d, 6.0 - j) for j, d in enumerate(corpus)] for q in queries})
    examples, _ = build_examples(queries, qrels, run, corpus, negative_policy="unjudged", require_negative=False)
    config = LMORTConfig(align_layer=1, unif_layer=2, dim=32, num_heads=4, ffn_dim=64, max_length=32)

    def run_train(name, pseudo_per_step, given, positive="document", pseudo_epochs=None):
        train = LMORTTrainConfig(epochs=2, batch_size=2, dev_size=1, lr=1e-2, pseudo_queries=pseudo_per_step,
                                 pseudo_positive=positive, pseudo_epochs=pseudo_epochs)
        summary = train_lmort(tiny_lm, examples, corpus, config, train, tmp_path / name,
                              cache_dir=tmp_path / f"cache-{name}", progress=False, pseudo=given)
        return summary, load_file(str(tmp_path / name / "epoch-2" / "lmort_model.safetensors"))

    plain, plain_w = run_train("plain", 0, None)
    zero, zero_w = run_train("zero", 0, pseudo)
    assert [h["train"] for h in zero["history"]] == [h["train"] for h in plain["history"]]
    assert all(torch.equal(plain_w[k], zero_w[k]) for k in plain_w)
    assert "pseudo_pairs" not in plain and "pseudo_pairs" not in zero
    with_pseudo, pseudo_w = run_train("pseudo", 3, pseudo)
    assert with_pseudo["pseudo_pairs"] == 5 and with_pseudo["dev_queries"] == 1
    assert any(not torch.equal(plain_w[k], pseudo_w[k]) for k in plain_w)
    cache = StateCache(tmp_path / "cache-pseudo", {"model": tiny_lm.identity(), "layers": [1, 2], "max_length": 32})
    cache.load()
    assert all(f"p:{d}" in cache and f"d:{d}" in cache for d in pseudo)
    zero_cache = StateCache(tmp_path / "cache-zero", cache.key)
    zero_cache.load()
    assert zero_cache.entries and not any(key.startswith("p:") for key in zero_cache.entries)
    # --pseudo-epochs: as many as --epochs trains as without it; fewer: epoch 1 as with pairs, epoch 2 without
    _, all_w = run_train("pseudo-e2", 3, pseudo, pseudo_epochs=2)
    assert all(torch.equal(pseudo_w[k], all_w[k]) for k in pseudo_w)
    first, first_w = run_train("pseudo-e1", 3, pseudo, pseudo_epochs=1)
    assert first["history"][0]["train"] == with_pseudo["history"][0]["train"]
    assert first["history"][1]["train"] != with_pseudo["history"][1]["train"]
    assert any(not torch.equal(first_w[k], pseudo_w[k]) for k in pseudo_w)
    from pyserini_qpeft.lmort.tuner import read_lmort_meta

    assert read_lmort_meta(tmp_path / "pseudo-e1" / "epoch-2")["training"]["train_config"]["pseudo_epochs"] == 1
    rest, rest_w = run_train("rest", 3, pseudo, positive="rest")
    assert any(not torch.equal(rest_w[k], pseudo_w[k]) for k in rest_w)
    rest_cache = StateCache(tmp_path / "cache-rest", cache.key)
    rest_cache.load()
    assert all(f"r:{d}" in rest_cache for d in pseudo) and not any(k.startswith("r:") for k in cache.entries)
    assert rest_cache.length("r:d1") < rest_cache.length("d:d1")  # "smoking causes lung cancer" without its title
    with pytest.raises(InputError, match="pseudo-query documents have no text"):
        train_lmort(tiny_lm, examples, corpus, config, LMORTTrainConfig(epochs=1, pseudo_queries=1),
                    tmp_path / "missing", progress=False, pseudo={**pseudo, "d404": PseudoPair("a lost", "document")})
    with pytest.raises(ValueError, match="pseudo_queries"):
        LMORTTrainConfig(pseudo_queries=-1)
    with pytest.raises(ValueError, match="pseudo_positive"):
        LMORTTrainConfig(pseudo_positive="title")
    with pytest.raises(ValueError, match="pseudo_epochs"):
        LMORTTrainConfig(pseudo_epochs=0)

    # A real query's positive drawn as a pseudo pair: its other form is masked for the query and for the pair.
    import pyserini_qpeft.lmort.step as step_module
    from pyserini_qpeft.lmort.step import LMORTStep
    from pyserini_qpeft.lmort.tuner import LMORTTuner

    seen = {}

    def spy(q, d, targets, invalid, temperature):
        seen.update(targets=targets.tolist(), invalid=invalid.tolist())
        return (q.sum() + d.sum()) * 0

    step_module.info_nce, original = spy, step_module.info_nce
    try:
        q1 = next(e for e in examples if e.qid == "q1")  # positive d1, no hard negatives asked for
        step = LMORTStep(tiny_lm, LMORTTuner(config, tiny_lm.hidden_size), config, rest_cache,
                         LMORTTrainConfig(hard_negatives=0, pseudo_queries=1, pseudo_positive="rest"), [],
                         pseudo_ids=["d1"])
        step.step([q1], random.Random(0))
    finally:
        step_module.info_nce = original
    assert seen == {"targets": [0, 1], "invalid": [[False, True], [True, False]]}  # texts d:d1, r:d1


def test_cli_train_lr_schedule_and_eval_every_reach_the_training(tiny_lm_path, toy_beir, tmp_path, monkeypatch):
    """`train lmort --lr-schedule` and `--eval-every` (as `train qpeft`'s): the schedule changes the weights and is
    recorded in the checkpoint; eval-every measures dev inside each epoch and leaves the training unchanged."""
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from pyserini_qpeft.cli.lmort import lmort

    from conftest import TOY_CORPUS, TOY_QUERIES

    from pyserini_qpeft.types import Hit, Run

    monkeypatch.chdir(tmp_path)
    queries = [q["_id"] for q in TOY_QUERIES]  # every toy query a training query: 1 dev, 3 steps per epoch
    rows = "".join(f"{q}\td{i}\t1\r\n" for i, q in enumerate(queries, start=1))
    (toy_beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\r\n" + rows, newline="")
    negatives = tmp_path / "neg.trec"
    Run({q: [Hit(d["_id"], 6.0 - j) for j, d in enumerate(TOY_CORPUS)] for q in queries}).write(negatives)
    args = ["train", "--dataset", str(toy_beir), "--negatives", str(negatives), "--layers", "1,2", "--batch-size", "1",
            "--dim", "32", "--ffn-dim", "64", "--max-length", "32", "--dev-fraction", "0.25", "--epochs", "2",
            "--lr", "1e-2", "--dropout", "0", "--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32",
            "--quiet"]

    def train(name, *extra):
        res = CliRunner().invoke(lmort, [*args, "--output", name, *extra])
        assert res.exit_code == 0, res.output
        state = json.loads((tmp_path / name / "trainer_state.json").read_text())
        return state, load_file(str(tmp_path / name / "epoch-2" / "lmort_model.safetensors"))

    linear, linear_w = train("linear")
    constant, constant_w = train("constant", "--lr-schedule", "constant")
    every, every_w = train("every", "--eval-every", "1")
    assert any(not torch.equal(linear_w[k], constant_w[k]) for k in linear_w)
    assert read_lmort_meta(tmp_path / "constant")["training"]["train_config"]["lr_schedule"] == "constant"
    assert read_lmort_meta(tmp_path / "linear")["training"]["train_config"]["lr_schedule"] == "linear"
    assert all(torch.equal(linear_w[k], every_w[k]) for k in linear_w)
    assert [h["train"] for h in every["history"]] == [h["train"] for h in linear["history"]]
    steps = [h["steps"] for h in every["history"]]
    checks = [c["global_step"] for h in every["history"] for c in h.get("dev_steps", [])]
    assert steps[0] > 1 and checks == [s for e in range(2) for s in range(e * steps[0] + 1, (e + 1) * steps[0])]
    assert all("dev_steps" not in h for h in linear["history"])
    assert read_lmort_meta(tmp_path / "every")["training"]["train_config"]["eval_every"] == 1
    # --pseudo-epochs without --pseudo-queries does nothing: a warning says so (it was accepted silently)
    res = CliRunner().invoke(lmort, [*args, "--output", "inplace", "--pseudo-epochs", "2", "--max-steps", "1"])
    assert "warning: --pseudo-epochs/--pseudo-positive shape the pseudo pairs of --pseudo-queries N" in res.output
    # --max-steps (as train qpeft's): the run stops after that many optimizer steps, inside the first epoch here
    res = CliRunner().invoke(lmort, [*args, "--output", "capped", "--max-steps", "2"])
    assert res.exit_code == 0, res.output
    capped = json.loads((tmp_path / "capped" / "trainer_state.json").read_text())
    assert [h["global_step"] for h in capped["history"]] == [2] and steps[0] > 2
    assert read_lmort_meta(tmp_path / "capped")["training"]["train_config"]["max_steps"] == 2


def _saved_tuner(lm, folder, seed, lm_model=None, **kw):
    config = LMORTConfig(align_layer=kw.pop("align_layer", 1), unif_layer=2, dim=32, num_heads=4, ffn_dim=64,
                         dropout=0.0, **kw)
    torch.manual_seed(seed)
    tuner = LMORTTuner(config, lm.hidden_size)
    save_lmort(folder, tuner, config, lm.identity(), extra={"lm_model": lm_model} if lm_model else None)
    return folder


def test_ensemble_scores_are_the_mean_of_its_members(tiny_lm, tmp_path):
    """An ensemble vector is its members' vectors concatenated, each times 1/sqrt(n): unit-norm, and the inner
    product of two texts is the mean of the members' inner products."""
    from pyserini_qpeft.lmort.cache import StateCache, encode_cached, state_key
    from pyserini_qpeft.lmort.ensemble import load_lmort_ensemble

    paths = [_saved_tuner(tiny_lm, tmp_path / f"m{s}", seed=s) for s in range(3)]
    members = [load_lmort(p, tiny_lm).encode_batch(TEXTS) for p in paths]
    ensemble = load_lmort_ensemble(paths, tiny_lm)
    vecs = ensemble.encode_batch(TEXTS)
    assert ensemble.dim == 96 and vecs.shape == (len(TEXTS), 96)
    torch.testing.assert_close(vecs, torch.cat(members, dim=1) / math.sqrt(3))
    torch.testing.assert_close(vecs.norm(dim=-1), torch.ones(len(TEXTS)))
    mean_of_members = sum(m @ m.T for m in members) / 3
    torch.testing.assert_close(vecs @ vecs.T, mean_of_members)
    assert not torch.allclose(members[0] @ members[0].T, mean_of_members)  # the members do differ
    # the stored-state path (encode --state-cache, training's dev) gives the same concatenation
    cache = StateCache(tmp_path / "states", state_key(tiny_lm, ensemble.config.layers, ensemble.config.max_length))
    cache.build(tiny_lm, {f"d:{i}": t for i, t in enumerate(TEXTS)}, ensemble.config.layers,
                ensemble.config.max_length, progress=False)
    keys = [f"d:{i}" for i in range(len(TEXTS))]
    cached = [encode_cached(load_lmort(p, tiny_lm).tuner, cache, keys) for p in paths]
    torch.testing.assert_close(encode_cached(ensemble.tuner, cache, keys), torch.cat(cached, dim=1) / math.sqrt(3))


def test_ensemble_refuses_members_that_cannot_share_a_pass(tiny_lm, tmp_path):
    from pyserini_qpeft.lmort.ensemble import load_lmort_ensemble

    a = _saved_tuner(tiny_lm, tmp_path / "a", seed=0)
    with pytest.raises(ModelError, match="at least two"):
        load_lmort_ensemble([a], tiny_lm)
    other_layer = _saved_tuner(tiny_lm, tmp_path / "b", seed=1, align_layer=0)
    with pytest.raises(ModelError, match="layers / max_length / normalize"):
        load_lmort_ensemble([a, other_layer], tiny_lm)
    other_budget = _saved_tuner(tiny_lm, tmp_path / "c", seed=1, max_length=16)
    with pytest.raises(ModelError, match="differ from"):
        load_lmort_ensemble([a, other_budget], tiny_lm)


def test_ensemble_index_and_its_query_encoder(tiny_lm, tiny_lm_path, toy_beir, tmp_path, monkeypatch):
    """`encode --encoder lmort:A,B`: one index whose scores are the mean of A's and B's; its meta names both
    members, and searching it rebuilds the same ensemble for the queries."""
    from click.testing import CliRunner

    from pyserini_qpeft.cli.encode import encode
    from pyserini_qpeft.errors import InputError
    from pyserini_qpeft.search.encoders import build_encoder, dense_search, read_index_meta
    from pyserini_qpeft.types import Query

    monkeypatch.chdir(tmp_path)
    for s in (0, 1):
        _saved_tuner(tiny_lm, tmp_path / f"m{s}", seed=s, lm_model=str(tiny_lm_path))
    runner = CliRunner()
    device = ["--device", "cpu", "--dtype", "fp32", "--quiet"]
    for spec, out in (("lmort:m0", "i0"), ("lmort:m1", "i1"), ("lmort:m0,m1", "ens")):
        res = runner.invoke(encode, ["--encoder", spec, "--dataset", str(toy_beir), "--output", out, *device])
        assert res.exit_code == 0, res.output
    meta = read_index_meta(tmp_path / "ens")
    assert meta["dim"] == 64 and meta["checkpoint"] == str((tmp_path / "m0").resolve())
    assert [m["checkpoint"] for m in meta["ensemble"]] == [str((tmp_path / f"m{s}").resolve()) for s in (0, 1)]
    assert [m["lmort"] for m in meta["ensemble"]] == [read_lmort_meta(tmp_path / f"m{s}")["config"] for s in (0, 1)]
    assert "ensemble" not in read_index_meta(tmp_path / "i0")
    queries = [Query("q1", "does smoking cause cancer"), Query("q2", "heart health")]
    runs = {name: dense_search(tmp_path / name, queries, k=6, progress=False, device="cpu", dtype="fp32")
            for name in ("i0", "i1", "ens")}
    for q in ("q1", "q2"):
        scores = {name: {h.docid: h.score for h in run[q]} for name, run in runs.items()}
        assert set(scores["ens"]) == set(scores["i0"]) == {f"d{k}" for k in range(1, 7)}
        for docid, score in scores["ens"].items():
            assert score == pytest.approx((scores["i0"][docid] + scores["i1"][docid]) / 2, abs=1e-5)
    with pytest.raises(InputError, match="empty checkpoint"):
        build_encoder("lmort:m0,", lm=tiny_lm)
    with pytest.raises(InputError, match="names the checkpoint .*m0 more than once"):  # was a 'two-member ensemble'
        build_encoder(f"lmort:m0,{tmp_path / 'm0'}/", lm=tiny_lm)
    _saved_tuner(tiny_lm, tmp_path / "m,2", seed=2)  # a folder named with a comma is one checkpoint
    assert [c.resolve() for c in build_encoder("lmort:m,2", lm=tiny_lm).checkpoints] == [(tmp_path / "m,2").resolve()]


def test_layers_from_an_analysis_pooled_another_way_are_used_with_a_warning(tiny_lm, tmp_path, caplog):
    """--analysis from `lmort analyze --pooling mean` for a tuner that pools by `last`: its layers are taken (the
    user's choice) and a warning says how to measure them as the tuner pools; the same pooling says nothing."""
    import logging

    from pyserini_qpeft.lmort.analysis import LayerReport, choose_layers

    report = LayerReport(model=tiny_lm.identity(), pooling="mean", max_length=256, num_pairs=4,
                         num_uniformity_texts=8, alignment=[0.5, 0.4, 0.3], uniformity=[-1.0, -2.0, -1.5],
                         align_layer=2, unif_layer=1)
    report.write_json(tmp_path / "layer_report.json")
    with caplog.at_level(logging.WARNING, logger="pyserini_qpeft.lmort.analysis"):
        same = choose_layers(tiny_lm, None, "train", tmp_path / "layer_report.json", "mean", 160, 0, tmp_path / "x")
        assert not caplog.records
        other = choose_layers(tiny_lm, None, "train", tmp_path / "layer_report.json", "last", 160, 0, tmp_path / "x")
    assert same == other == (2, 1)
    assert "mean-pooled states; this tuner pools by last" in caplog.text and "--pooling last" in caplog.text
