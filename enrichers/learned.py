"""The learned enricher: a saved linear text model, served with numpy only.

Serving never imports scikit-learn, scipy or pandas: a model directory holds ``model.json``
(metadata, thresholds, featuriser config, SHA-256 of the arrays) and ``arrays.npz`` (loaded
with ``allow_pickle=False``). See docs/model-format.md.

Per field the model keeps a linear scorer (one weight column per label; training may fold
several linear members into it) and a confidence calibrator fitted on out-of-fold predictions:
``P(correct) = sigmoid(a·top + b·margin + c·log(1+chars) + d[label] + e)``. The stored
threshold was chosen on held-out predictions so that the precision of what clears it reaches
the target at a Wilson lower bound; below it we abstain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from domain.errors import ConfigError
from domain.models import Suggestion, Ticket
from enrichers.features import FeatureConfig, Vectoriser

__all__ = [
    "ABSTAIN",
    "ARRAYS_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MODEL_JSON",
    "FieldHead",
    "LearnedEnricher",
    "Prediction",
    "TextModel",
    "confidence_inputs",
]

log = logging.getLogger(__name__)

FORMAT_NAME = "ticket-enrichment/text-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
ARRAYS_FILE = "arrays.npz"
_CHUNK = 128  # texts scored per gather
MARGIN_CAP = 4.0  # a lone allowed label has no runner-up: its margin counts as this
_REQUIRED_KEYS = ("format", "format_version", "created_at", "n_train", "featuriser", "fields")
Floats = npt.NDArray[np.float32]


class Prediction(NamedTuple):
    """The top label of one field for one text, and its calibrated confidence.

    ``ABSTAIN`` (label ``""``, confidence 0.0) stands for "no prediction": the parent's value
    allows no label of this field, or the confidence came out non-finite.
    """

    label: str
    confidence: float


class FieldHead(NamedTuple):
    """One field's arrays: linear scorer over kept features, calibrator, parent mask."""

    labels: tuple[str, ...]
    rows: npt.NDArray[np.int32]  # vocabulary indices that have weights for this field
    coef: npt.NDArray[np.float16]  # len(rows) × len(labels)
    intercept: Floats  # len(labels)
    calib: Floats  # [top, margin, log_chars, bias, per-label offsets...]
    allowed: npt.NDArray[np.bool_] | None  # parent labels × labels, or None


#: The prediction of a field the model cannot score for a text; never suggested.
ABSTAIN = Prediction("", 0.0)


