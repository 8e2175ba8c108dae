"""In-process benchmark: the predictor's batched path against the bare model forward.

    python -m bench.inprocess [--model-dir artifacts/default] [--batch-sizes 1,32,256]
                              [--dtype float32|bfloat16|float16]

predictor: Predictor.encode per text (tokenize) + Predictor.run_batch (pad, forward, softmax,
           lists), i.e. everything the service does per batch outside HTTP;
bare:      model(ids, lengths) on tensors built beforehand, under inference_mode (the model
           in --dtype, as TEXTCLF_DTYPE runs it).
Same texts (30-word BBC test texts), same threads. Rounds of at least --min-time seconds
alternate between the two; figures are medians over --repeat pairs. Prints sequences/s (wall
clock), predictor / bare, and the same ratio in CPU time (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.common import RESULTS, request_texts
from model.device import DTYPES
from service.predictor import Predictor


def timed_round(fn: Callable[[], object], min_time: float) -> tuple[int, float, float]:
    """(calls, wall seconds, CPU seconds of this process) calling fn for at least `min_time`."""
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < min_time or calls == 0:
        fn()
        calls += 1
    return calls, elapsed, time.process_time() - cpu


def compare(ours: Callable[[], object], bare: Callable[[], object], items: int, min_time: float,
            repeat: int) -> dict:
    """Rounds of the two alternate, so a change in machine load hits both alike; medians of
    sequences/s (wall and CPU time) and of the per-pair ratio."""
    ours(), bare()
    rows: dict[str, list[float]] = {k: [] for k in ("ours", "bare", "ours_cpu", "bare_cpu")}
    for _ in range(repeat):
        for name, fn in (("ours", ours), ("bare", bare)):
            calls, wall, cpu = timed_round(fn, min_time)
            rows[name].append(calls * items / wall)
            rows[name + "_cpu"].append(calls * items / max(cpu, 1e-9))
    ratios = [a / b for a, b in zip(rows["ours"], rows["bare"], strict=True)]
    cpu_ratios = [a / b for a, b in zip(rows["ours_cpu"], rows["bare_cpu"], strict=True)]
    med = statistics.median
    return {"predictor_seq_s": round(med(rows["ours"]), 1), "bare_seq_s": round(med(rows["bare"]), 1),
            "ratio": round(med(ratios), 3), "predictor_cpu_seq_s": round(med(rows["ours_cpu"]), 1),
            "bare_cpu_seq_s": round(med(rows["bare_cpu"]), 1), "cpu_ratio": round(med(cpu_ratios), 3)}


def measure(predictor: Predictor, texts: list[str], batch: int, min_time: float,
            repeat: int) -> dict:
    chunk = (texts * (batch // len(texts) + 1))[:batch]
    limit = predictor.max_tokens
    model = predictor.forward_model

    def predictor_path() -> object:
        return predictor.run_batch([predictor.encode(t)[:limit] for t in chunk])

    encoded = [predictor.encode(t)[:limit] for t in chunk]
    lengths = torch.tensor([max(1, len(e)) for e in encoded])
    ids = torch.zeros(len(encoded), int(lengths.max()), dtype=torch.long)
    for i, seq in enumerate(encoded):
        ids[i, : len(seq)] = torch.tensor(seq)

    @torch.inference_mode()
    def bare() -> object:
        return model(ids, lengths)

    return {"batch": batch, **compare(predictor_path, bare, batch, min_time, repeat)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path("artifacts/default"))
    p.add_argument("--batch-sizes", default="1,32,256")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1, as the service; 0: torch's default)")
    p.add_argument("--min-time", type=float, default=0.25, help="seconds per timed round")
    p.add_argument("--repeat", type=int, default=15, help="timed rounds per figure (median)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32", help="as TEXTCLF_DTYPE")
    p.add_argument("--out", type=Path, default=RESULTS / "inprocess.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Predictor.load(args.model_dir, torch.device("cpu"), dtype=DTYPES[args.dtype])
    predictor.warmup()
    texts = request_texts(30)
    rows = [measure(predictor, texts, int(b), args.min_time, args.repeat)
            for b in args.batch_sizes.split(",")]
    print(f"torch {torch.__version__}, {args.dtype}, {torch.get_num_threads()} thread(s), 30-word texts, "
          f"median of {args.repeat} x {args.min_time:g} s")
    print("| batch | predictor seq/s | bare forward seq/s | predictor / bare "
          "| CPU-time ratio |")
    print("|------:|----------------:|-------------------:|-----------------:|---------------:|")
    for r in rows:
        print(f"| {r['batch']:>5} | {r['predictor_seq_s']:>15.0f} | {r['bare_seq_s']:>18.0f} | "
              f"{r['ratio']:>16.2f} | {r['cpu_ratio']:>14.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"threads": torch.get_num_threads(), "dtype": args.dtype, "rows": rows}
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
