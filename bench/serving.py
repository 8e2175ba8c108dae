"""HTTP serving benchmark: textclf against the HTTP ceiling and peer servers, in one run.

    python -m bench.serving                              # all systems, c = 1, 16, 64, 10 s each
    python -m bench.serving --systems textclf,constant --concurrency 64 --duration 5 --repeat 3
    python -m bench.serving --systems textclf,textclf:2,torchserve,torchserve:2

Each system is started as its own process group on 127.0.0.1, warmed up, measured with wrk
(one thread, a separate process) POSTing 30-word texts at each concurrency, then stopped.
Repeats give medians. `--rounds N` measures every system once per round, N rounds in turn, and
prints the textclf ratios of each round (see bench/rounds.py). Prints a table and writes
bench/results/serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import RESULTS, Processes, cpu_model, request_texts
from bench.cpuuse import CpuMeter
from bench.loadgen import median_point, run_wrk, write_script
from bench.plot import plot
from bench.report import print_table, ratios
from bench.rounds import merge_rounds, round_lines
from bench.systems import Options, System, start
from model.device import DTYPES

DEFAULT_SYSTEMS = "textclf,naive,constant,torchserve"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", default=DEFAULT_SYSTEMS,
                   help="comma list of NAME[:WORKERS]; NAME: textclf naive constant bare torchserve; "
                        "torchserve[:W]@REV serves model/network.py from git revision REV")
    p.add_argument("--concurrency", default="1,16,64", help="comma list of connection counts")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=10.0,
                   help="seconds of load at the highest concurrency after each start (JIT, "
                        "oneDNN kernels for new shapes: TorchServe ran ~35%% slower without)")
    p.add_argument("--point-warmup", type=float, default=2.0,
                   help="seconds of load at each concurrency before measuring it")
    p.add_argument("--repeat", type=int, default=1, help="measured runs per point (median)")
    p.add_argument("--rounds", type=int, default=1,
                   help="start and measure every system once per round, this many rounds in "
                        "turn (a drift of the machine's speed then falls on all systems)")
    p.add_argument("--words", type=int, default=30, help="words per request text")
    p.add_argument("--model-dir", type=Path, default=Path("artifacts/default"))
    p.add_argument("--textclf-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for textclf (e.g. TEXTCLF_MAX_BATCH_SIZE=64)")
    p.add_argument("--ts-batch-size", type=int, default=32, help="TorchServe batchSize")
    p.add_argument("--ts-delay-ms", type=int, default=2, help="TorchServe maxBatchDelay")
    p.add_argument("--ts-threads", type=int, default=1,
                   help="torch threads per TorchServe worker (0: torch's default; on 2 cores "
                        "that was ~20x slower, so 1 is TorchServe's best here)")
    p.add_argument("--ts-dtype", default="float32", choices=list(DTYPES),
                   help="precision of TorchServe's forward pass (textclf's: --textclf-env "
                        "TEXTCLF_DTYPE=...)")
    p.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    return p.parse_args(argv)


def measure_system(system: System, opts: Options, args: argparse.Namespace, procs: Processes,
                   bodies: list[bytes]) -> list[dict]:
    proc, launch, ready_s = start(system, opts, procs, bodies[0])
    print(f"# {system.label}: ready in {ready_s:.1f} s, {launch.url}", flush=True)
    script = write_script(bodies, "/" + launch.url.split("/", 3)[3], opts.workdir)
    rows = []
    try:
        if args.warmup > 0:
            run_wrk(launch.url, script, max(args.concurrency), args.warmup)
        for conc in args.concurrency:
            if args.point_warmup > 0:
                run_wrk(launch.url, script, conc, args.point_warmup)
            runs, cpu = [], []
            for _ in range(args.repeat):
                with CpuMeter(proc.pid) as meter:
                    runs.append(run_wrk(launch.url, script, conc, args.duration))
                cpu.append(meter.use.__dict__)
            point = median_point(runs)
            per_req = sorted(c["server"] * 1000 / r.rps for c, r in zip(cpu, runs, strict=True)
                             if r.rps > 0)
            rows.append({"system": system.label, "name": system.name, "workers": system.workers,
                         "concurrency": conc, **point.to_dict(),
                         "server_cpu_ms_per_request": round(per_req[len(per_req) // 2], 3)
                         if per_req else None,
                         "server_cpu_ms_per_run": per_req,
                         "runs": [r.to_dict() for r in runs], "cpu_cores": cpu,
                         "ready_s": round(ready_s, 2)})
            print(f"  c={conc:<3d} {point.rps:9.0f} req/s  p50 {point.p50_ms:7.2f} ms  "
                  f"p99 {point.p99_ms:7.2f} ms  errors {point.errors}  cpu {cpu[-1]}", flush=True)
    finally:
        procs.stop(proc)
    return rows


def measure_or_skip(system: System, opts: Options, args: argparse.Namespace, procs: Processes,
                    bodies: list[bytes], results: dict) -> list[dict]:
    """The system's rows, or none and the reason in results["skipped"] (then not retried)."""
    reason = system.unavailable()
    if reason is None:
        try:
            return measure_system(system, opts, args, procs, bodies)
        except RuntimeError as exc:
            reason = str(exc)
    results["skipped"][system.label] = reason
    print(f"# {system.label}: SKIPPED: {reason}", file=sys.stderr, flush=True)
    return []


def meta(args: argparse.Namespace, argv: list[str]) -> dict:
    import torch

    return {"command": "python -m bench.serving " + " ".join(argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
            "cpus": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version(),
            "torch": torch.__version__, "model_dir": str(args.model_dir),
            "duration_s": args.duration, "warmup_s": args.warmup,
            "point_warmup_s": args.point_warmup, "repeat": args.repeat, "rounds": args.rounds,
            "words": args.words, "loadavg_start": os.getloadavg(),
            "textclf_env": args.textclf_env, "ts_dtype": args.ts_dtype,
            "load_generator": "wrk -t1, Lua script, HTTP/1.1 keep-alive"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.rounds < 1 or args.repeat < 1:
        print("--rounds and --repeat must be at least 1", file=sys.stderr)
        return 2
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    systems = [System.parse(s) for s in args.systems.split(",") if s.strip()]
    if not (args.model_dir / "config.json").exists():
        print(f"no model artifact at {args.model_dir} (--model-dir)", file=sys.stderr)
        return 2
    bodies = [orjson.dumps({"inputs": t}) for t in request_texts(args.words)]
    results: dict = {"meta": meta(args, argv), "rows": [], "skipped": {}}
    with tempfile.TemporaryDirectory(prefix="textclf-bench-") as tmp, Processes() as procs:
        opts = Options(args.model_dir.resolve(), Path(tmp),
                       dict(kv.split("=", 1) for kv in args.textclf_env),
                       args.ts_batch_size, args.ts_delay_ms, args.ts_threads or None,
                       args.ts_dtype)
        for rnd in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"# round {rnd} of {args.rounds}", flush=True)
            for system in (s for s in systems if s.label not in results["skipped"]):
                results["rows"] += [dict(row, round=rnd) for row in
                                    measure_or_skip(system, opts, args, procs, bodies, results)]
    results["meta"]["loadavg_end"] = os.getloadavg()
    if args.rounds > 1:
        results["round_rows"], results["rows"] = results["rows"], merge_rounds(results["rows"])
    results["ratios"] = ratios(results["rows"])
    print_table(results)
    if args.rounds > 1:
        print("\n".join(round_lines(results["round_rows"])))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwritten {args.out} and {plot(results, args.out.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
