"""Hypothesis strategies for webhook requests and queue messages, labelled by construction.

Every strategy yields inputs whose expected outcome is known without asking the code under
test: a ``valid_bodies`` body signed by ``signed_headers`` must be accepted, everything else
refused. Strategies are built once at module level: building them inside a composite costs
more than drawing from them.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from hypothesis import strategies as st

from tests.property import MAX_BODY_BYTES, NOW, SECRET, mac_headers, signed_headers
from triage.inbound import MAX_JSON_DEPTH

KNOWN_KEYS = ("sys_id", "table", "number", "sys_updated_by", "sys_mod_count")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**15), 10**15)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=4,
)
non_object_values = json_values.filter(lambda v: not isinstance(v, dict))


def dumps(draw: st.DrawFn, value: Any) -> bytes:
    indent = draw(st.sampled_from([None, 0, 2]))
    return json.dumps(value, ensure_ascii=draw(st.booleans()), indent=indent).encode()


# --- webhook bodies ---------------------------------------------------------------------------

_sys_ids = st.text("0123456789abcdefABCDEF", min_size=32, max_size=32)
_OPTIONAL = {
    "number": st.none() | st.text(max_size=40),
    "sys_updated_by": st.none() | st.text(max_size=100),
    "sys_mod_count": st.none() | st.integers(0, 2**31 - 1),  # an integer column
}
_extras = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in KNOWN_KEYS), json_values, max_size=3
)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A webhook body as a dict: a 32-hex sys_id (any case), optional fields, random extras."""
    event: dict[str, Any] = {"sys_id": draw(_sys_ids)}
    if draw(st.booleans()):
        event["table"] = "incident"
    for key, values in _OPTIONAL.items():
        if draw(st.booleans()):
            event[key] = draw(values)
    event.update(draw(_extras))
    return event


@st.composite
def valid_bodies(draw: st.DrawFn) -> bytes:
    """A UTF-8 JSON body the webhook must accept when correctly signed."""
    return dumps(draw, draw(valid_events()))


@st.composite
def _with_extra(draw: st.DrawFn, raw_value: bytes) -> bytes:
    """A valid event with one more key whose value is ``raw_value``, spliced in verbatim."""
    body = json.dumps(draw(valid_events()))
    key = draw(st.sampled_from(['"x"', '"sys_mod_count"', '"nested"']))
    return body[:-1].encode() + b", " + key.encode() + b": " + raw_value + b"}"


_depths = st.integers(MAX_JSON_DEPTH, 40_000) | st.integers(MAX_JSON_DEPTH, 40)
_nesting = st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")])


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    """Nesting deeper than MAX_JSON_DEPTH (up to far past the recursion limit) in an event."""
    depth = draw(_depths)
    opener, closer = draw(_nesting)
    return draw(_with_extra(opener * depth + b"0" + closer * depth))


huge_numbers = st.builds(
    lambda sign, digits, tail: sign + b"1" * digits + tail,
    st.sampled_from([b"", b"-"]),
    st.integers(33, 6000),
    st.sampled_from([b"", b".5", b"e3", b"0e-2"]),
)
non_finite = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", b"2E+1000"])
_codecs = st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-8-sig"])


@st.composite
def foreign_encodings(draw: st.DrawFn) -> bytes:
    """A valid event in UTF-16/32 or with a UTF-8 BOM: refused, JSON here is UTF-8 only."""
    text = json.dumps(draw(valid_events()), ensure_ascii=draw(st.booleans()))
    return text.encode(draw(_codecs))


# Python's str.strip removes at least what pydantic's strip does, so these stay invalid.
_bad_sys_ids = json_values.filter(
    lambda v: not (isinstance(v, str) and _HEX32.fullmatch(v.strip()))
)
_bad_tables = st.text(max_size=90).filter(lambda t: t.strip() != "incident")
_too_long = st.text(min_size=101, max_size=200).filter(lambda t: len(t.strip()) > 100)
_containers = st.lists(json_scalars, max_size=2) | st.dictionaries(
    st.text(max_size=3), json_scalars
)
_bad_field_values = {
    "number": _containers | _too_long,
    "sys_updated_by": _containers | _too_long,
    # A plain JSON integer of a 32-bit column only: no strings, booleans, floats or giants.
    "sys_mod_count": _containers
    | st.integers(0, 10**6).map(str)
    | st.booleans()
    | st.integers(2**31, 10**30)
    | st.integers(-(10**6), -1),
}
_violations = st.sampled_from(["bad_sys_id", "no_sys_id", "table", "not_object", "field_type"])
_typed_fields = st.sampled_from(sorted(_bad_field_values))


@st.composite
def schema_violations(draw: st.DrawFn) -> bytes:
    """Well-formed JSON that is not a valid event."""
    event = draw(valid_events())
    kind = draw(_violations)
    if kind == "bad_sys_id":
        event["sys_id"] = draw(_bad_sys_ids)
    elif kind == "no_sys_id":
        del event["sys_id"]
    elif kind == "table":
        event["table"] = draw(_bad_tables)
    elif kind == "field_type":
        key = draw(_typed_fields)
        event[key] = draw(_bad_field_values[key])
    else:
        return dumps(draw, draw(non_object_values))
    return dumps(draw, event)


oversize_bodies = st.builds(
    lambda n, c: c * (MAX_BODY_BYTES + n),
    st.integers(1, 5000),
    st.sampled_from([b" ", b"{", b"\xff"]),
)


def _json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return False


# Hypothesis seeds binary with constants from the code, so it can hit a valid event: keep the
# arbitrary bytes to what is not a JSON object at all.
non_objects = st.binary(max_size=500).filter(lambda body: not _json_object(body))

