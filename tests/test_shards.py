"""Scale-out without a scheduler: `rerank --shard-id K --shard-num N` on N machines (or a Slurm array), then
`--merge-shards N`: the merged run is byte-identical to a serial rerank."""
from __future__ import annotations

import json
import os
import random

from click.testing import CliRunner

from conftest import TOY_QUERIES, TOY_TEXTS, write_beir
from pyserini_qpeft.cli.main import cli


def rerank_job(tiny_lm_path, tmp_path, seed: int) -> list[str]:
    """The toy dataset plus 80 generated documents, a 40-deep first stage, and the common `rerank` arguments."""
    root = write_beir(tmp_path / "big")
    rng = random.Random(seed)
    words = " ".join(TOY_TEXTS).split()
    docids = [f"g{i:03d}" for i in range(80)]
    with open(root / "corpus.jsonl", "a") as handle:
        for docid in docids:
            handle.write(json.dumps({"_id": docid, "title": "", "text": " ".join(rng.choices(words, k=12))}) + "\n")
    run = tmp_path / "bm25.trec"
    run.write_text("".join(f"{q['_id']} Q0 {d} {r + 1} {100 - r}.0 bm25\n" for q in TOY_QUERIES
                           for r, d in enumerate(rng.sample(docids, 40))))
    common = ["rerank", "--run", str(run), "--topics", str(root / "queries.jsonl"), "--corpus", str(root),
              "--reranker", "upr", "--rerank-depth", "30", "--model", str(tiny_lm_path), "--device", "cpu",
              "--dtype", "fp32", "--batch-size-rerank", "8", "-q"]
    return common


def test_sharded_rerank_merges_to_the_serial_run_byte_for_byte(tiny_lm_path, tmp_path):
    common = rerank_job(tiny_lm_path, tmp_path, 3)
    serial = CliRunner().invoke(cli, [*common, "--output", str(tmp_path / "serial.trec")])
    assert serial.exit_code == 0, serial.output

    out = tmp_path / "sharded.trec"
    for k in (2, 0):  # shards run anywhere, in any order
        done = CliRunner().invoke(cli, [*common, "--output", str(out), "--shard-id", str(k), "--shard-num", "3"])
        assert done.exit_code == 0, done.output
        assert done.stdout.strip() == f"{out}.shard-{k}-of-3"
    assert not out.exists()
    early = CliRunner().invoke(cli, [*common, "--output", str(out), "--merge-shards", "3"])
    assert early.exit_code == 3 and "shard-1-of-3: shard state file not found" in early.output
    assert CliRunner().invoke(cli, [*common, "--output", str(out), "--shard-id", "1", "--shard-num", "3"]).exit_code == 0
    merged = CliRunner().invoke(cli, [*common, "--output", str(out), "--merge-shards", "3"])
    assert merged.exit_code == 0, merged.output
    assert out.read_bytes() == (tmp_path / "serial.trec").read_bytes()
    assert not list(tmp_path.glob("sharded.trec.*"))  # shard files removed after the merge

    for bad in (["--shard-id", "3", "--shard-num", "3"], ["--shard-id", "0"], ["--shard-id", "0", "--shard-num", "2",
                                                                                "--merge-shards", "2"]):
        assert CliRunner().invoke(cli, [*common, "--output", str(out), *bad]).exit_code == 2, bad


def encode_job(tiny_lm_path, tmp_path, seed: int, extra_docs: int) -> list[str]:
    """The toy dataset plus ``extra_docs`` generated documents, and the common `encode` arguments (tiny frozen LM)."""
    root = write_beir(tmp_path / "big")
    rng = random.Random(seed)
    words = " ".join(TOY_TEXTS).split()
    with open(root / "corpus.jsonl", "a") as handle:
        for i in range(extra_docs):
            handle.write(json.dumps({"_id": f"g{i:03d}", "title": "",
                                     "text": " ".join(rng.choices(words, k=rng.randint(4, 20)))}) + "\n")
    return ["encode", "--encoder", "frozen-lm", "--model", str(tiny_lm_path), "--dataset", str(root),
            "--batch-size", "4", "--max-length", "32", "--device", "cpu", "--dtype", "fp32", "-q"]


