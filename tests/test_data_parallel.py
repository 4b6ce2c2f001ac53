"""Data-parallel training through accelerate: 2 CPU processes (gloo) give the weights of 1 process.

``accelerate launch --multi_gpu --num_processes 2 -m pyserini_qpeft train ...`` (the README's command; on a
machine without CUDA it starts 2 CPU processes) trains Q-PEFT and LMORT for 2 steps with a global batch of 4
queries; the weights must match a single-process run of the same command (allclose: the two ranks pad their
slices differently, so float rounding may differ), the dev metrics must be equal, and only rank 0 writes.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TOY_TEXTS

pytest.importorskip("accelerate")

LR, STEPS = 0.05, 2


def test_shard_bounds_cover_every_row_once():
    from pyserini_qpeft.training.parallel import shard_bounds

    for total in range(0, 12):
        for world in range(1, 5):
            parts = [shard_bounds(total, r, world) for r in range(world)]
            assert [i for a, b in parts for i in range(a, b)] == list(range(total))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def test_single_process_needs_no_accelerate(monkeypatch):
    from pyserini_qpeft.training.parallel import SINGLE, DataParallel

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dp = DataParallel.from_environment("cpu")
    assert dp is SINGLE and not dp.active and dp.is_main and list(dp.shard(5)) == [0, 1, 2, 3, 4]


COLLECTIVES = """
import json, sys
import torch
from pyserini_qpeft.training.parallel import DataParallel

dp = DataParallel.from_environment("cpu")
results = {"world_size": dp.world_size}
for rows in (7, 1):  # with 1 row, rank 0 holds none
    torch.manual_seed(0)
    model, unused = torch.nn.Linear(6, 4), torch.nn.Linear(2, 2)
    x = torch.randn(rows, 6)

    def loss_of(emb):  # every row against every row (in-batch negatives across ranks)
        return torch.nn.functional.cross_entropy(emb @ emb.T / 0.1 + torch.eye(len(emb)), torch.arange(len(emb)))

    loss_of(model(x)).backward()
    reference = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    loss = loss_of(dp.gather_rows(model(x[list(dp.shard(rows))]), rows))
    loss.backward()
    dp.reduce_gradients([*model.parameters(), *unused.parameters()])
    results[rows] = {"grads": all(torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7)
                                  for p, g in zip(model.parameters(), reference)),
                     "untouched_stay_none": all(p.grad is None for p in unused.parameters())}
results["gather_list"] = dp.gather_list([f"r{dp.rank}"] * (dp.rank + 1))
results["broadcast"] = dp.broadcast(f"from {dp.rank}")
if dp.is_main:
    open(sys.argv[1], "w").write(json.dumps(results))
dp.close()
"""


@pytest.mark.slow
def test_collectives_give_the_single_process_gradient(tmp_path):
    """The gradient of a loss over all ranks' rows, summed over ranks, is the single-process gradient (a mean
    instead of a sum, or a lost rank, fails this)."""
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    launch([str(script), str(tmp_path / "out.json")], 2, tmp_path, module=False)
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["world_size"] == 2
    for rows in ("7", "1"):
        assert results[rows] == {"grads": True, "untouched_stay_none": True}, rows
    assert results["gather_list"] == ["r0", "r1", "r1"] and results["broadcast"] == "from 0"


def parallel_beir(root: Path, queries: int = 10) -> tuple[Path, Path]:
    """A BEIR folder with ``queries`` training queries (one positive each) and a first-stage run over all docs."""
    rng = random.Random(3)
    words = " ".join(TOY_TEXTS).split()
    root.mkdir(parents=True)
    docs = [{"_id": f"d{i:02d}", "title": "", "text": " ".join(rng.choice(words) for _ in range(rng.randint(5, 12)))}
            for i in range(2 * queries)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": docs[2 * i]["text"][:30]}) + "\n"
                                                for i in range(queries)))
    (root / "qrels").mkdir()
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{2 * i:02d}\t1\n" for i in range(queries)))
    run = root.parent / "first-stage.trec"
    run.write_text("".join(f"q{i} Q0 {d['_id']} {r + 1} {100 - r}.0 bm25\n"
                           for i in range(queries) for r, d in enumerate(rng.sample(docs, len(docs)))))
    return root, run


def launch(args: list[str], processes: int, cwd: Path, module: bool = True) -> subprocess.CompletedProcess:
    """``python -m pyserini_qpeft ARGS`` (1 process) or the README's ``accelerate launch`` of it (N processes)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    target = ["-m", "pyserini_qpeft", *args] if module else args
    if processes == 1:
        command = [sys.executable, *target]
    else:
        accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
        command = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", *target]
    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    # all of stderr: a rank that dies (seen once on a 2-core EPYC, 2026-12-06: SIGABRT "terminate called without an
    # active exception") prints what it was doing long before the launcher's summary at the end
    assert proc.returncode == 0, proc.stderr
    return proc


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {f"{p.name}:{k}": v for p in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(p)).items()}


def history(folder: Path) -> list[dict]:
    state = json.loads((folder / "trainer_state.json").read_text())
    return [{k: v for k, v in h.items() if "seconds" not in k} for h in state["history"]]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["qpeft", "lmort", "lmort-short-batch"])
