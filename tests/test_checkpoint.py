"""Checkpoints: save -> load gives identical scores, only module weights on disk, base-model check, dispatch."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

from conftest import TOY_CORPUS, TOY_QUERIES, build_tiny_lm
from pyserini_qpeft.qpeft.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, save_checkpoint
from pyserini_qpeft.data import Document
from pyserini_qpeft.errors import ModelError
from pyserini_qpeft.qpeft.module import QPeftConfig, build_module, trainable_parameters
from pyserini_qpeft.lm.scoring import QueryLikelihoodScorer, ScorerConfig

DOCS = [Document(d["_id"], d["title"], d["text"]) for d in TOY_CORPUS]
QUERIES = [q["text"] for q in TOY_QUERIES]
PAIRS = [(QUERIES[i % 4], DOCS[(i * 5) % 6]) for i in range(10)]
SCORER = ScorerConfig(batch_size=4, max_passage_tokens=48, instruction="Read it.")


def perturbed(lm, config):
    """A module whose weights differ from a fresh build (so load really has to restore them)."""
    module = build_module(lm, config)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module


def scores(lm, module, config=SCORER):
    scorer = QueryLikelihoodScorer(lm, config, hint_module=module)
    return scorer.score([q for q, _ in PAIRS], [d for _, d in PAIRS])


@pytest.mark.parametrize("variant", ["retr", "attn", "prompt"])
def test_save_load_identical_scores(tiny_lm, tmp_path, variant):
    config = QPeftConfig(variant=variant, top_k=5, num_virtual_tokens=4)
    module = perturbed(tiny_lm, config)
    path = save_checkpoint(tmp_path / "ckpt", module, config, tiny_lm, SCORER,
                           {"dev_metrics": {"ndcg@10": 0.5}, "training": {"command": "pyserini-qpeft train qpeft"}})
    loaded, cfg, scfg, meta = load_checkpoint(path, tiny_lm)
    assert cfg == config and scfg == SCORER
    assert meta["variant"] == variant and meta["dev_metrics"] == {"ndcg@10": 0.5}
    assert not loaded.training
    assert scores(tiny_lm, loaded, scfg) == scores(tiny_lm, module)
    assert scores(tiny_lm, build_module(tiny_lm, config)) != scores(tiny_lm, module)  # load restored weights
    card = (path / "README.md").read_text()
    assert "pyserini-qpeft train qpeft" in card and "ndcg@10" in card and f"{trainable_parameters(module):,}" in card


@pytest.mark.parametrize("variant", ["retr", "attn", "prompt"])
def test_no_lm_weights_in_checkpoint(tiny_lm, tmp_path, variant):
    config = QPeftConfig(variant=variant)
    module = build_module(tiny_lm, config)
    path = save_checkpoint(tmp_path / "ckpt", module, config, tiny_lm, SCORER)
    with safe_open(str(path / WEIGHTS_NAME), "pt") as f:
        keys = set(f.keys())
        numel = sum(f.get_tensor(k).numel() for k in keys)
        # one metadata key: safetensors writes several in a per-process random order, so the same weights gave
        # files with other bytes (a checksum of a resumed run's checkpoint failed spuriously)
        assert f.metadata() == {"module_type": "qpeft"}
    assert keys == {n for n, _ in module.named_parameters()}
    assert all(k.split(".")[0] in ("mlp", "attention", "prompt") for k in keys)
    lm_names = {n for n, _ in tiny_lm.model.named_parameters()}
    assert not keys & lm_names
    assert numel == trainable_parameters(module)
    # file size: the module's fp32 weights plus a small header, far below the vocabulary matrix alone
    size = os.path.getsize(path / WEIGHTS_NAME)
    assert size < 4 * numel + 4096
    meta = json.loads((path / CONFIG_NAME).read_text())
    assert meta["module_type"] == "qpeft" and meta["base_model"] == tiny_lm.identity()
    assert {"torch", "transformers", "pyserini_qpeft"} <= set(meta["versions"])
    assert meta["parameters"]["trainable"] == numel


def test_a_module_matrix_with_the_vocabularys_row_count_is_saved_a_copy_of_the_vocabulary_matrix_is_not(
        tmp_path):
    """Q-PEFT-A's in-projection has 3 x hidden rows: with a vocabulary of 3 x hidden (hidden 128, vocabulary 384) it
    was refused as a 'vocabulary matrix' (exit 6 after a whole epoch); an embedding-shaped copy still is."""
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig

    lm = FrozenLM.load(LMConfig(model=str(build_tiny_lm(tmp_path / "lm", vocab_size=384, hidden=128)), device="cpu",
                                dtype="fp32"))
    config = QPeftConfig(variant="attn", num_heads=4)
    module = build_module(lm, config)
    assert any(p.shape == (384, 128) for p in module.parameters())
    save_checkpoint(tmp_path / "ckpt", module, config, lm, SCORER)
    module.register_parameter("leak", torch.nn.Parameter(lm.model.get_input_embeddings().weight.detach().clone()))
    with pytest.raises(ModelError, match="a copy of the LM's vocabulary matrix"):
        save_checkpoint(tmp_path / "ckpt2", module, config, lm, SCORER)


def test_other_base_model_refused(tiny_lm, tmp_path):
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig

    config = QPeftConfig(variant="attn")
    path = save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm, SCORER)
    other = FrozenLM.load(LMConfig(model=str(build_tiny_lm(tmp_path / "other", layers=3)), device="cpu",
                                   dtype="fp32"))
    with pytest.raises(ModelError, match="base model") as info:
        load_checkpoint(path, other)
    assert info.value.exit_code == 6


def test_checkpoint_keeps_its_prompt_and_refuses_another(tiny_lm, tmp_path):
    """The prompt a module was trained with is stored; reranking uses it, and another wording is refused."""
    import dataclasses

    from pyserini_qpeft.errors import InputError
    from pyserini_qpeft.lm.prompts import prompt_fields, prompt_name
    from pyserini_qpeft.rerank import build_reranker

    config = QPeftConfig(variant="attn")
    claim = dataclasses.replace(SCORER, **prompt_fields("claim"))
    path = save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm, claim)
    assert prompt_name(load_checkpoint(path, tiny_lm)[2]) == "claim"
    assert prompt_name(build_reranker("qpeft-attn", lm=tiny_lm, checkpoint=path).config) == "claim"
    same = build_reranker("qpeft-attn", lm=tiny_lm, checkpoint=path,
                          scorer_overrides={**prompt_fields("claim"), "batch_size": 2})
    assert prompt_name(same.config) == "claim" and same.config.batch_size == 2
    with pytest.raises(InputError, match="trained with the claim prompt; drop --prompt or pass --prompt claim"):
        build_reranker("qpeft-attn", lm=tiny_lm, checkpoint=path, scorer_overrides=prompt_fields("question"))


def test_dispatch_on_saved_variant_not_path(tiny_lm, tmp_path):
    config = QPeftConfig(variant="retr", top_k=3)
    path = save_checkpoint(tmp_path / "qpeft-attn-prompt", build_module(tiny_lm, config), config, tiny_lm, SCORER)
    module, cfg, _, _ = load_checkpoint(path, tiny_lm)
    assert cfg.variant == "retr" and not hasattr(module, "attention")


def test_bad_checkpoints_raise_model_error(tiny_lm, tmp_path):
    config = QPeftConfig(variant="retr")
    path = save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm, SCORER)
    with pytest.raises(ModelError, match="not a Q-PEFT checkpoint"):
        load_checkpoint(tmp_path, tiny_lm)
    meta = json.loads((path / CONFIG_NAME).read_text())
    (path / CONFIG_NAME).write_text(json.dumps({**meta, "module_type": "lmort"}))
    with pytest.raises(ModelError, match="module_type"):
        load_checkpoint(path, tiny_lm)
    (path / CONFIG_NAME).write_text(json.dumps({**meta, "variant": "attn", "qpeft_config": {
        **meta["qpeft_config"], "variant": "attn"}}))
    with pytest.raises(ModelError, match="do not match"):  # retr weights lack the attention
        load_checkpoint(path, tiny_lm)
    (path / CONFIG_NAME).write_text(json.dumps({**meta, "variant": "attn"}))  # the two records disagree
    with pytest.raises(ModelError, match="variant 'attn' disagrees with qpeft_config 'retr'"):
        load_checkpoint(path, tiny_lm)
    (path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="may not override 'base_model'"):
        save_checkpoint(tmp_path / "other", build_module(tiny_lm, config), config, tiny_lm, SCORER,
                        {"base_model": {}})
    (path / WEIGHTS_NAME).write_bytes(b"garbage")
    with pytest.raises(ModelError, match="corrupt"):
        load_checkpoint(path, tiny_lm)
    (path / WEIGHTS_NAME).unlink()
    with pytest.raises(ModelError, match="missing"):
        load_checkpoint(path, tiny_lm)


def test_a_scorer_setting_from_a_newer_version_is_ignored_with_a_warning(tiny_lm, tmp_path, caplog):
    import logging

    config = QPeftConfig(variant="retr", top_k=2)
    path = save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm, SCORER)
    meta = json.loads((path / CONFIG_NAME).read_text())
    meta["scorer_config"]["future_setting"] = 1
    (path / CONFIG_NAME).write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        _, _, scorer_config, _ = load_checkpoint(path, tiny_lm)
    assert scorer_config == SCORER and "ignoring unknown scorer settings in checkpoint: ['future_setting']" in caplog.text


def test_overwrite_is_atomic_and_leaves_no_temp(tiny_lm, tmp_path):
    config = QPeftConfig(variant="prompt", num_virtual_tokens=2)
    first = perturbed(tiny_lm, config)
    save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm, SCORER)
    save_checkpoint(tmp_path / "ckpt", first, config, tiny_lm, SCORER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    loaded, *_ = load_checkpoint(tmp_path / "ckpt", tiny_lm)
    assert all(torch.equal(loaded.state_dict()[k], first.state_dict()[k]) for k in first.state_dict())


def test_training_folder_resolves_to_best(tiny_lm, tmp_path):
    config = QPeftConfig(variant="retr", top_k=2)
    save_checkpoint(tmp_path / "run" / "best", build_module(tiny_lm, config), config, tiny_lm, SCORER)
    _, cfg, _, _ = load_checkpoint(tmp_path / "run", tiny_lm)
    assert cfg.top_k == 2


def test_checkpoint_keeps_its_hint_passage_and_reads_older_ones_without_it(tiny_lm, tmp_path):
    """`train qpeft --hint-passage-tokens` is stored with the module; a checkpoint saved before the field existed
    loads with the default (the hint module reads the LM's passage)."""
    config = QPeftConfig(variant="retr", top_k=5)
    wide = ScorerConfig(batch_size=4, max_passage_tokens=8, hint_passage_tokens=48)
    module = perturbed(tiny_lm, config)
    path = save_checkpoint(tmp_path / "ckpt", module, config, tiny_lm, wide)
    loaded, _, scfg, _ = load_checkpoint(path, tiny_lm)
    assert scfg == wide and scores(tiny_lm, loaded, scfg) == scores(tiny_lm, module, wide)
    assert scores(tiny_lm, module, wide) != scores(tiny_lm, module, ScorerConfig(batch_size=4, max_passage_tokens=8))
    data = json.loads((path / CONFIG_NAME).read_text())
    del data["scorer_config"]["hint_passage_tokens"]
    (path / CONFIG_NAME).write_text(json.dumps(data))
    assert load_checkpoint(path, tiny_lm)[2] == ScorerConfig(batch_size=4, max_passage_tokens=8)


def test_a_base_model_is_known_by_its_folder_and_its_weights_not_by_how_its_path_was_typed(tiny_lm_path, tmp_path,
                                                                                           monkeypatch):
    """A local --model is recorded by its absolute path and a fingerprint of its weight files: the same folder typed
    with a trailing slash or relative to another directory, and a moved copy of it, are the same base model; other
    weights saved under the same path are refused (they were taken for the old model). An identity recorded before
    fingerprints (a relative path) still matches its folder."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from pyserini_qpeft.artifacts import check_base_model
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig

    def load(model):
        return FrozenLM.load(LMConfig(model=str(model), device="cpu", dtype="fp32"))

    original = load(tiny_lm_path).identity()
    assert original["model_id"] == str(tiny_lm_path.resolve()) and len(original["weights"]) == 16
    monkeypatch.chdir(tiny_lm_path.parent)
    for typed in (f"{tiny_lm_path}/", tiny_lm_path.name, f"./{tiny_lm_path.name}"):
        assert load(typed).identity() == original, typed
    moved = tmp_path / "moved"
    shutil.copytree(tiny_lm_path, moved)
    check_base_model(original, load(moved), "ckpt")  # the same weights, elsewhere
    old_style = {k: v for k, v in original.items() if k != "weights"} | {"model_id": tiny_lm_path.name}
    check_base_model(old_style, load(tiny_lm_path), "ckpt")  # recorded relative, by an older version
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(moved)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.01)
    model.save_pretrained(moved)  # other weights under the same name
    changed = load(moved)
    assert changed.identity()["weights"] != original["weights"]
    with pytest.raises(ModelError, match="weight files differ"):
        check_base_model(original | {"model_id": str(moved.resolve())}, changed, "ckpt")


def test_weights_changed_in_place_where_the_fingerprint_does_not_look_are_another_model(tiny_lm_path, tmp_path,
                                                                                       monkeypatch):
    """The fingerprint reads 16 sampled blocks of each weight file: a change between them (one tensor re-exported in
    place, same size) kept the identity, so a checkpoint, a dense index or a rerank state made with the old weights
    was used with the new ones (a resumed rerank mixed both). The full-content digest (``weights_sha256``) tells
    them apart; an identity recorded before it existed is still compared by the fingerprint."""
    import shutil
    import struct

    from pyserini_qpeft.artifacts import check_base_model
    from pyserini_qpeft.lm import hub
    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
    from pyserini_qpeft.rerank import build_reranker

    monkeypatch.setenv("PYSERINI_QPEFT_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "lm"
    shutil.copytree(tiny_lm_path, model)
    lm = FrozenLM.load(LMConfig(model=str(model), device="cpu", dtype="fp32"))
    before = lm.identity()
    assert len(before["weights_sha256"]) == 32
    assert (tmp_path / "cache" / hub.DIGEST_CACHE).is_file()  # read once, remembered by inode/size/mtime
    for damaged in ("[]", "null", '{"a": 1'):  # a damaged cache is recomputed, never an error
        (tmp_path / "cache" / hub.DIGEST_CACHE).write_text(damaged)
        assert hub.weights_digest(model) == before["weights_sha256"]
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    size, block = len(data), 4096
    sampled = {b for i in range(16) for b in range(max(0, size - block) * i // 15, max(0, size - block) * i // 15 + block)}
    start = 8 + struct.unpack("<Q", bytes(data[:8]))[0]  # the tensors' bytes follow the header
    offset = next(b for b in range(start, size) if b not in sampled)
    data[offset] ^= 1  # one bit of one weight, where no sampled block reads
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the mtime restored (rsync --inplace -t): ctime tells
    after = FrozenLM.load(LMConfig(model=str(model), device="cpu", dtype="fp32"))
    assert after.identity()["weights"] == before["weights"]  # the samples did not see it
    assert after.identity()["weights_sha256"] != before["weights_sha256"]
    with pytest.raises(ModelError, match="weight files differ"):
        check_base_model(before, after, "ckpt")
    old_record = {k: v for k, v in before.items() if k != "weights_sha256"}
    check_base_model(old_record, after, "ckpt")  # recorded before the digest existed: the fingerprint decides
    # a rerank state of the old weights is another job's (its header fingerprint differs)
    pairs, texts = [("q", "d")], {"q": "a query"}
    old_state = build_reranker("upr", lm=lm)._fingerprint(pairs, texts, 10)
    assert build_reranker("upr", lm=after)._fingerprint(pairs, texts, 10) != old_state
    # a Hugging Face cache file is known by its blob's name, the sha256 the Hub stores it under (nothing is read)
    blob = tmp_path / "hub" / "blobs" / ("ab" * 32)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"not read")
    (tmp_path / "hub" / "snap").mkdir()
    (tmp_path / "hub" / "snap" / "model.safetensors").symlink_to(blob)
    assert hub._file_sha256(tmp_path / "hub" / "snap" / "model.safetensors") == "ab" * 32
    # only a 64-hex blob name is a sha256: a link into any other folder named blobs is read (mutant audit X: hb3)
    import hashlib

    other = tmp_path / "mine" / "blobs" / "weights"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"my weights")
    (tmp_path / "hub" / "snap" / "other.safetensors").symlink_to(other)
    assert hub._file_sha256(tmp_path / "hub" / "snap" / "other.safetensors") == hashlib.sha256(b"my weights").hexdigest()

def test_a_checkpoint_whose_base_model_folder_moved_says_to_pass_model(tiny_lm_path, tmp_path):
    """Without --model a command loads the checkpoint's recorded base model; when that folder is gone the error
    names the checkpoint and asks for --model (it named a path the user never typed as 'not a local folder')."""
    import shutil

    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
    from pyserini_qpeft.qpeft.checkpoint import lm_model_for

    copy = tmp_path / "lm"
    shutil.copytree(tiny_lm_path, copy)
    lm = FrozenLM.load(LMConfig(model=str(copy), device="cpu", dtype="fp32"))
    config = QPeftConfig(variant="retr", top_k=4)
    ckpt = save_checkpoint(tmp_path / "ckpt", build_module(lm, config), config, lm, SCORER)
    assert lm_model_for(ckpt) == str(copy.resolve())
    copy.rename(tmp_path / "moved")
    with pytest.raises(ModelError, match=r"ckpt was trained on the LM in .*/lm \(recorded in its qpeft_config.json\), "
                                         r"which is not there any more: pass --model"):
        lm_model_for(ckpt)
    assert lm_model_for(ckpt, str(tmp_path / "moved")) == str(tmp_path / "moved")
    load_checkpoint(ckpt, FrozenLM.load(LMConfig(model=str(tmp_path / "moved"), device="cpu", dtype="fp32")))
