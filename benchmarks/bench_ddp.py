"""Data-parallel training overhead: `train qpeft` in one process against `accelerate launch` with N processes.

Same command, same global batch, timed in one run: both train --steps steps of Q-PEFT on the first-stage negatives
of the training split; the timing is the loop's own training time (``trainer_state.json``: sampling, LM forward
and backward, gradient sum, AdamW; no model loading or dev evaluation). It prints seconds per step for each, their
ratio, and the largest weight difference between the two checkpoints (float rounding, see
``tests/test_data_parallel.py``).

Usage:  python benchmarks/bench_ddp.py --processes 2 --steps 3 --batch-size 4
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN = ROOT / "runs" / "bm25-flat.beir-scifact-train.trec"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--variant", default="attn")
    parser.add_argument("--negatives", default=str(DEFAULT_RUN))
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args(argv)

    import torch
    from safetensors.torch import load_file

    if not Path(args.negatives).is_file():
        raise SystemExit(f"{args.negatives}: no first-stage run of the training queries; make it with `pyserini-qpeft "
                         "search --bm25 --index indexes/lucene-beir-scifact-flat --topics beir-v1.0.0-scifact-train "
                         "--output runs/bm25-flat.beir-scifact-train.trec --hits 1000 --remove-query` (or pass "
                         "--negatives)")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    train = ["-m", "pyserini_qpeft", "train", "qpeft", "--variant", args.variant, "--dataset", args.dataset,
             "--negatives", args.negatives, "--epochs", "1", "--max-steps", str(args.steps), "--batch-size",
             str(args.batch_size), "--dev-size", "2", "--dev-depth", "1", "--model", args.model, "--device", "cpu",
             "--dtype", "fp32", "--quiet"]
    launchers = {"one process": [sys.executable],
                 f"{args.processes} processes": [accelerate, "launch", "--multi_gpu", "--num_processes",
                                                 str(args.processes), "--num_machines", "1", "--mixed_precision",
                                                 "no", "--dynamo_backend", "no", "--main_process_port", "0"]}
    results, weights = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for k, (name, launcher) in enumerate(launchers.items()):
            out = Path(work) / f"run-{k}"
            subprocess.run([*launcher, *train, "--output", str(out)], check=True, env=dict(os.environ),
                           stdout=subprocess.DEVNULL)
            state = json.loads((out / "trainer_state.json").read_text())
            results[name] = state["train_seconds"] / state["global_step"]
            weights[name] = load_file(str(out / "best" / "qpeft_model.safetensors"))
    (a, b) = weights.values()
    diffs = {key: float((a[key] - b[key]).abs().max()) for key in a}
    worst = max(diffs, key=diffs.get)
    (one, many) = results.values()
    print(json.dumps({"cpus": os.cpu_count(), "torch_threads_one_process": torch.get_num_threads(),
                      "steps": args.steps, "batch_size": args.batch_size,
                      **{f"seconds_per_step ({name})": round(v, 1) for name, v in results.items()},
                      "parallel_over_one": round(many / one, 2), "max_weight_difference": {worst: diffs[worst]},
                      "max_weight_difference_elsewhere": max(v for k, v in diffs.items() if k != worst)}))


if __name__ == "__main__":
    main()
