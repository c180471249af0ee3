"""The body of ``evaluate``: score, record the run, print JSON or a summary, write the HTML.

``--json`` prints one object: ``run`` (``run_record.run_block``: when, data file and hash,
columns, parameters, mapping, model hashes) and ``fields``, per field the summary figures plus
``classes`` in natural order with the mapping's raw values and human labels (``--mapping``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from domain.errors import ConfigError
from triage.learn.evaluate import FieldEvaluation, score_field
from triage.learn.run_record import model_version
from triage.learn.sources import LabelledData

if TYPE_CHECKING:
    from enrichers.learned import TextModel

__all__ = ["evaluate_and_report", "run_parameters", "score_model"]


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
    if args.model:
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
    return 0


def run_parameters(args: argparse.Namespace, parents: Mapping[str, str]) -> dict[str, Any]:
    """What an evaluate run was asked to do, as its report records it."""
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