def confidence_inputs(
    scores: npt.NDArray[Any], allowed: npt.NDArray[np.bool_] | None, chars: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Top label index per row and the calibrator's inputs [top, margin, log chars].

    Shared by training (on out-of-fold scores) and serving, so both see the same numbers.
    ``allowed`` (rows × labels) masks labels out, e.g. subcategories of another category.
    A row that allows no label at all has no top score: its features are NaN (without a
    warning), and ``TextModel.predict`` turns it into ``ABSTAIN``.
    """
    masked = np.asarray(scores, dtype=np.float64)
    if allowed is not None:
        masked = np.where(allowed, masked, -np.inf)
    top = masked.argmax(axis=1)
    order = np.sort(masked, axis=1)
    best = order[:, -1]
    second = order[:, -2] if masked.shape[1] > 1 else np.full_like(best, -np.inf)
    with np.errstate(invalid="ignore"):  # -inf - -inf: a row with no allowed label
        margin = np.minimum(best - second, MARGIN_CAP)
    feats = np.column_stack([best, margin, np.log1p(np.asarray(chars, dtype=np.float64))])
    return top, feats


def _calibrate(
    calib: Floats, top: npt.NDArray[np.int64], feats: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    # Non-finite inputs (a row with no allowed label) give NaN; the caller abstains on them.
    with np.errstate(invalid="ignore", over="ignore"):
        z = feats @ calib[:3].astype(np.float64) + float(calib[3]) + calib[4:][top]
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))), dtype=np.float64)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TextModel:
    """A trained multi-field text classifier, loaded from (or saved to) a model directory."""

    def __init__(self, metadata: dict[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        self.metadata = metadata
        config = FeatureConfig.from_json(dict(metadata["featuriser"]))
        vocab = bytes(np.asarray(arrays["vocab"], dtype=np.uint8)).decode("utf-8")
        self.vectoriser = Vectoriser(config, vocab.split("\n") if vocab else [], arrays["idf"])
        self._arrays = dict(arrays)
        self.heads: dict[str, FieldHead] = {}
        for name, info in metadata["fields"].items():
            self.heads[name] = _head(name, info, arrays, len(self.vectoriser.vocabulary))
        self._build_scorer()

    @property
    def fields(self) -> list[str]:
        """The fields this model predicts, in training order."""
        return list(self.heads)

    def threshold(self, field: str) -> float:
        """The stored confidence threshold of a field (``inf`` when it should never fill)."""
        value = self.metadata["fields"][field].get("threshold")
        return math.inf if value is None else float(value)

    def parent(self, field: str) -> str | None:
        """The field this one is conditioned on (subcategory → category), if any."""
        parent = self.metadata["fields"][field].get("parent")
        return str(parent) if parent else None

    def _build_scorer(self) -> None:
        # One dense (vocabulary × all labels) matrix: scoring a batch is a single gather.
        width = sum(len(h.labels) for h in self.heads.values())
        self._weights = np.zeros((len(self.vectoriser.vocabulary) + 1, width), dtype=np.float32)
        self._offsets: dict[str, int] = {}
        offset = 0
        for name, head in self.heads.items():
            self._offsets[name] = offset
            cols = slice(offset, offset + len(head.labels))
            self._weights[head.rows, cols] = head.coef.astype(np.float32)
            offset += len(head.labels)

    def scores(self, texts: Sequence[str]) -> dict[str, npt.NDArray[np.float64]]:
        """Raw linear scores per field (texts × labels)."""
        rows = self.vectoriser.transform(texts)
        total = np.zeros((len(texts), self._weights.shape[1]), dtype=np.float32)
        # Chunks keep the gathered (non-zeros × labels) block small enough to stay in cache.
        for start in range(0, len(texts), _CHUNK):
            stop = min(start + _CHUNK, len(texts))
            lo, hi = int(rows.indptr[start]), int(rows.indptr[stop])
            # A trailing sentinel (the all-zero last weight row) gives empty rows a valid start.
            idx = np.append(rows.indices[lo:hi], len(self.vectoriser.vocabulary))
            vals = np.append(rows.data[lo:hi], np.float32(0.0))
            gathered = self._weights[idx] * vals[:, None]
            starts = rows.indptr[start:stop] - lo
            block = np.add.reduceat(gathered, starts, axis=0)
            block[np.diff(rows.indptr[start : stop + 1]) == 0] = 0.0
            total[start:stop] = block
        out: dict[str, npt.NDArray[np.float64]] = {}
        for name, head in self.heads.items():
            offset = self._offsets[name]
            scores = total[:, offset : offset + len(head.labels)].astype(np.float64)
            out[name] = scores + head.intercept.astype(np.float64)
        return out

    def predict(
        self, texts: Sequence[str], given: Sequence[Mapping[str, str | None]] | None = None
    ) -> dict[str, list[Prediction]]:
        """Top label and calibrated confidence per field for each text.

        A field with a parent (subcategory) is restricted to labels seen with the parent's
        value in training: the value in ``given[i][parent]`` when set, else this model's own
        top prediction for the parent. Where that leaves no label (a category that had no
        subcategory in training), or the confidence is not finite, the prediction is
        ``ABSTAIN``.
        """
        scores = self.scores(texts)
        chars = np.array([len(t) for t in texts], dtype=np.float64)
        out: dict[str, list[Prediction]] = {}
        for name, head in self.heads.items():
            allowed = self._allowed(name, head, out, given, len(texts))
            top, feats = confidence_inputs(scores[name], allowed, chars)
            conf = _calibrate(head.calib, top, feats)
            usable = np.isfinite(conf) & (conf >= 0.0) & (conf <= 1.0)
            if allowed is not None:
                usable &= allowed.any(axis=1)
            out[name] = [
                Prediction(head.labels[i], float(c)) if ok else ABSTAIN
                for i, c, ok in zip(top, conf, usable, strict=True)
            ]
        return out

    def _allowed(
        self,
        name: str,
        head: FieldHead,
        done: Mapping[str, list[Prediction]],
        given: Sequence[Mapping[str, str | None]] | None,
        n: int,
    ) -> npt.NDArray[np.bool_] | None:
        parent = self.parent(name)
        if parent is None or head.allowed is None:
            return None
        parent_labels = self.heads[parent].labels
        mask = np.ones((n, len(head.labels)), dtype=bool)
        for i in range(n):
            value = (given[i].get(parent) if given is not None else None) or (
                done[parent][i].label if parent in done else None
            )
            if value in parent_labels:
                mask[i] = head.allowed[parent_labels.index(value)]
        return mask

    # -- persistence ------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``arrays.npz`` then ``model.json`` (with the arrays' SHA-256) into a directory."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        arrays_path = target / ARRAYS_FILE
        with arrays_path.open("wb") as handle:
            np.savez_compressed(handle, allow_pickle=False, **self._arrays)
        self.metadata["arrays"] = {
            "file": ARRAYS_FILE,
            "sha256": _sha256(arrays_path),
            "bytes": arrays_path.stat().st_size,
        }
        text = json.dumps(self.metadata, indent=2, ensure_ascii=False, sort_keys=False)
        (target / MODEL_JSON).write_text(text + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | Path) -> TextModel:
        """Load and verify a model directory; ``ConfigError`` says what is wrong with it."""
        directory = Path(path)
        metadata = _read_metadata(directory)
        arrays_path = directory / ARRAYS_FILE
        if not arrays_path.is_file():
            raise ConfigError(f"model directory {directory}: {ARRAYS_FILE} is missing")
        expected = metadata["arrays"].get("sha256")
        if _sha256(arrays_path) != expected:
            raise ConfigError(
                f"model directory {directory}: {ARRAYS_FILE} does not match the SHA-256 recorded "
                f"in {MODEL_JSON} (the file was modified, truncated or belongs to another model)"
            )
        try:
            with np.load(arrays_path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"model directory {directory}: unreadable {ARRAYS_FILE}: {exc}"
            ) from exc
        try:
            model = cls(metadata, arrays)
        except (KeyError, TypeError, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise ConfigError(f"model directory {directory}: inconsistent model: {exc}") from exc
        log.info("loaded text model from %s (fields %s)", directory, ", ".join(model.fields))
        return model


def _read_metadata(directory: Path) -> dict[str, Any]:
    meta_path = directory / MODEL_JSON
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"model directory {directory}: {MODEL_JSON} is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"model directory {directory}: unreadable {MODEL_JSON}: {exc}") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise ConfigError(
            f"{meta_path}: not a ticket-enrichment text model (format {found!r}, "
            f"expected {FORMAT_NAME!r})"
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{meta_path}: model format version {metadata.get('format_version')!r} is not "
            f"supported (this build reads version {FORMAT_VERSION}); retrain or upgrade"
        )
    for key in (*_REQUIRED_KEYS, "arrays"):
        if key not in metadata:
            raise ConfigError(f"{meta_path}: missing key {key!r}")
    if not isinstance(metadata["arrays"], dict) or not isinstance(metadata["fields"], dict):
        raise ConfigError(f"{meta_path}: 'arrays' and 'fields' must be objects")
    return metadata


def _head(
    name: str, info: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]], n_vocab: int
) -> FieldHead:
    labels = tuple(str(label) for label in info["labels"])
    rows = np.asarray(arrays[f"{name}.rows"], dtype=np.int32)
    coef = np.asarray(arrays[f"{name}.coef"], dtype=np.float16)
    intercept = np.asarray(arrays[f"{name}.intercept"], dtype=np.float32)
    calib = np.asarray(arrays[f"{name}.calib"], dtype=np.float32)
    if coef.shape != (len(rows), len(labels)) or intercept.shape != (len(labels),):
        raise ValueError(f"field {name}: weight shapes do not match its {len(labels)} labels")
    if calib.shape != (4 + len(labels),):
        raise ValueError(f"field {name}: calibrator shape {calib.shape} is wrong")
    if len(rows) and (rows.min() < 0 or rows.max() >= n_vocab):
        raise ValueError(f"field {name}: feature index outside the vocabulary")
    allowed = arrays.get(f"{name}.allowed")
    return FieldHead(
        labels, rows, coef, intercept, calib, None if allowed is None else allowed.astype(bool)
    )


class LearnedEnricher:
    """Suggests each model field when its calibrated confidence clears the stored threshold."""

    def __init__(self, model: TextModel, *, name: str = "model") -> None:
        self.model = model
        self.name = name
        created = str(model.metadata.get("created_at", ""))[:10]
        self._trained = f"trained {created} on {int(model.metadata['n_train']):,} tickets"

    def enrich(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> Sequence[Suggestion]:
        """Suggestions for one ticket (empty when every field is below its threshold)."""
        return self.enrich_many([ticket], [chosen])[0]

    def enrich_many(
        self, tickets: Sequence[Ticket], chosen: Sequence[Mapping[str, Suggestion]] | None = None
    ) -> list[list[Suggestion]]:
        """Batch form of ``enrich``: one vectorisation for all tickets."""
        given = [self._given(t, chosen[i] if chosen else {}) for i, t in enumerate(tickets)]
        predictions = self.model.predict([t.text for t in tickets], given)
        out: list[list[Suggestion]] = [[] for _ in tickets]
        for name, preds in predictions.items():
            threshold = self.model.threshold(name)
            parent = self.model.parent(name)
            for i, pred in enumerate(preds):
                if not _clears(pred, threshold):
                    continue  # below the threshold, or ABSTAIN: never a NaN in a Suggestion
                if parent is not None and not self._parent_known(parent, given[i], predictions, i):
                    continue  # the calibrator assumed a known parent: abstain without one
                out[i].append(self._suggestion(name, pred, threshold))
        return out

    def explain(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> dict[str, str]:
        """Why each model field got no suggestion: below its threshold, no parent, unscorable."""
        given = self._given(ticket, chosen)
        predictions = self.model.predict([ticket.text], [given])
        out: dict[str, str] = {}
        for name, preds in predictions.items():
            pred, threshold = preds[0], self.model.threshold(name)
            parent = self.model.parent(name)
            if not pred.label or not math.isfinite(pred.confidence):
                out[name] = (
                    f"the model has no label of {name} for {parent} {given.get(parent)}"
                    if parent is not None and given.get(parent)
                    else f"the model could not score {name}"
                )
            elif not math.isfinite(threshold):
                out[name] = f"the model has no usable threshold for {name}: it never fills it"
            elif not _clears(pred, threshold):
                shown = f"{pred.confidence:.2f}"
                if shown == f"{threshold:.2f}":  # "below the 0.80 threshold (0.80)" says nothing
                    shown = f"{math.floor(pred.confidence * 1e4) / 1e4:.4f}"
                out[name] = f"below the {threshold:.2f} threshold ({shown}) for {pred.label}"
            elif parent is not None and not self._parent_known(parent, given, predictions, 0):
                out[name] = f"{name} {pred.label} needs a known {parent}, and none was chosen"
        return out

    def _given(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> dict[str, str | None]:
        given: dict[str, str | None] = dict(ticket.current)
        given.update({f: s.value for f, s in chosen.items()})
        return given

    def _parent_known(
        self,
        parent: str,
        given: Mapping[str, str | None],
        predictions: Mapping[str, list[Prediction]],
        i: int,
    ) -> bool:
        if given.get(parent):
            return True
        pred = predictions.get(parent)
        return pred is not None and _clears(pred[i], self.model.threshold(parent))

    def _suggestion(self, field: str, pred: Prediction, threshold: float) -> Suggestion:
        reason = f"{self.name}: {pred.confidence:.2f} ≥ threshold {threshold:.2f} ({self._trained})"
        return Suggestion(
            field=field,
            value=pred.label,
            confidence=min(max(pred.confidence, 0.0), 1.0),
            reason=reason[:300],
            source=self.name,
        )


def _clears(pred: Prediction, threshold: float) -> bool:
    """Whether a prediction is a real label whose finite confidence reaches ``threshold``.

    Written so that a NaN confidence or a NaN threshold (a hand-edited model.json) abstains.
    """
    return bool(pred.label) and math.isfinite(pred.confidence) and pred.confidence >= threshold