def test_sharded_encode_merges_to_the_serial_index_byte_for_byte(tiny_lm_path, tmp_path):
    common = encode_job(tiny_lm_path, tmp_path, 5, 40)
    serial = CliRunner().invoke(cli, [*common, "--output", str(tmp_path / "serial")])
    assert serial.exit_code == 0, serial.output
    out = tmp_path / "sharded"
    counts = {}
    for k in (1, 0):
        done = CliRunner().invoke(cli, [*common, "--output", str(out), "--shard-id", str(k), "--shard-num", "3"])
        assert done.exit_code == 0, done.output
        counts[k] = json.loads(done.stdout)["num_docs"]  # this shard's documents, not the corpus'
    early = CliRunner().invoke(cli, [*common, "--output", str(out), "--merge-shards", "3"])
    assert early.exit_code == 3 and "shard-2-of-3: shard folder not found" in early.output and not out.exists()
    last = CliRunner().invoke(cli, [*common, "--output", str(out), "--shard-id", "2", "--shard-num", "3"])
    assert last.exit_code == 0, last.output
    counts[2] = json.loads(last.stdout)["num_docs"]
    # 46 documents in batches of 4: 12 batches, 4 per shard, the last batch (2 documents) in shard 2
    assert counts == {0: 16, 1: 16, 2: 14} and json.loads(serial.stdout)["num_docs"] == 46
    shard_seconds = [json.loads((tmp_path / f"sharded.shard-{k}-of-3" / "seconds.json").read_text())["seconds"]
                     for k in range(3)]
    merged = CliRunner().invoke(cli, [*common, "--output", str(out), "--merge-shards", "3"])
    assert merged.exit_code == 0, merged.output
    for name in ("index", "docid"):
        assert (out / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name
    # the index records the shards' encoding time together (the merge computes nothing; it recorded 0.0)
    assert all(s > 0 for s in shard_seconds)
    assert json.loads((out / "meta.json").read_text())["encode_seconds"] == round(sum(shard_seconds), 1)
    assert not list(tmp_path.glob("sharded.*"))


KILL_HOOK = """
import os
marker = os.environ.get("QPEFT_TEST_KILL_ONCE")
if marker:
    import pyserini_qpeft.rerank.lm as lm
    original = lm._State.append
    def append(self, records):
        original(self, records)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)  # the worker dies after its first saved batch; Ray retries the task
    lm._State.append = append
"""


def test_ray_engine_is_byte_identical_to_serial_even_when_a_worker_dies(tiny_lm_path, tmp_path, monkeypatch):
    import ray  # the [distributed] extra; `make test` installs it, so this test always runs in CI
    common = rerank_job(tiny_lm_path, tmp_path, 4)
    serial = CliRunner().invoke(cli, [*common, "--output", str(tmp_path / "serial.trec")])
    assert serial.exit_code == 0, serial.output

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("QPEFT_TEST_KILL_ONCE", str(marker))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray.trec"
        done = CliRunner().invoke(cli, [*common, "--output", str(out), "--engine", "ray", "--workers", "2"])
        assert done.exit_code == 0, done.output
    finally:
        ray.shutdown()
    assert marker.exists()  # a worker really died mid-shard
    assert out.read_bytes() == (tmp_path / "serial.trec").read_bytes()
    assert not list(tmp_path.glob("ray.trec.*"))


def test_ray_encode_is_byte_identical_to_serial(tiny_lm_path, tmp_path):
    import ray  # the [distributed] extra; `make test` installs it

    common = encode_job(tiny_lm_path, tmp_path, 6, 30)
    assert CliRunner().invoke(cli, [*common, "--output", str(tmp_path / "serial")]).exit_code == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        done = CliRunner().invoke(cli, [*common, "--output", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"])
        assert done.exit_code == 0, done.output
    finally:
        ray.shutdown()
    for name in ("index", "docid"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name
    assert not list(tmp_path.glob("ray.*"))


def test_ray_cluster_problems_and_worker_input_errors_get_their_exit_codes(tiny_lm_path, tmp_path):
    """Nothing at --ray-address: exit 3 at once (ray.init retried without end); --gpus-per-worker on a cluster
    without GPUs: exit 3 (no actor could start: it waited forever); a package error inside a worker (its shard
    state locked by another process): that error and its exit code, 3, not a Ray traceback and exit 1."""
    import fcntl
    import socket

    import ray  # the [distributed] extra; `make test` installs it

    common = rerank_job(tiny_lm_path, tmp_path, 5)
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "ray.trec"
    nobody = CliRunner().invoke(cli, [*common, "--output", str(out), "--engine", "ray", "--workers", "2",
                                      "--ray-address", f"127.0.0.1:{port}"])
    assert nobody.exit_code == 3 and "no Ray cluster answers at --ray-address" in nobody.output, nobody.output
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        gpus = CliRunner().invoke(cli, [*common, "--output", str(out), "--engine", "ray", "--workers", "2",
                                        "--gpus-per-worker", "1"])
        assert gpus.exit_code == 3 and "the Ray cluster has 0 GPUs" in gpus.output, gpus.output
        shard = tmp_path / "ray.trec.shard-0-of-8"
        with open(shard, "a") as holder:  # another process reranks into shard 0
            fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
            locked = CliRunner().invoke(cli, [*common, "--output", str(out), "--engine", "ray", "--workers", "2"])
        assert locked.exit_code == 3, locked.output
        assert "another process is reranking into this output" in locked.output
    finally:
        ray.shutdown()
    assert not out.exists()
