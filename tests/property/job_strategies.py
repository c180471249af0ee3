"""Hypothesis strategies for queue messages, labelled by construction (see strategies.py)."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import strategies as st

from tests.property import NOW, valid_job
from tests.property.strategies import (
    dumps,
    huge_numbers,
    json_values,
    non_finite,
    non_object_values,
)
from triage.inbound import MAX_JSON_DEPTH

_JOB_KEYS = ("version", "system", "table", "record_id", "received_at", "requeues", "source")
_TABLE = re.compile(r"[a-z][a-z0-9_]{0,79}")
_SYS_ID = re.compile(r"[0-9a-f]{32}")
_received_at = st.integers(0, 2 * NOW) | st.floats(0, 2 * NOW, allow_nan=False)
_sources = st.sampled_from(["webhook", "backfill", "cli"])


def _dumps_job(draw: st.DrawFn, job: dict[str, Any]) -> bytes:
    keys = draw(st.permutations(list(job)))
    return dumps(draw, {key: job[key] for key in keys})


@st.composite
def valid_job_messages(draw: st.DrawFn) -> bytes:
    """Any spelling of a job the worker must run: key order, whitespace, integral numbers."""
    job = valid_job(received_at=draw(_received_at), requeues=draw(st.integers(0, 10**9)))
    job["source"] = draw(_sources)
    for key in ("system", "source", "version"):
        if draw(st.booleans()):
            del job[key]  # the default applies
    return _dumps_job(draw, job)


_BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "version": st.sampled_from([True, False, 1.0, "1", 2, 0, None, [1], {"v": 1}]),
    "received_at": st.sampled_from([-1, -0.5, "1", True, None, [], "NaN", {"t": 1}]),
    "requeues": st.sampled_from([-1, 1.0, 1.5, "1", True, None, [0]]),
    "record_id": json_values.filter(lambda v: not (isinstance(v, str) and _SYS_ID.fullmatch(v))),
    "table": json_values.filter(lambda v: not (isinstance(v, str) and _TABLE.fullmatch(v))),
    "system": json_values.filter(lambda v: v not in ("servicenow", "dataverse")),
    "source": json_values.filter(lambda v: v not in ("webhook", "backfill", "cli")),
}
_bad_keys = st.sampled_from(sorted(_BAD_VALUES))
_job_mutations = st.sampled_from(["value", "extra", "missing", "not_object", "splice", "encoding"])
_unknown_keys = st.text(max_size=50).filter(lambda k: k not in _JOB_KEYS)
_required = st.sampled_from(["table", "record_id", "received_at"])
_spliced_keys = st.sampled_from(["received_at", "requeues", "version", "x"])
_deep_arrays = st.integers(MAX_JSON_DEPTH + 1, 5000).map(lambda d: b"[" * d + b"]" * d)
_job_codecs = st.sampled_from(["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])


@st.composite
def malformed_job_messages(draw: st.DrawFn) -> bytes:
    """A valid job with one known-fatal change: a lax type, a bad value, an unknown or missing
    key, a non-object, a huge or non-finite number, deep nesting or a foreign encoding."""
    job = valid_job(requeues=draw(st.integers(0, 5)))
    kind = draw(_job_mutations)
    if kind == "value":
        key = draw(_bad_keys)
        job[key] = draw(_BAD_VALUES[key])
    elif kind == "extra":
        job[draw(_unknown_keys)] = draw(json_values)
    elif kind == "missing":
        del job[draw(_required)]
    elif kind == "not_object":
        return dumps(draw, draw(non_object_values))
    elif kind == "splice":
        key = draw(_spliced_keys)
        job.pop(key, None)
        raw = draw(huge_numbers | non_finite | _deep_arrays)
        return json.dumps(job)[:-1].encode() + f', "{key}": '.encode() + raw + b"}"
    else:
        return json.dumps(job).encode(draw(_job_codecs))
    return _dumps_job(draw, job)


large_messages = st.builds(
    lambda head, fill, n: head + fill * n,
    st.binary(max_size=20),
    st.sampled_from([b"x", b"\xff", b"\x00", "é".encode(), "😀".encode(), b'"']),
    st.integers(10_000, 40_000),
)
arbitrary_messages = st.binary(max_size=600) | large_messages
large_texts = st.builds(str.__mul__, st.text(min_size=1, max_size=4), st.integers(1, 30_000))
