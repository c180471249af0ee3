"""The body of ``evaluate``: score, record the run, print JSON or a summary, write the HTML.

``--json`` prints one object: ``run`` (``run_record.run_block``: when, data file and hash,
columns, parameters, mapping, model hashes) and ``fields``, per field the summary figures plus
``classes`` in natural order with the mapping's raw values and human labels (``--mapping``).

``--llm`` scores the LLM classifier configured by ``ENRICH_LLM__*`` (docs/llm.md) the same
way: its labels and descriptions come from the mapping (``--mapping``, else the embedded
default), each ticket is one request, the rows are split stratified (``--test-size``,
``--seed``), the threshold is picked on the first part by the rule ``train`` uses (Wilson lower
bound at ``--target-precision``, at least 20 filled) and scored on the held-out part: the same
report. The threshold to put into the mapping's ``min_confidence`` is picked by that rule on
every row (as ``train`` picks its stored one on all out-of-fold rows); it is printed, recorded
per field as ``recommended_min_confidence`` and written as YAML by ``--llm-thresholds FILE``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from domain.errors import ConfigError
from triage.learn.evaluate import FieldEvaluation, score_field
from triage.learn.run_record import model_version
from triage.learn.sources import LabelledData

if TYPE_CHECKING:
    from domain.mapping import FieldMapping
    from enrichers.learned import TextModel
    from enrichers.llm_classifier import LlmClassifier

__all__ = [
    "add_llm_arguments",
    "evaluate_and_report",
    "run_parameters",
    "score_llm",
    "score_model",
]

ABSTAINED = "(abstained)"


def add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--llm`` and ``--llm-thresholds`` to the ``evaluate`` parser."""
    parser.add_argument(
        "--llm",
        action="store_true",
        help="score the LLM classifier of ENRICH_LLM__* (labels and descriptions from "
        "--mapping) instead of a learned model",
    )
    parser.add_argument(
        "--llm-thresholds",
        metavar="FILE",
        help="with --llm: write the recommended min_confidence per field as mapping YAML",
    )


def evaluate_and_report(
    args: argparse.Namespace,
    data: LabelledData,
    *,
    parents: dict[str, str],
    config: Any,
    text_columns: Sequence[str],
    label_columns: Mapping[str, str],
    started: datetime,
    clock: Callable[[], datetime],
    out: TextIO,
) -> int:
    """Evaluate ``data`` as ``args`` say (train on a split, or ``--model``) and report it."""
    from domain.mapping import load_mapping
    from triage.learn.report import evaluate_fields, write_html
    from triage.learn.run_record import class_rows, label_names, run_block

    mapping = load_mapping(args.mapping) if args.mapping else None
    llm = bool(getattr(args, "llm", False))
    if llm:
        if args.model:
            raise ConfigError("--llm and --model exclude each other")
        mapping = mapping or load_mapping(None)
        results = _score_llm_from_settings(args, data, mapping, config, text_columns)
    elif args.model:
        from triage.model_store import load_model

        results = score_model(
            load_model(args.model), data.texts, data.labels, location=args.model, parents=parents
        )
    else:
        results = evaluate_fields(
            data.texts,
            data.labels,
            config=config,
            parents=parents,
            test_size=args.test_size,
            seed=args.seed,
        )
    run = run_block(
        data_path=args.data,
        rows=len(data.texts),
        text_columns=text_columns,
        label_columns=label_columns,
        parameters=run_parameters(args, parents),
        results=results,
        mapping=mapping,
        mapping_path=args.mapping,
        started_at=started,
        now=clock,
    )
    names = label_names(mapping) if mapping else {}
    if args.html:
        write_html(
            results,
            Path(args.html),
            title=f"Model evaluation: {data.source}",
            target=args.target_precision,
            run=run,
            names=names,
        )
    if llm and getattr(args, "llm_thresholds", None):
        _write_thresholds(results, Path(args.llm_thresholds))
    if args.json:
        fields = {
            name: {**ev.summary(), "classes": class_rows(ev, names.get(name))}
            for name, ev in results.items()
        }
        out.write(json.dumps({"run": run, "fields": fields}, ensure_ascii=False) + "\n")
        return 0
    for name, ev in results.items():
        s = ev.summary()
        out.write(
            f"{name}: accuracy {s['accuracy']}, macro-F1 {s['macro_f1']}, coverage@95% "
            f"{s['coverage_at_precision_95']}, threshold {s['threshold_at_precision_95']}\n"
        )
    if llm:
        _print_thresholds(results, out)
    return 0


