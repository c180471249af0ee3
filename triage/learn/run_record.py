"""What an ``evaluate`` run records about itself, and the label names an admin knows.

A report read weeks later must say what it measured: when, on which data file (name and
SHA-256), which columns, with which parameters, and which model (its content hash). Labels are
shown as the mapping knows them: the canonical label, the platform's raw value and, when the
mapping has one, a human label.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from triage.learn.evaluate import FieldEvaluation, class_report

if TYPE_CHECKING:
    from domain.mapping import FieldMapping
    from enrichers.learned import TextModel

__all__ = [
    "LabelName",
    "class_rows",
    "file_sha256",
    "label_names",
    "location_name",
    "model_fingerprint",
    "model_version",
    "run_block",
    "run_section",
    "utc_now",
]


def utc_now() -> datetime:
    """The current time in UTC (the default clock of ``run_block``)."""
    return datetime.now(UTC)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def location_name(location: str) -> str:
    """The last path segment of a file path or URL: never a query string (it may be a SAS)."""
    path = urlsplit(location).path if "://" in location else location
    return Path(path.rstrip("/\\")).name or "(unnamed)"


def model_fingerprint(model: TextModel) -> str:
    """SHA-256 over a model's content: metadata (bar its creation time) and every array.

    The same for a model in memory and for it saved and loaded again, so the hash an evaluate
    run records for the model it trained identifies that model wherever it is stored.
    """
    digest = hashlib.sha256()
    meta = {k: v for k, v in model.metadata.items() if k not in {"created_at", "arrays"}}
    digest.update(json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str).encode())
    digest.update("\n".join(model.vectoriser.vocabulary).encode("utf-8"))
    digest.update(model.vectoriser.idf.astype("<f4").tobytes())
    for name, head in model.heads.items():
        digest.update(f"\0{name}\0".encode())
        parts = (head.rows, head.coef, head.intercept, head.calib, head.allowed)
        for array in parts:
            if array is not None:
                digest.update(f"{array.dtype.str}{array.shape}".encode())
                digest.update(array.tobytes())
    return digest.hexdigest()


def model_version(model: TextModel, *, location: str | None = None) -> dict[str, Any]:
    """The model's identity for a run record: stored (``location`` given) or just trained."""
    arrays = model.metadata.get("arrays") or {}
    return {
        "kind": "stored" if location else "trained",
        "location": location_name(location) if location else None,
        "created_at": model.metadata.get("created_at"),
        "sha256": model_fingerprint(model),
        "arrays_sha256": arrays.get("sha256"),
        "format_version": model.metadata.get("format_version"),
        "n_train": model.metadata.get("n_train"),
        "fields": list(model.fields),
    }


@dataclass(frozen=True)
class LabelName:
    """How a canonical label appears on the platform: raw value and, if known, a human label."""

    raw: str | None
    human: str | None = None

    def display(self, label: str) -> str:
        """The name to show: the human label when there is one, else the canonical label."""
        return self.human or label


def label_names(mapping: FieldMapping) -> dict[str, dict[str, LabelName]]:
    """Per field with a ``values`` table: canonical label → its raw value (and human label).

    A human label is taken from the mapping's ``human_label(field, label)`` when the mapping
    schema offers one; until then only raw values are known.
    """
    human: Callable[[str, str], object] | None = getattr(mapping, "human_label", None)
    out: dict[str, dict[str, LabelName]] = {}
    for field, table in mapping.values.items():
        names = {}
        for label, raw in table.items():
            text = human(field, label) if callable(human) else None
            names[label] = LabelName(raw, str(text) if text else None)
        out[field] = names
    return out


def class_rows(
    ev: FieldEvaluation, names: Mapping[str, LabelName] | None = None
) -> list[dict[str, Any]]:
    """Per class in natural order: label, raw value and name (None when unknown), figures."""
    names = names or {}
    rows = []
    for label, figures in class_report(ev.y_true, ev.y_pred).items():
        name = names.get(label)
        rows.append(
            {
                "label": label,
                "raw": name.raw if name else None,
                "name": name.human if name else None,
                "precision": round(figures["precision"], 4),
                "recall": round(figures["recall"], 4),
                "f1": round(figures["f1"], 4),
                "support": int(figures["support"]),
            }
        )
    return rows


def run_block(
    *,
    data_path: str | Path,
    rows: int,
    text_columns: Sequence[str],
    label_columns: Mapping[str, str],
    parameters: Mapping[str, Any],
    results: Mapping[str, FieldEvaluation],
    mapping: FieldMapping | None = None,
    mapping_path: str | Path | None = None,
    started_at: datetime | None = None,
    now: Callable[[], datetime] = utc_now,
) -> dict[str, Any]:
    """The ``run`` object of ``evaluate --json`` (and the HTML report's Run section)."""
    finished = now().astimezone(UTC)
    started = (started_at or finished).astimezone(UTC)
    return {
        "started_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "finished_at": finished.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "data": {
            "file": Path(data_path).name,
            "sha256": file_sha256(data_path),
            "rows": rows,
        },
        "text_columns": list(text_columns),
        "label_columns": dict(label_columns),
        "parameters": dict(parameters),
        "mapping": None
        if mapping is None
        else {
            "file": Path(mapping_path).name if mapping_path else "(embedded default)",
            "sha256": file_sha256(mapping_path) if mapping_path else None,
            "system": mapping.system,
            "table": mapping.table,
        },
        "models": {name: ev.model for name, ev in results.items()},
    }


def run_section(run: Mapping[str, Any]) -> str:
    """The report's Run section: what was measured, on what, with what (HTML, escaped)."""
    data = run["data"]
    labels = ", ".join(f"{f} ← {c}" for f, c in run["label_columns"].items())
    params = ", ".join(f"{k} = {_plain(v)}" for k, v in run["parameters"].items())
    rows = [  # (name, HTML)
        ("date (UTC)", _e(f"{run['started_at']} – {run['finished_at']}")),
        ("data file", _e(f"{data['file']} ({data['rows']} rows)")),
        ("data SHA-256", _code(data["sha256"])),
        ("text columns", _e(", ".join(run["text_columns"]))),
        ("label columns", _e(labels)),
        ("parameters", _e(params)),
    ]
    mapping = run.get("mapping")
    if mapping:
        sha = f", SHA-256 {_code(mapping['sha256'])}" if mapping["sha256"] else ""
        text = f"{mapping['file']} ({mapping['system']} {mapping['table']})"
        rows.append(("mapping", _e(text) + sha))
    else:
        rows.append(("mapping", _e("none: classes are shown by their canonical labels")))
    for field, model in run["models"].items():
        rows.append((f"model of {field}", _model_text(model)))
    cells = "".join(f'<tr><th class="l">{_e(k)}</th><td class="l">{v}</td></tr>' for k, v in rows)
    return f'<section id="run"><h2>Run</h2><table class="run">{cells}</table></section>'


def _model_text(model: Mapping[str, Any]) -> str:
    if not model:
        return _e("unknown")
    where = f" {model['location']}" if model.get("location") else " on the training split"
    return (
        f"{_e(model['kind'])}{_e(where)}, created {_e(model.get('created_at'))}, "
        f"SHA-256 {_code(model['sha256'])}"
    )


def _plain(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}→{v}" for k, v in value.items()) or "none"
    return str(value)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _code(value: Any) -> str:
    return f"<code>{_e(value)}</code>"
