"""Speed of query-likelihood scoring: a naive scorer vs pyserini_qpeft's engine, same inputs, one process.

naive: fp32, ``model(input_ids).logits`` (full-vocabulary logits at every position), fixed batches in input
       order (right padded), no prefix cache.
ours:  :class:`pyserini_qpeft.lm.scoring.QueryLikelihoodScorer`: dtype from FrozenLM (bf16 on AMX CPUs), LM head
       only at query positions, documents grouped and length-sorted, prefix KV cache shared by all queries of a
       document.

Both score exactly the same token sequences (the scorer's own prompt ids), so scores are comparable.
Inputs: the first --queries test queries of a first-stage run (default runs/bm25-flat.beir-scifact-test.trec)
with their top --depth hits; without that run file, random corpus documents from --data.

Model FLOPs (stated formula): ``2 * N_body * T + 2 * V * H * L`` where N_body = non-embedding parameters
(the transformer body), T = real (non-padding) tokens pushed through the body, V x H = LM head, L = positions
given to the head; attention score FLOPs are not counted. "tokens/s" is the pairs' prompt tokens (prefix + query,
the work a one-pass scorer must cover) per second, the same numerator for both scorers.

On a GPU (``--device cuda``) the matmul peaks are measured on that GPU (8192^3, synchronised), the scorer uses
the GPU-sized batches of :func:`pyserini_qpeft.lm.memory.fit_to_device` unless --batch-size is given, and the
fraction of peak is against the bf16 (or fp32) peak measured in the same run. With fp32 among --dtypes, every
other dtype also reports its score differences and top-10 overlap against ours[fp32] (the precision guard, also
with --skip-naive). ``--dtypes fp32,int8,int8-body`` asks whether dynamic int8 quantization would speed up a CPU without
fast bf16 (its FLOPs are counted as fp32's).

Usage:  python benchmarks/bench_scoring.py --queries 8 --depth 100 [--model smollm2] [--data DIR]
        python benchmarks/bench_scoring.py --sample-docs 120 --depth 100   (the full rerank's document sharing)
        python benchmarks/bench_scoring.py --sample-docs 1000 --depth 100 --device cuda --dtypes bf16,fp32 --skip-naive
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

DEFAULT_RUN = Path(__file__).resolve().parent.parent / "runs" / "bm25-flat.beir-scifact-test.trec"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=8, help="number of test queries")
    parser.add_argument("--depth", type=int, default=100, help="documents per query")
    parser.add_argument("--model", default="smollm2", help="LM name or path (default: packaged SmolLM2-135M-Instruct)")
    parser.add_argument("--data", default="/work/shared/data/beir/scifact", help="BEIR dataset folder")
    parser.add_argument("--run", default=str(DEFAULT_RUN), help="first-stage run (used when it exists)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--sample-docs", type=int, default=None,
                        help="instead of the first --queries queries: ALL queries of the run x top --depth, then keep "
                             "every pair of N seeded-random distinct documents (a small workload with the full "
                             "rerank's pairs-per-document sharing)")
    parser.add_argument("--naive-batch-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=None, help="ours: pairs per suffix batch (default: config)")
    parser.add_argument("--prefix-batch-size", type=int, default=None, help="ours: documents per prefix batch")
    parser.add_argument("--dtypes", default="auto,fp32",
                        help="ours: comma-separated dtypes to time (auto = FrozenLM's choice for this machine; int8 = "
                             "fp32 with every Linear layer, the LM head included, dynamically quantized to int8 by "
                             "torch.ao's quantize_dynamic, int8-body = the same without the LM head: measurements on "
                             "CPU, not dtypes the package offers)")
    parser.add_argument("--skip-naive", action="store_true", help="only time ours")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    return parser.parse_args(argv)


def load_inputs(args: argparse.Namespace):
    """(query texts, documents) per pair and a description of where they came from."""
    from pyserini_qpeft.data import read_corpus_jsonl, read_qrels_file, read_queries_jsonl
    from pyserini_qpeft.types import read_run

    data = Path(args.data)
    queries = read_queries_jsonl(data / "queries.jsonl")
    corpus = {d.docid: d for d in read_corpus_jsonl(data / "corpus.jsonl")}
    if Path(args.run).is_file():
        run = read_run(args.run)
        if args.sample_docs:
            all_pairs = [(q, h.docid) for q in run.qids() for h in run[q][: args.depth]]
            docids = sorted({d for _, d in all_pairs})
            keep = set(random.Random(0).sample(docids, min(args.sample_docs, len(docids))))
            pairs = [(queries[q], corpus[d]) for q, d in all_pairs if d in keep]
            source = (f"{args.run}: all {len(run.qids())} queries x top-{args.depth} ({len(all_pairs)} pairs, "
                      f"{len(docids)} documents), every pair of {len(keep)} seeded-random documents")
        else:
            qids = run.qids()[: args.queries]
            pairs = [(queries[q], corpus[h.docid]) for q in qids for h in run[q][: args.depth]]
            source = f"{args.run}: first {len(qids)} queries x top-{args.depth}"
    else:
        qids = sorted(read_qrels_file(data / "qrels" / f"{args.split}.tsv"))[: args.queries]
        rng = random.Random(0)
        ids = sorted(corpus)
        pairs = [(queries[q], corpus[d]) for q in qids for d in rng.sample(ids, args.depth)]
        source = f"{data}: first {len(qids)} {args.split} queries x {args.depth} random documents (no run file)"
    return [p[0] for p in pairs], [p[1] for p in pairs], source


def matmul_peak(dtype, n: int = 2048, repeat: int = 5, device: str = "cpu") -> float:
    """GFLOP/s of a big square torch.matmul in ``dtype`` on ``device`` (best of ``repeat``; CUDA synchronised)."""
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    torch.matmul(a, b)
    sync()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def top10_overlap(reference: list[float], other: list[float], per_query: int, k: int = 10) -> float:
    """Mean per-query overlap of the top-k of ``other`` with that of ``reference`` (pairs grouped per query)."""
    overlap = []
    for s in range(0, len(reference), per_query):
        top = lambda xs: set(sorted(range(len(xs)), key=lambda i: -xs[i])[:k])
        n = min(k, len(reference[s:s + per_query]))
        overlap.append(len(top(reference[s:s + per_query]) & top(other[s:s + per_query])) / n)
    return sum(overlap) / len(overlap)


def naive_scores(lm, scorer, queries, docs, batch_size: int) -> tuple[list[float], dict]:
    """fp32 full-logits scoring in input order; returns scores and work counts."""
    import torch

    out, body_tokens, head_positions = [], 0, 0
    with torch.inference_mode():
        for start in range(0, len(queries), batch_size):
            qs, ds = queries[start:start + batch_size], docs[start:start + batch_size]
            seqs = [scorer.prompt_ids(q, d) for q, d in zip(qs, ds)]
            nq = [len(scorer.query_tokens(q)) for q in qs]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), scorer.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, s in enumerate(seqs):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for i, (s, n) in enumerate(zip(seqs, nq)):
                pos = torch.arange(len(s) - n - 1, len(s) - 1)
                out.append(logp[i, pos, torch.tensor(s[len(s) - n:])].mean().item())
            body_tokens += int(mask.sum())
            head_positions += ids.numel()
    return out, {"body_tokens": body_tokens, "head_positions": head_positions}


def ours_work(scorer, queries, docs) -> dict:
    """Real tokens through the body (each distinct prefix once + all suffixes) and LM-head positions."""
    prefixes = {}
    for d in docs:
        prefixes[(d.docid, d.title, d.text)] = len(scorer.doc_tokens(d).prefix)
    # the suffix runs "Question:" + all query tokens but the last (which predicts nothing scored)
    suffix = sum(len(scorer.prompts.question_ids) + len(scorer.query_tokens(q)) - 1 for q in queries)
    return {"body_tokens": sum(prefixes.values()) + suffix,
            "head_positions": sum(len(scorer.query_tokens(q)) for q in queries), "distinct_docs": len(prefixes)}


def main(argv=None) -> None:
    args = parse_args(argv)
    import dataclasses

    import torch

    from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
    from pyserini_qpeft.lm.scoring import QueryLikelihoodScorer, ScorerConfig

    queries, docs, source = load_inputs(args)
    config = ScorerConfig()
    if args.batch_size:
        config = dataclasses.replace(config, batch_size=args.batch_size)
    if args.prefix_batch_size:
        config = dataclasses.replace(config, prefix_batch_size=args.prefix_batch_size)
    from pyserini_qpeft.lm.backbone import resolve_device
    from pyserini_qpeft.lm.memory import fit_to_device

    device = resolve_device(args.device)
    n = 8192 if device.startswith("cuda") else 2048
    # each peak only where a timed dtype needs it: a bf16 matmul on a CPU without fast bf16 takes minutes
    peak = {"fp32": matmul_peak(torch.float32, n, device=device)}
    report = {"source": source, "pairs": len(queries), "model": None, "threads": torch.get_num_threads(),
              "device": device, "config": config.to_dict(), "matmul_peak_gflops": peak, "ours": {}}
    if device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(torch.device(device))
    results = {}
    for dtype in args.dtypes.split(","):
        quantized = dtype in ("int8", "int8-body")
        lm = FrozenLM.load(LMConfig(model=args.model, device=device, dtype="fp32" if quantized else dtype))
        if report["model"] is None:  # counted before any quantization (a quantized Linear has no parameters)
            emb = lm.model.get_input_embeddings().weight
            n_body = sum(p.numel() for n, p in lm.model.named_parameters() if p.data_ptr() != emb.data_ptr()
                         and "lm_head" not in n)
            head_flops = 2 * emb.shape[0] * emb.shape[1]
        if quantized:  # before the scorer takes its reference to the LM head
            target = lm.model if dtype == "int8" else lm.model.get_decoder()
            torch.ao.quantization.quantize_dynamic(target, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        scorer = QueryLikelihoodScorer(lm, config if args.batch_size else fit_to_device(lm, config))
        if report["model"] is None:
            prompt_tokens = sum(len(scorer.prompt_ids(q, d)) for q, d in zip(queries, docs))
            report.update(model=lm.model_id, body_params=n_body, prompt_tokens=prompt_tokens)
        scorer.score(queries[:4], docs[:4])  # warm-up
        t = time.perf_counter()
        results[dtype] = scorer.score(queries, docs)
        t_ours = time.perf_counter() - t
        work = ours_work(scorer, queries, docs)
        flops = 2 * n_body * work["body_tokens"] + head_flops * work["head_positions"]
        kind = "bf16" if lm.dtype == torch.bfloat16 else "fp32"
        if kind not in peak:
            peak[kind] = matmul_peak(torch.bfloat16, n, device=device)
        report["ours"][dtype] = {"dtype": f"qint8 ({dtype})" if quantized else str(lm.dtype),
                                 "batch_size": scorer.config.batch_size,
                                 "prefix_batch_size": scorer.config.prefix_batch_size,
                                 "seconds": t_ours, "pairs_per_s": len(queries) / t_ours,
                                 "tokens_per_s": prompt_tokens / t_ours, **work, "gflops": flops / t_ours / 1e9,
                                 "fraction_of_peak": flops / t_ours / 1e9 / peak[kind], "peak_kind": kind}
        del lm, scorer

    if "fp32" in results:  # the precision guard: every other dtype against ours in fp32
        for dtype, scores in results.items():
            if dtype != "fp32":
                diffs = [abs(a - b) for a, b in zip(results["fp32"], scores)]
                report["ours"][dtype]["vs_fp32"] = {"max_abs_score_diff": max(diffs),
                                                    "mean_abs_score_diff": sum(diffs) / len(diffs),
                                                    "top10_overlap": top10_overlap(results["fp32"], scores,
                                                                                   args.depth)}

    if not args.skip_naive:
        lm32 = FrozenLM.load(LMConfig(model=args.model, device=device, dtype="fp32"))
        naive_scorer = QueryLikelihoodScorer(lm32, config)
        t = time.perf_counter()
        naive, nwork = naive_scores(lm32, naive_scorer, queries, docs, args.naive_batch_size)
        t_naive = time.perf_counter() - t
        nflops = 2 * n_body * nwork["body_tokens"] + head_flops * nwork["head_positions"]
        report["naive"] = {"dtype": "torch.float32", "seconds": t_naive, "pairs_per_s": len(queries) / t_naive,
                           "tokens_per_s": prompt_tokens / t_naive, **nwork, "gflops": nflops / t_naive / 1e9,
                           "fraction_of_peak": nflops / t_naive / 1e9 / peak["fp32"], "peak_kind": "fp32"}
        for dtype, ours in results.items():
            entry = report["ours"][dtype]
            entry["speedup"] = t_naive / entry["seconds"]
            diffs = [abs(a - b) for a, b in zip(naive, ours)]
            entry["max_abs_score_diff"] = max(diffs)
            entry["mean_abs_score_diff"] = sum(diffs) / len(diffs)
            entry["top10_overlap"] = top10_overlap(naive, ours, args.depth)  # ranking agreement with fp32 naive

    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def print_report(r: dict) -> None:
    print(f"inputs: {r['source']}; {r['pairs']} pairs, {r['prompt_tokens']} prompt tokens; model {r['model']}; "
          f"{r['threads']} threads; body params {r['body_params'] / 1e6:.1f} M")
    print(f"device {r.get('gpu', r['device'])}; batches {[(x['batch_size'], x['prefix_batch_size']) for x in r['ours'].values()]}")
    bf16 = r["matmul_peak_gflops"].get("bf16")
    print(f"matmul peak: bf16 {f'{bf16:.0f} GFLOP/s' if bf16 is not None else 'not measured (no bf16 dtype timed)'}, "
          f"fp32 {r['matmul_peak_gflops']['fp32']:.0f} GFLOP/s")
    print(f"{'scorer':12} {'dtype':15} {'seconds':>8} {'pairs/s':>8} {'tokens/s':>9} {'body tok':>9} "
          f"{'head pos':>9} {'GFLOP/s':>8} {'of peak':>13} {'speed-up':>9} {'max|diff|':>9} {'top10':>6}")
    rows = ([("naive", r["naive"])] if "naive" in r else []) + [(f"ours[{k}]", v) for k, v in r["ours"].items()]
    for name, x in rows:
        extra = (f"{x['speedup']:8.1f}x {x['max_abs_score_diff']:9.4f} {x['top10_overlap']:6.2f}"
                 if "speedup" in x else f"{'':>9} {'':>9} {'':>6}")
        print(f"{name:12} {x['dtype']:15} {x['seconds']:8.1f} {x['pairs_per_s']:8.1f} {x['tokens_per_s']:9.0f} "
              f"{x['body_tokens']:9d} {x['head_positions']:9d} {x['gflops']:8.0f} "
              f"{x['fraction_of_peak']:7.1%} {x['peak_kind']:>5} {extra}")
    for name, x in r["ours"].items():
        if "vs_fp32" in x:
            v = x["vs_fp32"]
            print(f"precision guard ours[{name}] vs ours[fp32]: max|diff| {v['max_abs_score_diff']:.4f}, mean|diff| "
                  f"{v['mean_abs_score_diff']:.5f}, top-10 overlap {v['top10_overlap']:.3f}")
    first = next(iter(r["ours"].values()))
    print(f"distinct documents: {first['distinct_docs']} for {r['pairs']} pairs; score diffs are vs naive fp32 "
          f"(mean log-prob per query token); top10 = mean per-query overlap of the top-10 with naive's")


if __name__ == "__main__":
    main()
