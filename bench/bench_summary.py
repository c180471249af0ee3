"""Benchmark the extractive summarizer against human titles, from the body only.

``python -m bench.bench_summary [--data DIR] [--limit N] [--split test|train|all]`` prints one
JSON object: per dataset the ROUGE-L F1 of our summaries and of the baseline "first non-greeting
line" against the human title, their ratio, summary lengths and throughput.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.rouge import rouge_l_f1
from domain.models import SUMMARY_MAX_CHARS
from enrichers.summary import ExtractiveSummarizer
from enrichers.text import is_greeting

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
NLBSE = "github-issues-nlbse24"
ENDAVA = "endava-support-tickets"
#: "Typical" tickets for the throughput target: bodies of 0.5-2 kB (the NLBSE median is ~1.1 kB).
TYPICAL_CHARS = (500, 2000)

Pair = tuple[str, str]  # (body, human title)


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


def evaluate(pairs: Sequence[Pair], summarize: Callable[[str], str]) -> dict[str, float | None]:
    """ROUGE-L F1 of ours and of the baseline, lengths, coverage and throughput."""
    started = time.perf_counter()
    ours = [summarize(body) for body, _ in pairs]
    elapsed = time.perf_counter() - started
    baseline = [first_non_greeting_line(body) for body, _ in pairs]
    ours_f = statistics.fmean(rouge_l_f1(s, t) for s, (_, t) in zip(ours, pairs, strict=True))
    base_f = statistics.fmean(rouge_l_f1(s, t) for s, (_, t) in zip(baseline, pairs, strict=True))
    produced = [s for s in ours if s]
    return {
        "n": len(pairs),
        "rouge_l_f_ours": round(ours_f, 4),
        "rouge_l_f_baseline": round(base_f, 4),
        "ratio_ours_over_baseline": round(ours_f / base_f, 3) if base_f else float("nan"),
        "coverage": round(len(produced) / len(pairs), 4),
        "median_summary_chars": statistics.median(len(s) for s in produced) if produced else 0,
        "median_baseline_chars": statistics.median(len(s) for s in baseline),
        "share_le_160": sum(len(s) <= SUMMARY_MAX_CHARS for s in ours) / len(ours),
        "median_body_chars": statistics.median(len(body) for body, _ in pairs),
        "throughput_per_s": round(len(pairs) / elapsed, 1),
        "typical_throughput_per_s": _throughput(pairs, summarize),
    }


def _throughput(pairs: Sequence[Pair], summarize: Callable[[str], str]) -> float | None:
    """Summaries per second over the bodies of typical size, best of three passes."""
    bodies = [body for body, _ in pairs if TYPICAL_CHARS[0] <= len(body) <= TYPICAL_CHARS[1]]
    if len(bodies) < 20:
        return None
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for body in bodies:
            summarize(body)
        best = max(best, len(bodies) / (time.perf_counter() - started))
    return round(best, 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--split", choices=("test", "train", "all"), default="test")
    parser.add_argument("--target-chars", type=int, default=None)
    args = parser.parse_args(argv)
    kwargs = {"target_chars": args.target_chars} if args.target_chars else {}
    summarizer = ExtractiveSummarizer(**kwargs)

    def summarize(body: str) -> str:
        candidate = summarizer.summarize("", body)
        return candidate.text if candidate else ""

    splits = ("test", "train") if args.split == "all" else (args.split,)
    datasets = {
        f"nlbse24_{split}": read_pairs(args.data / NLBSE / f"issues_{split}.csv", args.limit)
        for split in splits
    }
    datasets["endava_all_tickets"] = read_pairs(args.data / ENDAVA / "all_tickets.csv", args.limit)
    report = {
        "summarizer": {"name": summarizer.name, "target_chars": summarizer.target_chars},
        "datasets": {name: evaluate(pairs, summarize) for name, pairs in datasets.items()},
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