def run_parameters(args: argparse.Namespace, parents: Mapping[str, str]) -> dict[str, Any]:
    """What an evaluate run was asked to do, as its report records it."""
    if getattr(args, "llm", False):  # nothing is trained; the threshold is picked on a split
        return {
            "target_precision": args.target_precision,
            "test_size": args.test_size,
            "seed": args.seed,
            "llm": True,
            "parents": {},
        }
    if args.model:  # nothing is trained: only what scoring uses
        return {"target_precision": args.target_precision, "parents": dict(parents)}
    return {
        "target_precision": args.target_precision,
        "test_size": args.test_size,
        "seed": args.seed,
        "folds": args.folds,
        "min_class": args.min_class,
        "c": args.c,
        "jobs": args.jobs,
        "parents": dict(parents),
    }


def score_model(
    model: TextModel,
    texts: Sequence[str],
    labels: Mapping[str, Sequence[str | None]],
    *,
    location: str,
    parents: Mapping[str, str] | None = None,
) -> dict[str, FieldEvaluation]:
    """Score a stored model on every labelled row of the fields it predicts (no training).

    A child field (subcategory) is scored given the true parent value when the data has it.
    The rows should be tickets the model was not trained on.
    """
    fields = [name for name in labels if name in model.fields]
    if not fields:
        raise ConfigError(
            f"the model predicts {', '.join(model.fields)}: none of the --label fields"
        )
    parents = dict(parents or {})
    given = [{p: labels[p][i] for p in parents.values() if p in labels} for i in range(len(texts))]
    predictions = model.predict(texts, given)
    version = model_version(model, location=location)
    results: dict[str, FieldEvaluation] = {}
    for name in fields:
        rows = [i for i, label in enumerate(labels[name]) if label]
        threshold = model.threshold(name)
        results[name] = score_field(
            [str(labels[name][i]) for i in rows],
            [predictions[name][i] for i in rows],
            n_train=int(model.metadata["fields"][name].get("n_train", 0)),
            dropped_rows=0,
            threshold=None if threshold == float("inf") else threshold,
        )
        results[name].model = version
    return results


def _score_llm_from_settings(
    args: argparse.Namespace,
    data: LabelledData,
    mapping: FieldMapping,
    config: Any,
    text_columns: Sequence[str],
) -> dict[str, FieldEvaluation]:
    """``score_llm`` with the classifier of ``ENRICH_LLM__*`` (``ConfigError`` when off)."""
    from domain.settings import load_settings
    from triage.llm_wiring import build_llm_classifier

    settings = load_settings(backfill=False)
    if settings.llm is None:
        raise ConfigError("--llm needs the LLM settings (ENRICH_LLM__ENDPOINT, ... docs/llm.md)")
    missing = [f for f in data.labels if not mapping.values.get(f)]
    if missing:
        raise ConfigError(
            f"--llm: the mapping has no labels for {', '.join(missing)} (values.<field>)"
        )
    classifier = build_llm_classifier(settings, mapping, fields=list(data.labels))
    llm = settings.llm
    if classifier is None or not classifier.fields:
        raise ConfigError("--llm: no field to classify (are the fields' modes off?)")
    jobs = args.jobs if args.jobs and args.jobs > 0 else 4
    return score_llm(
        classifier,
        data.texts,
        data.labels,
        mapping=mapping,
        titled=len(text_columns) > 1,
        target=args.target_precision,
        z=float(getattr(config, "precision_z", 1.645)),
        min_covered=int(getattr(config, "min_covered", 20)),
        test_size=args.test_size,
        seed=args.seed,
        jobs=jobs,
        model={
            "kind": "llm",
            "location": f"{llm.deployment} ({llm.flavour}, api-version {llm.api_version})",
            "created_at": "-",
        },
    )


