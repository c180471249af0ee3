"""The learned summary's persistence: the ``summary`` part of ``model.json``.

``StoredSummary`` holds a summary model's metadata and arrays and saves/loads them: the arrays
are an embedded ``.npz`` (base64) whose SHA-256 is checked before ``np.load`` reads it (no
pickle), so a model fetched from a URL carries its summary with it (docs/model-format.md).
``enrichers.summary_model.SummaryModel`` adds the scoring on top; it re-exports the names here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from domain.errors import ConfigError
from enrichers.summary_units import FEATURES

__all__ = [
    "MODEL_JSON",
    "SUMMARY_FORMAT",
    "SUMMARY_FORMAT_VERSION",
    "SUMMARY_KEY",
    "StoredSummary",
    "pack_strings",
    "unpack_strings",
]

SUMMARY_KEY = "summary"
SUMMARY_FORMAT = "ticket-enrichment/summary-model"
SUMMARY_FORMAT_VERSION = 1
MODEL_JSON = "model.json"
_REQUIRED_ARRAYS = ("token_hash", "token_rate", "weights", "mean", "scale", "fillers")


def pack_strings(strings: Sequence[str]) -> npt.NDArray[np.uint8]:
    """Newline-joined UTF-8 bytes as a uint8 array (how string lists ride in the npz)."""
    return np.frombuffer("\n".join(strings).encode("utf-8"), dtype=np.uint8).copy()


def unpack_strings(blob: npt.NDArray[Any]) -> list[str]:
    """The strings ``pack_strings`` stored."""
    text = bytes(np.asarray(blob, dtype=np.uint8)).decode("utf-8")
    return text.split("\n") if text else []


class StoredSummary:
    """A summary model's metadata and arrays, and how they are saved and loaded."""

    def __init__(self, metadata: dict[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        self.metadata = metadata
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}

    def to_json(self) -> dict[str, Any]:
        """The ``summary`` object of model.json: metadata plus the embedded, hashed arrays."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, allow_pickle=False, **self.arrays)
        raw = buffer.getvalue()
        arrays = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
        return {**self.metadata, "arrays": {**arrays, "npz_base64": base64.b64encode(raw).decode()}}

    @classmethod
    def from_json(cls, part: Any, *, where: str = MODEL_JSON) -> Self:
        """Verify and load a ``summary`` object; ``ConfigError`` says what is wrong with it."""
        if not isinstance(part, dict) or part.get("format") != SUMMARY_FORMAT:
            raise ConfigError(f"{where}: 'summary' is not a {SUMMARY_FORMAT!r} part")
        if part.get("format_version") != SUMMARY_FORMAT_VERSION:
            raise ConfigError(
                f"{where}: summary format version {part.get('format_version')!r} is not "
                f"supported (this build reads version {SUMMARY_FORMAT_VERSION}); retrain"
            )
        for key in ("prior_rate", "title_tokens", "features", "arrays"):
            if key not in part:
                raise ConfigError(f"{where}: summary: missing key {key!r}")
        if list(part["features"]) != list(FEATURES):
            raise ConfigError(f"{where}: summary: features differ from this build's; retrain")
        info = part["arrays"]
        try:
            raw = base64.b64decode(str(info["npz_base64"]), validate=True)
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ConfigError(f"{where}: summary: unreadable arrays: {exc}") from exc
        if hashlib.sha256(raw).hexdigest() != info.get("sha256"):
            raise ConfigError(
                f"{where}: summary arrays do not match the SHA-256 recorded beside them "
                "(modified, truncated or from another model)"
            )
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            missing = [k for k in _REQUIRED_ARRAYS if k not in arrays]
            if missing:
                raise KeyError(", ".join(missing))
            meta = {k: v for k, v in part.items() if k != "arrays"}
            return cls(meta, arrays)
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: summary: inconsistent model: {exc}") from exc

    def save(self, directory: str | Path) -> Path:
        """Add (or replace) the ``summary`` part of ``DIR/model.json``; other keys are kept."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        path = target / MODEL_JSON
        document: dict[str, Any] = {}
        if path.is_file():
            document = json.loads(path.read_text(encoding="utf-8"))
        document[SUMMARY_KEY] = self.to_json()
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")
        return target

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Self | None:
        """The summary part of a loaded model.json (e.g. ``TextModel.metadata``), if any."""
        part = metadata.get(SUMMARY_KEY)
        return None if part is None else cls.from_json(part)

    @classmethod
    def load(cls, directory: str | Path) -> Self | None:
        """The summary part of ``DIR/model.json``, or None when the directory has none."""
        path = Path(directory) / MODEL_JSON
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"model directory {directory}: {MODEL_JSON} is missing") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable {MODEL_JSON}: {exc}") from exc
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: not a JSON object")
        part = document.get(SUMMARY_KEY)
        return None if part is None else cls.from_json(part, where=str(path))
