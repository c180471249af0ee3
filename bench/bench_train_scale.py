"""Training time against the row count, beside the TF-IDF + LR baseline. Prints one JSON object.

Sizes (default 5k, 20k, 100k rows) are drawn from the Endava ``all_tickets.csv`` rows (title +
body) with ``bench_classify.synthetic_rows``: rows resampled with replacement, 20 % of each
body's words dropped at random and 1–3 Zipf-distributed novel words inserted, so that larger
sets are not plain copies and the vocabulary keeps growing as a larger desk's would. Every size
trains the same fields (default ``category``, ``sub_category1`` and ``business_service``, one
model) and the baseline trains the same fields in the same process right before it:
scikit-learn's ``TfidfVectorizer()`` once and one ``LogisticRegression()`` (defaults) per field.

Reported per size: median seconds over ``--repeats`` (one run at the largest size), ours /
baseline, and the growth of each against the growth of the row count (linear growth: the time
ratio equals the row ratio; we report ``growth_vs_linear`` = time ratio / row ratio).

    python -m bench.bench_train_scale [--data DIR] [--sizes 5000,20000,100000] [--repeats 3]
        [--fields category,sub_category1,business_service] [--ensemble-upto 20000]

``--ensemble-upto N`` also times the previous SVM + NB-SVM + LR ensemble at sizes ≤ N.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.bench_classify import ENDAVA, ROOT, _rows, _text, synthetic_rows  # noqa: E402
from triage.learn.evaluate import drop_rare  # noqa: E402
from triage.learn.train import ENSEMBLE, TrainConfig, train_model  # noqa: E402

TARGET_RATIO_AT_20K = 3.0


def baseline_fit(texts: Sequence[str], labels: dict[str, list[str]]) -> None:
    """The baseline's training: one ``TfidfVectorizer`` and one default LR per field."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    x = TfidfVectorizer().fit_transform(texts)
    for column in labels.values():
        kept, _, _ = drop_rare(column, 5)  # the rows ours trains on, too
        LogisticRegression(max_iter=1000).fit(x[kept], [column[i] for i in kept])


def _timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    rows: list[dict[str, str]],
    sizes: Sequence[int],
    fields: Sequence[str],
    repeats: int,
    ensemble_upto: int = 0,
) -> dict[str, Any]:
    """Seconds per size for ours, the baseline (and optionally the old ensemble), and growth."""
    out: dict[str, Any] = {"sizes": {}}
    for size in sizes:
        sample = synthetic_rows(rows, size, seed=size)
        texts = [_text(r) for r in sample]
        labels = {f: [r[f] for r in sample] for f in fields}
        runs = 1 if size == max(sizes) and len(sizes) > 1 else repeats
        base = _timed(functools.partial(baseline_fit, texts, labels), runs)
        ours = _timed(functools.partial(train_model, texts, labels), runs)
        entry: dict[str, Any] = {
            "rows": size,
            "runs": runs,
            "baseline_s": round(base, 2),
            "ours_s": round(ours, 2),
            "ours_over_baseline": round(ours / base, 2),
        }
        if size <= ensemble_upto:
            config = TrainConfig(members=ENSEMBLE)
            old = _timed(functools.partial(train_model, texts, labels, config=config), 1)
            entry["ensemble_s"] = round(old, 2)
            entry["ensemble_over_baseline"] = round(old / base, 2)
        out["sizes"][str(size)] = entry
    ordered = sorted(sizes)
    growth = {}
    for small, large in itertools.pairwise(ordered):
        a, b = out["sizes"][str(small)], out["sizes"][str(large)]
        rows_ratio = large / small
        growth[f"{small}->{large}"] = {
            "rows_ratio": round(rows_ratio, 2),
            "ours_time_ratio": round(b["ours_s"] / a["ours_s"], 2),
            "baseline_time_ratio": round(b["baseline_s"] / a["baseline_s"], 2),
            "ours_growth_vs_linear": round(b["ours_s"] / a["ours_s"] / rows_ratio, 2),
        }
    out["growth"] = growth
    return out


def main() -> None:
    """Time every size and print one JSON object with the targets."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--sizes", default="5000,20000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fields", default="category,sub_category1,business_service")
    parser.add_argument("--ensemble-upto", type=int, default=0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    fields = args.fields.split(",")
    result = measure(_rows(args.data / ENDAVA), sizes, fields, args.repeats, args.ensemble_upto)
    result["data"] = "Endava all_tickets.csv resampled (20 % words dropped, Zipf novel words)"
    result["fields"] = fields
    targets: dict[str, bool] = {}
    if "20000" in result["sizes"]:
        ratio = result["sizes"]["20000"]["ours_over_baseline"]
        targets["ours_le_3x_baseline_at_20k"] = ratio <= TARGET_RATIO_AT_20K
    # "No worse than linear": each step's time ratio within 10 % of its row ratio.
    targets["no_worse_than_linear"] = all(
        g["ours_growth_vs_linear"] <= 1.1 for g in result["growth"].values()
    )
    result["targets"] = targets
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
