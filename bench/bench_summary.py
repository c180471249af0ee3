"""Benchmark summaries against human titles, from the body only, train and test desks apart.

``python -m bench.bench_summary [--data DIR] [--limit N] [--splits K]`` prints one JSON object.
Per data set with human titles, in the same run, ROUGE-L F1 against the title of:

* ``baseline``: the first non-greeting line of the body;
* ``extractive``: the current extractive summarizer (the default without a model);
* ``learned``: the learned summary (``triage.learn.summary_train``) trained on a TRAIN split
  and scored on the disjoint TEST split;
* ``ceiling_units`` / ``ceiling_sentences``: the most an extractive method could reach, the
  candidate unit (sentence, clause, segment, subject; finished as the learned summary finishes
  it) or the raw cleaned sentence with the best ROUGE-L per ticket, chosen with the title.

Splits: NLBSE'24 ships ``issues_train``/``issues_test`` (one split). Endava has none: each
split puts a row in TEST when the SHA-256 of ``seed:body`` is odd (half the rows), for seeds
``0..K-1``; the figures are medians over the splits, with min and max. Cross-desk: the model
trained on one data set's TRAIN rows scores the other's TEST rows (a desk it never saw).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.rouge import rouge_l_f1
from domain.models import SUMMARY_MAX_CHARS
from enrichers.summary import ExtractiveSummarizer
from enrichers.summary_model import LearnedSummarizer, SummaryModel, finish
from enrichers.text import is_greeting, parse_email, split_sentences
from triage.learn.summary_train import train_summary

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
NLBSE = "github-issues-nlbse24"
ENDAVA = "endava-support-tickets"

Pair = tuple[str, str]  # (body, human title)
Summarize = Callable[[str], str]


def first_non_greeting_line(body: str) -> str:
    """The baseline: the first line of the body that is neither empty nor a greeting."""
    for line in body.splitlines():
        if line.strip() and not is_greeting(line):
            return line.strip()
    return ""


def read_pairs(path: Path, limit: int | None) -> list[Pair]:
    """(body, title) pairs of the rows that have a title."""
    csv.field_size_limit(sys.maxsize)  # NLBSE bodies reach 208k characters
    with path.open(newline="", encoding="utf-8-sig") as handle:
        pairs = [
            (row["body"] or "", row["title"].strip())
            for row in csv.DictReader(handle)
            if (row.get("title") or "").strip()
        ]
    return pairs[:limit] if limit else pairs


def hash_split(pairs: Sequence[Pair], seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, test): a row is in TEST when the SHA-256 of ``seed:body`` is odd."""
    train: list[Pair] = []
    test: list[Pair] = []
    for pair in pairs:
        digest = hashlib.sha256(f"{seed}:{pair[0]}".encode()).digest()
        (test if digest[-1] & 1 else train).append(pair)
    return train, test


def _mean_rouge(pairs: Sequence[Pair], outputs: Sequence[str]) -> float:
    return statistics.fmean(rouge_l_f1(s, t) for s, (_, t) in zip(outputs, pairs, strict=True))


def _ceilings(model: SummaryModel, pairs: Sequence[Pair]) -> tuple[float, float]:
    """Mean best ROUGE-L per ticket over candidate units, and over raw cleaned sentences."""
    units_best, sentence_best = [], []
    for body, title in pairs:
        units = model.units(body)
        units_best.append(max((rouge_l_f1(finish(u.text), title) for u in units), default=0.0))
        sentences = split_sentences(parse_email(body).body)
        sentence_best.append(max((rouge_l_f1(s, title) for s in sentences), default=0.0))
    return statistics.fmean(units_best), statistics.fmean(sentence_best)


def _summarizer(summarizer: Any) -> Summarize:
    def summarize(body: str) -> str:
        candidate = summarizer.summarize("", body)
        return str(candidate.text) if candidate else ""

    return summarize


