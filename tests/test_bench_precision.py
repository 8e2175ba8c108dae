"""bench/precision.py: float32 is its own reference, a lower precision is measured against it,
and the table says which precisions this CPU runs natively."""

from __future__ import annotations

from bench.precision import compare_dtypes, parse_args, table
from tests.toy_sentiment import toy_corpus


def test_rows_compare_each_precision_with_float32(toy_artifact) -> None:
    texts, labels = toy_corpus(40, seed=1)
    names = [toy_artifact.labels[y] for y in labels]
    args = parse_args(["--dtypes", "bfloat16", "--batch", "8", "--min-time", "0.01",
                       "--repeat", "1"])
    assert args.dtypes == ["float32", "bfloat16"]  # the reference always comes first
    rows = compare_dtypes(toy_artifact, texts, names, args.dtypes, args)
    fp32, bf16 = rows
    assert (fp32["labels_changed"], fp32["max_prob_diff"]) == (0, 0.0)
    assert fp32["native"] is True and fp32["accuracy"] > 0.9  # the toy model learned its task
    assert 0 < bf16["max_prob_diff"] < 0.05 and bf16["labels_changed"] <= 2
    assert abs(bf16["accuracy"] - fp32["accuracy"]) <= 2 / len(texts)
    assert all(row["texts_per_s"] > 0 for row in rows)
    result = {"model": "toy", "version": "v", "dataset": "toy", "test_texts": len(texts),
              "batch": 8, "threads": 1, "torch": "t", "cpu_model": "cpu", "rows": rows}
    lines = table(result).splitlines()
    assert lines[3].startswith("| float32 | yes | ") and " | 1.00 | " in lines[3]
    assert lines[4].startswith("| bfloat16 | ")
