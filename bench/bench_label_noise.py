"""How far can a text-only classifier get on Endava ``category``? Prints one JSON object.

Two measurements that bound coverage at 95 % precision from the data side:

* **Near-duplicate agreement.** Every ticket is paired with its most similar other ticket
  (cosine over the model's own TF-IDF features, leave-one-out). A text-only model gives
  near-identical texts the same answer, so among pairs that are practically the same text the
  rate at which the humans' labels agree caps the precision of the *easiest* tickets. From a
  pair agreement ``a`` the implied share of tickets carrying their text's majority label is
  ``(1 + sqrt(2a - 1)) / 2`` (two-label approximation).
* **Split spread.** Coverage at 95 % precision and macro-F1 of our model and of the issue's
  TF-IDF + LR baseline (C=10) on several 20 % stratified splits (the test set has about 1,090
  tickets, and both figures move by several points from split to split), and what the stored
  thresholds deliver on each split for category and for sub_category1 given the category.

    python -m bench.bench_label_noise [--data DIR] [--seeds 5]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.bench_classify import ENDAVA, ROOT, _rows, _text, baseline  # noqa: E402
from enrichers.features import FeatureConfig, Vectoriser  # noqa: E402
from triage.learn.evaluate import drop_rare  # noqa: E402
from triage.learn.report import evaluate_fields  # noqa: E402

BINS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0001)


def nearest_neighbours(texts: list[str]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(index, cosine) of each text's most similar *other* text."""
    from scipy import sparse

    vec = Vectoriser.fit(texts, FeatureConfig())
    rows = vec.transform(texts)
    x = sparse.csr_matrix(
        (rows.data.astype(np.float64), rows.indices, rows.indptr),
        shape=(len(texts), rows.n_features),
    )
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ x
    sims = (x @ x.T).toarray()
    np.fill_diagonal(sims, -1.0)
    nn = sims.argmax(axis=1)
    return nn, sims[np.arange(len(texts)), nn]


def majority_share(agreement: float) -> float:
    """Share of tickets with their text's majority label implied by pair agreement (2 labels)."""
    return (1.0 + math.sqrt(max(2.0 * agreement - 1.0, 0.0))) / 2.0


def duplicate_agreement(texts: list[str], labels: list[str]) -> list[dict[str, Any]]:
    """Label agreement of each ticket with its nearest other ticket, by similarity band."""
    nn, sim = nearest_neighbours(texts)
    y = np.array(labels)
    agree = y == y[nn]
    out = []
    for low, high in itertools.pairwise(BINS):
        band = (sim >= low) & (sim < high)
        rate = float(agree[band].mean()) if band.any() else None
        out.append(
            {
                "cosine": [low, min(high, 1.0)],
                "tickets": int(band.sum()),
                "label_agreement": None if rate is None else round(rate, 4),
                "implied_majority_share": None if rate is None else round(majority_share(rate), 4),
            }
        )
    return out


SCORES = ("accuracy", "macro_f1", "coverage_at_precision_95")
AT_THRESHOLD = ("coverage_at_threshold", "precision_at_threshold")


def _spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"per_seed": runs}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        if values:
            out[key] = {
                "median": round(statistics.median(values), 4),
                "min": min(values),
                "max": max(values),
            }
    return out


def split_spread(
    texts: list[str], labels: list[str], seeds: int, subcategory: list[str] | None = None
) -> dict[str, Any]:
    """Per split: ours and the baseline on category; with ``subcategory``, that field too
    (conditioned on the true category), to see whether stored thresholds keep their promise."""
    ours: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    sub: list[dict[str, Any]] = []
    columns = {"category": labels, **({"subcategory": subcategory} if subcategory else {})}
    for seed in range(seeds):
        evs = evaluate_fields(
            texts, columns, parents={"subcategory": "category"} if subcategory else None, seed=seed
        )
        ev = evs["category"].summary()
        ours.append({k: ev[k] for k in (*SCORES, *AT_THRESHOLD)})
        b = baseline(texts, labels, seed=seed, c=10.0)
        base.append({k: b[k] for k in SCORES})
        if subcategory:
            ev = evs["subcategory"].summary()
            sub.append({k: ev[k] for k in (*SCORES, *AT_THRESHOLD)})
    out = {"seeds": list(range(seeds)), "ours": _spread(ours), "baseline_c10": _spread(base)}
    if sub:
        out["subcategory_ours"] = _spread(sub)
    return out


def main() -> None:
    """Run both measurements and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seeds", type=int, default=5, help="number of splits (0 to skip)")
    args = parser.parse_args()
    rows = _rows(args.data / ENDAVA)
    texts = [_text(r) for r in rows]
    labels = [r["category"] for r in rows]
    kept, _, _ = drop_rare(labels, 5)
    result: dict[str, Any] = {
        "tickets": len(kept),
        "nearest_neighbour_agreement": duplicate_agreement(
            [texts[i] for i in kept], [labels[i] for i in kept]
        ),
    }
    if args.seeds > 0:
        subcategory = [r["sub_category1"] for r in rows]
        result["split_spread"] = split_spread(texts, labels, args.seeds, subcategory)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