def score_llm(
    classifier: LlmClassifier,
    texts: Sequence[str],
    labels: Mapping[str, Sequence[str | None]],
    *,
    mapping: FieldMapping,
    titled: bool = True,
    target: float = 0.95,
    z: float = 1.645,
    min_covered: int = 20,
    test_size: float = 0.2,
    seed: int = 0,
    jobs: int = 1,
    model: Mapping[str, Any] | None = None,
) -> dict[str, FieldEvaluation]:
    """Score an LLM classifier on labelled rows as a learned model is scored.

    One request per ticket (all fields); labels may be canonical or the mapping's raw values.
    Per field the labelled rows are split stratified: the threshold is picked on the first
    part (Wilson lower bound ``z`` at ``target``, ``min_covered`` filled), the figures are
    measured on the held-out part. ``extra`` holds ``recommended_min_confidence`` (the same
    rule on every row: what the mapping should use) and how many answers abstained.
    """
    from concurrent.futures import ThreadPoolExecutor

    from domain.models import Ticket
    from triage.learn.evaluate import pick_threshold

    def ticket(text: str) -> Ticket:
        title, _, body = text.partition("\n") if titled else ("", "", text)
        return Ticket(title=title, description=body)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        answers = list(pool.map(lambda t: classifier.classify(ticket(t), {}), texts))
    first = next((classifier.build_request(ticket(t)) for t in texts if t.strip()), None)
    prompt = first["messages"][0]["content"] if first else ""
    version = {
        **(model or {"kind": "llm", "location": classifier.model_name, "created_at": "-"}),
        "sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
    }
    results: dict[str, FieldEvaluation] = {}
    for name, column in labels.items():
        rows = [i for i, label in enumerate(column) if label]
        truth = [mapping.to_canonical(name, str(column[i])) for i in rows]
        predicted: list[tuple[str, float]] = []
        for i in rows:
            answer = answers[i].get(name)
            if answer is None or answer.label is None:
                predicted.append((ABSTAINED, 0.0))
            else:
                predicted.append((answer.label, answer.confidence))
        conf = np.array([c for _, c in predicted], dtype=np.float64)
        hits = np.array([p == t for (p, _), t in zip(predicted, truth, strict=True)])
        calibrate, test = stratified_split(truth, test_size, seed)
        threshold = pick_threshold(
            conf[calibrate], hits[calibrate], target, z=z, min_covered=min_covered
        )
        overall = pick_threshold(conf, hits, target, z=z, min_covered=min_covered)
        ev = score_field(
            [truth[i] for i in test],
            [predicted[i] for i in test],
            n_train=len(calibrate),
            dropped_rows=0,
            threshold=threshold,
        )
        ev.extra = {
            "method": "llm",
            "abstained": sum(1 for i in test if predicted[i][0] == ABSTAINED),
            "recommended_min_confidence": None if overall is None else round(overall, 4),
            "rows_for_recommendation": len(rows),
        }
        ev.model = dict(version)
        results[name] = ev
    return results


def stratified_split(
    labels: Sequence[str], test_size: float, seed: int
) -> tuple[list[int], list[int]]:
    """(first part, held-out part) of row indices, stratified by label (numpy, seeded).

    Each label sends ``round(n * test_size)`` of its rows to the held-out part, but always keeps
    one in the first part; a label seen once stays there.
    """
    if not 0.0 < test_size < 1.0:
        raise ConfigError("--test-size must be within 0..1")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    held: list[int] = []
    for label in sorted(by_label):
        rows = by_label[label]
        n_test = min(len(rows) - 1, round(len(rows) * test_size))
        if n_test > 0:
            held.extend(int(i) for i in rng.permutation(rows)[:n_test])
    test = sorted(held)
    chosen = set(test)
    return [i for i in range(len(labels)) if i not in chosen], test


def _print_thresholds(results: Mapping[str, FieldEvaluation], out: TextIO) -> None:
    out.write("recommended min_confidence for the mapping (picked on every row):\n")
    for name, ev in results.items():
        value = ev.extra.get("recommended_min_confidence")
        shown = (
            "none reaches the target: leave the field in suggest mode" if value is None else value
        )
        out.write(f"  {name}: {shown}\n")


def _write_thresholds(results: Mapping[str, FieldEvaluation], path: Path) -> None:
    """``min_confidence:`` YAML for the mapping; a field no threshold reaches gets ``1.0``."""
    lines = ["# written by: python -m triage evaluate --llm", "min_confidence:"]
    for name, ev in results.items():
        value = ev.extra.get("recommended_min_confidence")
        note = "  # no threshold reaches the target precision" if value is None else ""
        lines.append(f"  {name}: {1.0 if value is None else value}{note}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
