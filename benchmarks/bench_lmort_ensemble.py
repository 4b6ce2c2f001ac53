"""Cost of an LMORT seed ensemble in one index (``encode --encoder lmort:A,B,C``) against one tuner.

The members read the same frozen-LM layer states, so the ensemble runs the LM once per text and adds only the
small tuners' forwards. This script encodes the same documents live (the LM run, as a corpus encoding without a
state cache does) in one process: with the first member alone, with every member one after another (an ensemble
made of separate encodes: the LM once per member), and with the ensemble; it prints seconds, the ratios, and the
largest difference between the ensemble's vectors and the members' concatenated x 1/sqrt(n) (0 up to rounding).

Usage:  python benchmarks/bench_lmort_ensemble.py --docs 128 CKPT_A CKPT_B CKPT_C
"""
from __future__ import annotations

import argparse
import json
import math
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="LMORT checkpoints (>= 2) trained on the same layers")
    parser.add_argument("--docs", type=int, default=128, help="the first N documents of the corpus")
    parser.add_argument("--data", default="/work/shared/data/beir/scifact")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if len(args.checkpoints) < 2:
        parser.error("give at least two checkpoints")
    return args


def timed(encoder, texts, batch_size):
    start = time.perf_counter()
    vectors = encoder.encode_documents(texts, batch_size=batch_size, progress=False)
    return vectors, time.perf_counter() - start


def main(argv=None) -> None:
    args = parse_args(argv)
    import itertools

    import numpy as np
    import torch

    from pyserini_qpeft.data.beir import BeirDataset
    from pyserini_qpeft.search.encoders import build_encoder

    torch.manual_seed(0)
    texts = [d.contents() for d in itertools.islice(BeirDataset(args.data).iter_corpus(), args.docs)]
    ensemble = build_encoder("lmort:" + ",".join(args.checkpoints), device=args.device, dtype=args.dtype)
    lm = ensemble.model.lm
    members = [build_encoder(f"lmort:{c}", lm=lm) for c in args.checkpoints]
    timed(members[0], texts[:args.batch_size], args.batch_size)  # warm-up (allocator, kernels)
    member_vectors, member_seconds = zip(*(timed(m, texts, args.batch_size) for m in members))
    ensemble_vectors, ensemble_seconds = timed(ensemble, texts, args.batch_size)
    expected = np.concatenate(member_vectors, axis=1) / math.sqrt(len(members))
    result = {
        "docs": len(texts), "members": len(members), "device": str(lm.device), "dtype": args.dtype,
        "one_member_s": round(member_seconds[0], 2),
        "members_one_after_another_s": round(sum(member_seconds), 2),
        "ensemble_one_pass_s": round(ensemble_seconds, 2),
        "ensemble_vs_one_member": round(ensemble_seconds / member_seconds[0], 3),
        "separate_vs_ensemble": round(sum(member_seconds) / ensemble_seconds, 3),
        "max_abs_diff_vs_concatenated_members": float(np.abs(ensemble_vectors - expected).max()),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