def test_two_gloo_processes_train_the_weights_of_one(tiny_lm_path, tmp_path, method):
    """... also when a step's rows do not reach every rank (lmort-short-batch: 8 training queries in batches of 7,
    no hard negatives, so the last step has one document row and rank 1 none: it contributes no gradient)."""
    import torch

    beir, run = parallel_beir(tmp_path / "par")
    lm = ["--model", str(tiny_lm_path), "--device", "cpu", "--dtype", "fp32", "--quiet"]
    if method == "qpeft":
        common = ["train", "qpeft", "--variant", "attn", "--dataset", str(beir), "--negatives", str(run),
                  "--epochs", "1", "--max-steps", str(STEPS), "--batch-size", "4", "--dev-size", "2", "--lr", str(LR), *lm]
    else:
        common = ["train", "lmort", "--dataset", str(beir), "--negatives", str(run), "--layers", "1,2",
                  "--epochs", "1", "--batch-size", "4", "--dim", "32", "--ffn-dim", "64", "--max-length", "32",
                  "--dev-fraction", "0.2", "--dropout", "0", "--lr", str(LR), *lm]
        if method == "lmort-short-batch":
            common += ["--batch-size", "7", "--hard-negatives", "0"]
    one = launch([*common, "--output", str(tmp_path / "one")], 1, tmp_path)
    two = launch([*common, "--output", str(tmp_path / "two")], 2, tmp_path)
    # rank 0 alone reports (one JSON on stdout) and writes
    assert json.loads(two.stdout)["best"].endswith("best") and two.stdout.count("{") == one.stdout.count("{")
    for folder in ("epoch-1", "best"):
        a, b = tensors(tmp_path / "one" / folder), tensors(tmp_path / "two" / folder)
        assert a.keys() == b.keys()
        for key in a:
            x, y = a[key], b[key]
            if key.endswith("in_proj_bias"):
                # The key bias shifts every attention logit of a query equally, so softmax makes its gradient
                # exactly 0; AdamW divides the float noise of that 0 by its own magnitude, so it moves by a
                # noise-driven fraction of lr whatever the process count. Bound it by lr * steps; check the rest.
                e = x.numel() // 3
                assert (x[e:2 * e] - y[e:2 * e]).abs().max() <= LR * STEPS
                x, y = torch.cat([x[:e], x[2 * e:]]), torch.cat([y[:e], y[2 * e:]])
            # AdamW moves every weight by ~lr per step; a gradient with another direction (a lost rank, a wrong
            # in-batch negative) differs by ~lr. Float rounding of the padded slices, scaled by 1/temperature and
            # by Adam's normalisation, stays under 1 % of lr here (Q-PEFT: 1e-6).
            assert torch.allclose(x, y, rtol=0, atol=0.05 * LR * STEPS), (key, float((x - y).abs().max()))
    h1, h2 = history(tmp_path / "one"), history(tmp_path / "two")
    assert [h["steps"] for h in h1] == [h["steps"] for h in h2] == [STEPS]
    for a, b in zip(h1, h2):
        assert a["dev"].keys() == b["dev"].keys()
        for key in a["dev"]:
            assert a["dev"][key] == pytest.approx(b["dev"][key], rel=1e-5, abs=1e-6), key
        assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-5)
    state = json.loads((tmp_path / "two" / "trainer_state.json").read_text())
    meta_files = list((tmp_path / "two" / "best").glob("*.json"))
    assert any('"world_size": 2' in p.read_text() for p in meta_files), state
    assert not [p.name for p in (tmp_path / "two").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_data_parallel_resume_continues_like_one_run(tiny_lm_path, tmp_path):
    """2 processes: epoch 1, then ``--resume`` for epoch 2, equals 2 epochs in one go (rank 0 wrote, all ranks read)."""
    import torch

    beir, run = parallel_beir(tmp_path / "par")
    common = ["train", "qpeft", "--variant", "attn", "--dataset", str(beir), "--negatives", str(run), "--batch-size",
              "4", "--max-train-queries", "4", "--dev-size", "2", "--lr", str(LR), "--model", str(tiny_lm_path),
              "--device", "cpu", "--dtype", "fp32", "--quiet"]
    launch([*common, "--epochs", "2", "--output", str(tmp_path / "straight")], 2, tmp_path)
    launch([*common, "--epochs", "1", "--output", str(tmp_path / "resumed")], 2, tmp_path)
    launch([*common, "--epochs", "2", "--output", str(tmp_path / "resumed"), "--resume"], 2, tmp_path)
    a, b = tensors(tmp_path / "straight" / "epoch-2"), tensors(tmp_path / "resumed" / "epoch-2")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert history(tmp_path / "straight") == history(tmp_path / "resumed")
    # a third epoch resumed in one process: its checkpoint still says the first two ran in two
    launch([*common, "--epochs", "3", "--output", str(tmp_path / "resumed"), "--resume"], 1, tmp_path)
    parallel = [json.loads((tmp_path / "resumed" / f"epoch-{e}" / "qpeft_config.json").read_text())["training"]
                .get("data_parallel") for e in (1, 2, 3)]
    assert [p["world_size_by_epoch"] for p in parallel] == [[2], [2, 2], [2, 2, 1]], parallel
    assert [p["world_size"] for p in parallel] == [2, 2, 1] and parallel[0]["backend"] == "gloo"
