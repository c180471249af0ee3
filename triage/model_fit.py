"""Whether a learned model fits an admin mapping: checked wherever the two meet, at load.

A model predicts canonical labels; the mapping turns each into the platform's raw value. A label
the mapping has no raw value for is never written (the policy finds nothing to write), so a
model trained on another taxonomy (e.g. a data set's numeric category codes) would sit in the
chain suggesting values nobody can use: ``enrich`` showed them as ``4? 0.93``. The worker and
the CLI therefore refuse such a model when they load it, naming the labels.

Rules, per model field:

* a field the mapping does not know at all (neither a platform field under ``fields`` nor a
  ``values`` table) is refused: nothing would ever be written from it;
* a field with a ``values`` table must have every model label among its canonical values;
* a field without a ``values`` table (free text, an admin label the platform stores as text)
  passes: its labels are written as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain.errors import ConfigError

if TYPE_CHECKING:
    from domain.mapping import FieldMapping
    from enrichers.learned import TextModel

__all__ = ["MAX_NAMED_LABELS", "check_model_fits", "misfits"]

#: How many missing labels a message names per field before saying "and N more".
MAX_NAMED_LABELS = 10
_LABEL_CHARS = 40  # a label is model data: shown, but never at length


def misfits(model: TextModel, mapping: FieldMapping) -> dict[str, list[str] | None]:
    """Per model field that does not fit: its labels missing from the mapping, in model order.

    ``None`` stands for a field the mapping does not map at all. Fitting fields are left out,
    so an empty result means the model fits.
    """
    out: dict[str, list[str] | None] = {}
    for field in model.fields:
        table = mapping.values.get(field)
        if table is None:
            if field not in mapping.fields:
                out[field] = None
            continue
        missing = [label for label in model.heads[field].labels if label not in table]
        if missing:
            out[field] = missing
    return out


def check_model_fits(model: TextModel, mapping: FieldMapping) -> None:
    """Raise ``ConfigError`` unless every field and label of ``model`` is in ``mapping``.

    The message names each misfitting field, up to ``MAX_NAMED_LABELS`` of its missing labels
    and how many more there are, and what to do about it.
    """
    problems = misfits(model, mapping)
    if not problems:
        return
    where = f"the {mapping.system} mapping (table {mapping.table})"
    parts = []
    for field, missing in problems.items():
        if missing is None:
            name = _short(field)
            parts.append(f"field {name}: not mapped (neither fields.{name} nor values.{name})")
            continue
        named = ", ".join(repr(_short(label)) for label in missing[:MAX_NAMED_LABELS])
        more = len(missing) - MAX_NAMED_LABELS
        tail = f" and {more} more" if more > 0 else ""
        total = len(model.heads[field].labels)
        parts.append(
            f"field {field}: {len(missing)} of {total} labels not in values.{field}: {named}{tail}"
        )
    raise ConfigError(
        f"the model does not fit {where}: {'; '.join(parts)}. Add them to the mapping, or retrain "
        "the model on the mapping's canonical labels"
    )


def _short(text: str) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"