def train(pairs: Sequence[Pair], source: str) -> SummaryModel:
    """The learned summary of ``pairs`` (bodies → titles)."""
    return train_summary([b for b, _ in pairs], [t for _, t in pairs], source=source)


def evaluate(model: SummaryModel, test: Sequence[Pair], *, ceilings: bool = True) -> dict[str, Any]:
    """Every method's ROUGE-L on ``test`` in one run, ratios, lengths and throughput."""
    learned = _summarizer(LearnedSummarizer(model))
    started = time.perf_counter()
    ours = [learned(body) for body, _ in test]
    learned_rate = len(test) / (time.perf_counter() - started)
    started = time.perf_counter()
    extractive = [_summarizer(ExtractiveSummarizer())(body) for body, _ in test]
    extractive_rate = len(test) / (time.perf_counter() - started)
    baseline = [first_non_greeting_line(body) for body, _ in test]
    scores = {
        "baseline": _mean_rouge(test, baseline),
        "extractive": _mean_rouge(test, extractive),
        "learned": _mean_rouge(test, ours),
    }
    out: dict[str, Any] = {"n_test": len(test), **{k: round(v, 4) for k, v in scores.items()}}
    if ceilings:
        units, sentences = _ceilings(model, test)
        out["ceiling_units"], out["ceiling_sentences"] = round(units, 4), round(sentences, 4)
    base = scores["baseline"] or float("nan")
    out["learned_over_baseline"] = round(scores["learned"] / base, 3)
    out["extractive_over_baseline"] = round(scores["extractive"] / base, 3)
    out["learned_over_extractive"] = round(scores["learned"] / scores["extractive"], 3)
    out["share_le_160"] = sum(len(s) <= SUMMARY_MAX_CHARS for s in ours) / len(ours)
    produced = [s for s in ours if s]
    out["coverage"] = round(len(produced) / len(ours), 4)
    out["median_chars"] = statistics.median(len(s) for s in produced) if produced else 0
    out["throughput_per_s"] = {"learned": round(learned_rate), "extractive": round(extractive_rate)}
    return out


def _median_of(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    out: dict[str, Any] = {}
    for key in keys:
        values = [float(r[key]) for r in runs]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="rows per file (quick runs)")
    parser.add_argument("--splits", type=int, default=3, help="Endava hash splits (seeds)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {"datasets": {}, "cross_desk": {}}
    nlbse_train = read_pairs(args.data / NLBSE / "issues_train.csv", args.limit)
    nlbse_test = read_pairs(args.data / NLBSE / "issues_test.csv", args.limit)
    t0 = time.perf_counter()
    nlbse_model = train(nlbse_train, "issues_train.csv")
    nlbse = evaluate(nlbse_model, nlbse_test)
    nlbse["split"] = "issues_train → issues_test"
    nlbse["train_s"] = round(time.perf_counter() - t0, 1)
    report["datasets"]["nlbse24"] = nlbse
    endava = read_pairs(args.data / ENDAVA / "all_tickets.csv", args.limit)
    runs, endava_models = [], []
    for seed in range(args.splits):
        train_rows, test_rows = hash_split(endava, seed)
        t0 = time.perf_counter()
        endava_models.append(train(train_rows, f"all_tickets.csv seed {seed}"))
        run = evaluate(endava_models[-1], test_rows)
        run["train_s"] = round(time.perf_counter() - t0, 1)
        runs.append(run)
    report["datasets"]["endava_all_tickets"] = {
        "split": f"SHA-256(seed:body) odd → test, seeds 0..{args.splits - 1}; median (min, max)",
        "n_rows": len(endava),
        **_median_of(runs),
    }
    _, endava_test = hash_split(endava, 0)
    report["cross_desk"]["nlbse_train → endava_test(seed 0)"] = evaluate(
        nlbse_model, endava_test, ceilings=False
    )
    report["cross_desk"]["endava_train(seed 0) → nlbse_test"] = evaluate(
        endava_models[0], nlbse_test, ceilings=False
    )
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
