"""One artifact layer: staged folders with normal permissions, one metadata format, one base-model check."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyserini_qpeft.artifacts import (MetaSpec, check_base_model, library_versions, read_meta, staging_dir,
                                      write_meta)
from pyserini_qpeft.errors import InputError, ModelError


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def mkdir_mode(parent: Path) -> int:
    """The permissions a plain ``mkdir`` gives under the current umask."""
    probe = parent / "plain-mkdir-probe"
    probe.mkdir()
    try:
        return mode(probe)
    finally:
        probe.rmdir()


def leftovers(parent: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


class Boom(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------------------------
# staging_dir


def test_staging_dir_publishes_with_mkdir_permissions(tmp_path, umask):
    with staging_dir(tmp_path / "out") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.")
        (tmp / "a.txt").write_text("new")
    assert (tmp_path / "out" / "a.txt").read_text() == "new"
    assert mode(tmp_path / "out") == mkdir_mode(tmp_path) == 0o777 & ~umask
    assert leftovers(tmp_path, {"out"}) == []


def test_staging_dir_failure_keeps_old_folder_and_leaves_no_temp(tmp_path):
    with staging_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(Boom):
        with staging_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("half")
            raise Boom
    assert (tmp_path / "out" / "a.txt").read_text() == "old"
    assert leftovers(tmp_path, {"out"}) == []


def test_staging_dir_replaces_and_creates_parents(tmp_path):
    target = tmp_path / "deep" / "er" / "out"
    for text in ("one", "two"):
        with staging_dir(target) as tmp:
            (tmp / "f").write_text(text)
    assert (target / "f").read_text() == "two" and sorted(os.listdir(target)) == ["f"]
    assert leftovers(target.parent, {"out"}) == []


# --------------------------------------------------------------------------------------------------------------
# Metadata


SPEC = MetaSpec(file="thing.json", type_field="type", type="thing", label="test thing")


def test_write_meta_layout_and_round_trip(tmp_path):
    path = write_meta(tmp_path, SPEC, {"b": 1, "a": {"y": 2, "x": 1}})
    text = path.read_text()
    assert text == json.dumps({"a": {"x": 1, "y": 2}, "b": 1, "type": "thing"}, indent=2, sort_keys=True) + "\n"
    assert read_meta(tmp_path, SPEC) == {"a": {"x": 1, "y": 2}, "b": 1, "type": "thing"}
    with pytest.raises(ValueError, match="type"):
        write_meta(tmp_path, SPEC, {"type": "other"})


def test_read_meta_errors(tmp_path):
    with pytest.raises(ModelError, match="not a test thing") as info:
        read_meta(tmp_path, SPEC)
    assert info.value.exit_code == 6
    (tmp_path / "thing.json").write_text("{not json")
    with pytest.raises(ModelError, match="corrupt JSON"):
        read_meta(tmp_path, SPEC)
    (tmp_path / "thing.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="type"):
        read_meta(tmp_path, SPEC)
    (tmp_path / "thing.json").write_text(json.dumps({"type": "other"}))
    with pytest.raises(ModelError, match="type is 'other'"):
        read_meta(tmp_path, SPEC)
    (tmp_path / "thing.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(ModelError, match="type is None"):
        read_meta(tmp_path, SPEC)
    legacy = MetaSpec(file="thing.json", type_field="type", type="thing", label="index", error=InputError,
                      untyped_ok=True)
    assert read_meta(tmp_path, legacy) == {"a": 1}
    (tmp_path / "thing.json").write_text("{")
    with pytest.raises(InputError) as info:
        read_meta(tmp_path, legacy)
    assert info.value.exit_code == 3 and info.value.path == str(tmp_path / "thing.json")


def test_damaged_json_state_files_are_named_not_tracebacks(tmp_path):
    """A truncated trainer_state.json / optimizer.json / state-cache index.json (a disk filling up, a hand edit)
    is a ModelError (exit 6) naming the file, not a JSONDecodeError traceback (exit 1)."""
    from pyserini_qpeft.lmort.cache import StateCache
    from pyserini_qpeft.training.state import OPTIMIZER_JSON, load_optimizer, read_trainer_state

    (tmp_path / "trainer_state.json").write_text('{"history": [')
    with pytest.raises(ModelError, match=r"trainer_state.json: cannot read the training state"):
        read_trainer_state(tmp_path)
    (tmp_path / OPTIMIZER_JSON).write_bytes(b"\xff\xfe")
    with pytest.raises(ModelError, match=r"optimizer.json: cannot read the optimizer state"):
        load_optimizer(None, tmp_path)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "index.json").write_text("")
    with pytest.raises(ModelError, match=r"index.json: cannot read the state cache's index"):
        StateCache(tmp_path / "cache", {"model": "m"})._load_index()
    assert ModelError.exit_code == 6


def test_a_lock_or_state_file_that_is_a_symlink_is_refused(tmp_path):
    """Opened through a planted link, a job created or appended to a file wherever the link pointed."""
    from pyserini_qpeft.artifacts import lock_exclusively

    target = tmp_path / "elsewhere.txt"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".training.lock").symlink_to(target)
    with pytest.raises(InputError, match="is a symbolic link"):
        lock_exclusively(tmp_path / "out" / ".training.lock", "busy")
    assert not target.exists()
    handle = lock_exclusively(tmp_path / "out" / "state", "busy", encoding="utf-8")  # a plain file: as before
    handle.write("x\n")
    handle.close()
    assert (tmp_path / "out" / "state").read_text() == "x\n"


def test_library_versions_imports_nothing_heavy():
    code = ("import sys; from pyserini_qpeft.artifacts import library_versions as v; "
            "r = v(extra=('faiss-cpu', 'no-such-package-xyz')); "
            "assert {'pyserini_qpeft', 'torch', 'transformers'} <= set(r), r; "
            "assert 'no-such-package-xyz' not in r; "
            "assert not {'torch', 'transformers', 'faiss'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert library_versions()["pyserini_qpeft"]


# --------------------------------------------------------------------------------------------------------------
# Base model


def test_check_base_model():
    saved = {"model_id": "a", "hidden_size": 32, "num_layers": 2}
    check_base_model(saved, dict(saved), "ckpt")
    with pytest.raises(ModelError, match=r"ckpt: trained on base model 'a', but the loaded LM is 'b' "
                                         r"\(differs in model_id, num_layers") as info:
        check_base_model(saved, {"model_id": "b", "hidden_size": 32, "num_layers": 3}, "ckpt")
    assert info.value.exit_code == 6
    with pytest.raises(ModelError, match="encoded with base model None"):
        check_base_model(None, saved, "idx", made="encoded with")


def test_check_base_model_accepts_a_frozen_lm(tiny_lm):
    check_base_model(tiny_lm.identity(), tiny_lm, "x")
    with pytest.raises(ModelError):
        check_base_model({**tiny_lm.identity(), "num_layers": 99}, tiny_lm, "x")


@pytest.fixture(scope="module")
def other_lm_path(tmp_path_factory):
    from conftest import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("other-llama"), layers=3, seed=1)


def test_cli_refuses_qpeft_checkpoint_of_another_model_with_exit_6(tiny_lm, other_lm_path, tmp_path):
    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.qpeft.checkpoint import save_checkpoint
    from pyserini_qpeft.qpeft.module import QPeftConfig, build_module

    config = QPeftConfig(variant="retr", top_k=2)
    ckpt = save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm, ScorerConfig())
    res = CliRunner().invoke(cli, ["explain", "--reranker-checkpoint", str(ckpt), "--query", "q", "--doc-text",
                                   "a text", "--model", str(other_lm_path), "--device", "cpu", "--dtype", "fp32"])
    assert res.exit_code == 6, res.output
    assert "trained on base model" in res.output


def test_cli_refuses_lmort_checkpoint_of_another_model_with_exit_6(tiny_lm, other_lm_path, toy_beir, tmp_path):
    import torch
    from click.testing import CliRunner

    from pyserini_qpeft.cli.main import cli
    from pyserini_qpeft.lmort.tuner import LMORTConfig, LMORTTuner, save_lmort

    config = LMORTConfig(align_layer=1, unif_layer=2, dim=32, num_heads=4, ffn_dim=64, dropout=0.0)
    torch.manual_seed(0)
    save_lmort(tmp_path / "ckpt", LMORTTuner(config, tiny_lm.hidden_size), config, tiny_lm.identity())
    res = CliRunner().invoke(cli, ["encode", "--encoder", f"lmort:{tmp_path / 'ckpt'}", "--dataset", str(toy_beir),
                                   "--output", str(tmp_path / "idx"), "--model", str(other_lm_path),
                                   "--device", "cpu", "--dtype", "fp32", "--quiet"])
    assert res.exit_code == 6, res.output
    assert "trained on base model" in res.output and not (tmp_path / "idx").exists()


# --------------------------------------------------------------------------------------------------------------
# The artifacts that use the layer


def test_checkpoint_folder_permissions_and_failed_overwrite(tiny_lm, tmp_path, umask, monkeypatch):
    from pyserini_qpeft.lm.scoring import ScorerConfig
    from pyserini_qpeft.qpeft import checkpoint
    from pyserini_qpeft.qpeft.module import QPeftConfig, build_module

    config = QPeftConfig(variant="retr", top_k=2)
    path = checkpoint.save_checkpoint(tmp_path / "ckpt", build_module(tiny_lm, config), config, tiny_lm,
                                      ScorerConfig())
    assert mode(path) == mkdir_mode(tmp_path)
    assert all(mode(p) == 0o666 & ~umask for p in path.iterdir())
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def fail(meta):
        raise Boom("disk full")

    monkeypatch.setattr(checkpoint, "_model_card", fail)  # fails after the weights and config are written
    with pytest.raises(Boom):
        checkpoint.save_checkpoint(path, build_module(tiny_lm, QPeftConfig(variant="retr", top_k=3)),
                                   QPeftConfig(variant="retr", top_k=3), tiny_lm, ScorerConfig())
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert leftovers(tmp_path, {"ckpt"}) == []
    assert json.loads((path / checkpoint.CONFIG_NAME).read_text())["qpeft_config"]["top_k"] == 2


def test_faiss_folder_permissions_and_failed_overwrite(tmp_path, umask, monkeypatch):
    import faiss

    from pyserini_qpeft.search.dense import read_index_meta, write_faiss_index

    vecs = np.eye(3, dtype=np.float32)
    out = write_faiss_index(tmp_path / "idx", ["a", "b", "c"], vecs, {"encoder": "test", "dim": 3})
    assert mode(out) == mkdir_mode(tmp_path)
    assert read_index_meta(out)["type"] == "dense-index"

    def fail(*args, **kwargs):
        raise Boom("disk full")

    monkeypatch.setattr(faiss, "write_index", fail)
    with pytest.raises(Boom):
        write_faiss_index(out, ["x"], vecs[:1], {"encoder": "test", "dim": 3}, overwrite=True)
    assert (out / "docid").read_text() == "a\nb\nc\n"
    assert leftovers(tmp_path, {"idx"}) == []


def test_dense_index_meta_legacy_and_wrong_type(tmp_path):
    from pyserini_qpeft.search.encoders import read_index_meta  # the old import path still works

    (tmp_path / "meta.json").write_text(json.dumps({"encoder": "minilm"}))
    assert read_index_meta(tmp_path) == {"encoder": "minilm"}  # written before the type field existed
    (tmp_path / "meta.json").write_text(json.dumps({"type": "lucene-index"}))
    with pytest.raises(InputError, match="type is 'lucene-index'"):
        read_index_meta(tmp_path)


def test_lmort_folder_staged_or_updated_in_place(tiny_lm, tmp_path, umask):
    import torch

    from pyserini_qpeft.lmort.tuner import CONFIG_NAME, LMORTConfig, LMORTTuner, read_lmort_meta, save_lmort

    config = LMORTConfig(align_layer=1, unif_layer=2, dim=32, num_heads=4, ffn_dim=64, dropout=0.0)
    torch.manual_seed(0)
    tuner = LMORTTuner(config, tiny_lm.hidden_size)
    fresh = save_lmort(tmp_path / "fresh", tuner, config, tiny_lm.identity())
    assert mode(fresh) == mkdir_mode(tmp_path)
    assert read_lmort_meta(fresh)["versions"] == library_versions()
    # a training output folder keeps its other files; the checkpoint files are replaced in place
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_state.json").write_text("{}")
    save_lmort(run, tuner, config, tiny_lm.identity(), extra={"epoch": 1})
    save_lmort(run, tuner, config, tiny_lm.identity(), extra={"epoch": 2})
    assert sorted(os.listdir(run)) == sorted(["train_state.json", CONFIG_NAME, "lmort_model.safetensors", "README.md"])
    assert sorted(os.listdir(fresh)) == sorted([CONFIG_NAME, "lmort_model.safetensors", "README.md"])  # + the card
    assert read_lmort_meta(run)["epoch"] == 2
    assert leftovers(tmp_path, {"fresh", "run"}) == []


@pytest.mark.jvm
def test_lucene_index_folder_permissions_and_meta(tmp_path):
    from conftest import write_beir

    from pyserini_qpeft.search.lucene import INDEX_META, META, build_index

    index = build_index(write_beir(tmp_path / "toy"), tmp_path / "indexes" / "lucene-toy")
    assert mode(index) == mkdir_mode(tmp_path / "indexes")
    meta = read_meta(index, META)
    assert meta["type"] == "lucene-index" and meta["documents"] == 6
    assert (index / INDEX_META).read_text().endswith("}\n")
    assert leftovers(tmp_path / "indexes", {"lucene-toy"}) == []


def test_an_existing_lucene_index_is_reused_only_for_its_own_corpus(tmp_path, caplog):
    """`index` is idempotent for the corpus an index was built from; another corpus is refused (not silently
    answered with the old index), and a recorded corpus that moved away is reused with a warning. No JVM runs."""
    from pyserini_qpeft.artifacts import write_meta
    from pyserini_qpeft.search.lucene import META, build_index

    built, other = tmp_path / "built.jsonl", tmp_path / "other.jsonl"
    for path in (built, other):
        path.write_text('{"_id": "d1", "title": "", "text": "x"}\n')
    index = tmp_path / "indexes" / "lucene-toy"
    index.mkdir(parents=True)
    write_meta(index, META, {"corpus": str(built.resolve()), "collection": "BeirFlatCollection", "documents": 1})
    assert build_index(built, index) == index
    with pytest.raises(InputError, match=r"built from .*built\.jsonl, not .*other\.jsonl: pass --force") as err:
        build_index(other, index)
    assert err.value.path == str(index)
    built.unlink()
    with caplog.at_level("WARNING", logger="pyserini_qpeft.search.lucene"):
        assert build_index(other, index) == index
    assert "no longer exists" in caplog.text


def test_atomic_write_and_replace_dir_leave_one_complete_version_when_they_fail(tmp_path, monkeypatch):
    """atomic_write: an error inside leaves the old file and no temporary; replace_dir: a failed swap puts the old
    folder back (mutants audit W: A2, A5)."""
    import os

    from pyserini_qpeft.artifacts import atomic_write, replace_dir

    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as out:
            out.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]

    folder, new = tmp_path / "index", tmp_path / "index.new"
    folder.mkdir()
    (folder / "v").write_text("1")
    new.mkdir()
    (new / "v").write_text("2")
    real = os.replace

    def fail_the_swap(src, dst):
        if Path(src) == new:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fail_the_swap)
    with pytest.raises(OSError):
        replace_dir(new, folder)
    monkeypatch.setattr(os, "replace", real)
    assert (folder / "v").read_text() == "1" and (new / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "index.new", "out.json"]