malformed_bodies = st.one_of(
    non_objects,
    deep_nesting(),
    huge_numbers.flatmap(_with_extra),
    non_finite.flatmap(_with_extra),
    foreign_encodings(),
    schema_violations(),
    oversize_bodies,
)

# --- headers ----------------------------------------------------------------------------------

good_content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        'Application/JSON; Charset="UTF-8"',
        "application/json;charset=utf-8;profile=x",
        " application/json ",
    ]
)
#: Long header values, built cheaply: CR/LF, NUL, non-ASCII, digits, signature-like.
long_values = st.builds(
    lambda unit, n: unit * n,
    st.sampled_from(["text/x\r\n", "a" * 50, "\x00\u2028é", "9", "v1=AAAA,"]),
    st.integers(5, 20_000),
)
_pieces = st.text(max_size=60) | st.sampled_from(["\r\n", "\x00", "\t"])
bad_content_types = st.one_of(
    st.text(max_size=200),
    st.lists(_pieces, min_size=1, max_size=20).map("".join),
    long_values,
    st.sampled_from(
        ["text/plain", "application/xml", "", "application/jsonx", "multipart/form-data"]
    ),
).filter(lambda c: "application/json" not in c.lower()) | st.sampled_from(
    ["utf-16", "latin-1", "", "utf8", "utf-8x", '"utf-32"']
).map(lambda charset: f"application/json; charset={charset}")

_DIGITS = "0123456789"
_UNICODE_DIGITS = ["٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "０１２３４５６７８９", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗"]
_CANONICAL = re.compile(r"0|[1-9][0-9]{0,11}")
_stamp_kinds = st.sampled_from(
    ["unicode", "underscore", "sign", "space", "zeros", "huge", "negative", "float", "junk"]
)
_spaces = st.sampled_from([" ", "\t", "\n", "\r\n"])
_huge_stamps = st.text(_DIGITS, min_size=13, max_size=600)
_junk_stamps = st.text(min_size=1, max_size=80).filter(lambda s: _CANONICAL.fullmatch(s) is None)


@st.composite
def bad_stamps(draw: st.DrawFn) -> str:
    """A spelling of (about) now, or junk, that is not the one accepted spelling."""
    now = str(NOW + draw(st.integers(-100, 100)))
    kind = draw(_stamp_kinds)
    if kind == "unicode":
        return now.translate(str.maketrans(_DIGITS, draw(st.sampled_from(_UNICODE_DIGITS))))
    if kind == "underscore":
        return f"{now[:1]}_{now[1:]}"
    if kind == "sign":
        return "+" + now
    if kind == "space":
        cut = draw(st.sampled_from([0, 3, len(now)]))
        return now[:cut] + draw(_spaces) + now[cut:]
    if kind == "zeros":
        return "0" * draw(st.integers(1, 20)) + now
    if kind == "huge":
        return draw(_huge_stamps)  # 13+ digits, with or without leading zeros
    if kind == "negative":
        return "-" + draw(st.sampled_from([now, "1", "0"]))
    if kind == "float":
        return now + draw(st.sampled_from([".0", ".5", "e0", "E0"]))
    return draw(_junk_stamps)


_forgeries = st.sampled_from(
    ["unsigned", "other_body", "other_secret", "stale", "stamp_mac", "stamp_now", "random"]
)
_dropped = st.lists(
    st.sampled_from(["X-Triage-Timestamp", "X-Triage-Signature"]), min_size=1, unique=True
)
_other_secrets = st.text(min_size=1, max_size=40).filter(lambda s: s != SECRET)
_random_signatures = (
    st.text(max_size=300)
    | long_values
    | st.binary(min_size=32, max_size=32).map(lambda mac: "v1=" + base64.b64encode(mac).decode())
)


@st.composite
def refused_signatures(draw: st.DrawFn, body: bytes) -> dict[str, str]:
    """Headers for ``body`` that must get a 401: unsigned, forged, stale or oddly stamped."""
    kind = draw(_forgeries)
    if kind == "unsigned":
        headers = signed_headers(body)
        for key in draw(_dropped):
            if draw(st.booleans()):
                del headers[key]
            else:
                headers[key] = ""
        return headers
    if kind == "other_body":
        return signed_headers(draw(st.binary(max_size=200).filter(lambda b: b != body)))
    if kind == "other_secret":
        return signed_headers(body, secret=draw(_other_secrets))
    if kind == "stale":
        skew = draw(st.integers(301, 10**9)) * draw(st.sampled_from([-1, 1]))
        return signed_headers(body, timestamp=max(0, NOW + skew))
    if kind == "stamp_mac":  # the MAC covers the odd spelling itself
        return mac_headers(body, stamp=draw(bad_stamps()))
    if kind == "stamp_now":  # the MAC is right for the number int() reads in the odd spelling
        return {**signed_headers(body), "X-Triage-Timestamp": draw(bad_stamps())}
    return {**signed_headers(body), "X-Triage-Signature": draw(_random_signatures)}


_header_names = st.sampled_from(
    [
        "X-Triage-Timestamp",
        "x-triage-timestamp",
        "X-Triage-Signature",
        "x-triage-signature",
        "Content-Type",
        "content-type",
    ]
) | st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,30}", fullmatch=True)
_stamp_values = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.integers(13, 5000).map(lambda n: "9" * n),  # past 308 digits, int - float overflows
    bad_stamps(),
    st.text(max_size=20),
    long_values,
)
arbitrary_headers = st.builds(
    lambda ours, others: {**others, **ours},
    st.fixed_dictionaries(
        {},
        optional={
            "X-Triage-Timestamp": _stamp_values,
            "X-Triage-Signature": _random_signatures,
            "Content-Type": good_content_types | bad_content_types,
        },
    ),
    st.dictionaries(_header_names, st.text(max_size=100) | long_values, max_size=4),
)
