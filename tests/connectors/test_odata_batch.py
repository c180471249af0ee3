"""OData $batch: build → parse round-trips (hypothesis), the documented wire shape, failures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.odata_batch import (
    BatchFormatError,
    BatchRequest,
    BatchResult,
    ChangeSet,
    build_batch,
    build_batch_response,
    first_failure,
    parse_batch_request,
    parse_batch_response,
)

# JSON values with any unicode, CRLF, quotes and text that looks like multipart framing.
_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40) | st.sampled_from(
    ["\r\n--batch_x\r\n", "--changeset_1--", "\r\n\r\n", "HTTP/1.1 200 OK"]
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_header_value = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20
)
_request = st.builds(
    BatchRequest,
    method=st.sampled_from(["PATCH", "POST", "DELETE", "PUT"]),
    url=st.sampled_from(
        [
            "/api/data/v9.2/incidents(5f1c1e9a-0b8e-4c1e-9f00-0000000000aa)",
            "/api/data/v9.2/annotations",
        ]
    ),
    headers=st.fixed_dictionaries(
        {}, optional={"If-Match": _header_value, "Prefer": _header_value}
    ),
    body=st.one_of(st.none(), st.dictionaries(_text, _json, min_size=1, max_size=4)),
    content_id=st.one_of(st.none(), st.integers(1, 999).map(str)),
)
_get = st.builds(BatchRequest, method=st.just("GET"), url=st.just("/api/data/v9.2/WhoAmI"))
_item = _request | _get | st.lists(_request, min_size=1, max_size=4).map(ChangeSet)


def _same(sent: BatchRequest, got: BatchRequest) -> None:
    assert (got.method, got.url, got.content_id, got.body) == (
        sent.method,
        sent.url,
        sent.content_id,
        sent.body,
    )
    for name, value in sent.headers.items():
        assert got.headers[name] == value


@given(st.lists(_item, min_size=1, max_size=4))
def test_request_round_trip(items):
    encoded = build_batch(items)
    assert encoded.content_type == f"multipart/mixed; boundary={encoded.boundary}"
    parsed = parse_batch_request(encoded.body, encoded.content_type)
    assert len(parsed) == len(items)
    for sent, got in zip(items, parsed, strict=True):
        if isinstance(sent, ChangeSet):
            assert isinstance(got, ChangeSet)
            for a, b in zip(sent.requests, got.requests, strict=True):
                _same(a, b)
        else:
            assert isinstance(got, BatchRequest)
            _same(sent, got)


_result = st.builds(
    BatchResult,
    status=st.sampled_from([200, 201, 204, 400, 404, 412, 429]),
    headers=st.fixed_dictionaries({}, optional={"req_id": _header_value}),
    body=st.one_of(
        st.just(b""), _json.map(lambda v: __import__("json").dumps(v, ensure_ascii=False).encode())
    ),
    content_id=st.one_of(st.none(), st.integers(1, 99).map(str)),
)


@given(st.lists(_result | st.lists(_result, min_size=1, max_size=3), min_size=1, max_size=4))
def test_response_round_trip(items):
    encoded = build_batch_response(items)
    parsed = parse_batch_response(encoded.body, encoded.content_type)
    flat = [(r, None) if isinstance(r, BatchResult) else None for r in items]
    expected: list[tuple[BatchResult, int | None]] = []
    change_set = 0
    for item, plain in zip(items, flat, strict=True):
        if plain is not None:
            expected.append(plain)
        else:
            expected.extend((r, change_set) for r in item)
            change_set += 1
    assert len(parsed) == len(expected)
    for got, (sent, index) in zip(parsed, expected, strict=True):
        assert (got.status, got.body, got.content_id, got.change_set) == (
            sent.status,
            sent.body,
            sent.content_id,
            index,
        )
        assert dict(got.headers) == {k.lower(): v for k, v in sent.headers.items()}


def test_boundary_that_occurs_in_the_content_is_not_used():
    tokens = iter(["aaa", "bbb", "aaa", "ccc"])
    body = {"notetext": "look: --changeset_aaa and --batch_aaa"}
    encoded = build_batch(
        [ChangeSet([BatchRequest("POST", "/api/data/v9.2/annotations", body=body)])],
        token=lambda: next(tokens),
    )
    assert encoded.boundary == "batch_ccc"  # "aaa" collided for both
    assert b"boundary=changeset_bbb" in encoded.body
    (change_set,) = parse_batch_request(encoded.body, encoded.content_type)
    assert isinstance(change_set, ChangeSet) and change_set.requests[0].body == body


def test_wire_shape_is_crlf_with_application_http_parts():
    encoded = build_batch(
        [
            ChangeSet(
                [
                    BatchRequest(
                        "PATCH", "/api/data/v9.2/incidents(1)", {"If-Match": 'W/"7"'}, {"a": 1}, "1"
                    )
                ]
            )
        ],
        token=lambda: "x",
    )
    assert encoded.body.decode() == (
        "--batch_x\r\n"
        "Content-Type: multipart/mixed; boundary=changeset_x\r\n"
        "\r\n"
        "--changeset_x\r\n"
        "Content-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "Content-ID: 1\r\n"
        "\r\n"
        "PATCH /api/data/v9.2/incidents(1) HTTP/1.1\r\n"
        'If-Match: W/"7"\r\n'
        "Content-Type: application/json; type=entry\r\n"
        "\r\n"
        '{"a": 1}\r\n'
        "--changeset_x--\r\n"
        "\r\n"
        "--batch_x--\r\n"
    )


# The shape of the error example in "Execute batch operations using the Web API".
DOCUMENTED_FAILURE = (
    b"--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f\r\n"
    b"Content-Type: multipart/mixed; boundary=changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abb\r\n"
    b"\r\n"
    b"--changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abb\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-ID: 1\r\n"
    b"\r\n"
    b"HTTP/1.1 412 Precondition Failed\r\n"
    b"REQ_ID: 5ecd1cb3-1730-4ffc-909c-d44c22270026\r\n"
    b"Content-Type: application/json; odata.metadata=minimal\r\n"
    b"OData-Version: 4.0\r\n"
    b"\r\n"
    b'{"error":{"code":"0x80060882","message":"The version of the existing record doesn\'t match the RowVersion property provided."}}\r\n'
    b"--changesetresponse_ff83b4f1-ab48-430c-b81c-926a2c596abb--\r\n"
    b"--batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f--\r\n"
)


def test_documented_failure_surfaces_the_failing_part():
    results = parse_batch_response(
        DOCUMENTED_FAILURE,
        'multipart/mixed; boundary="batchresponse_c1bd45c1-dd81-470d-b897-e965846aad2f"',
    )
    failed = first_failure(results)
    assert failed is not None and failed.status == 412 and failed.content_id == "1"
    assert failed.headers["req_id"] == "5ecd1cb3-1730-4ffc-909c-d44c22270026"
    assert failed.json()["error"]["code"] == "0x80060882"
    assert failed.change_set == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            b"--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            "multipart/mixed; boundary=b",
        ),
        (b"{}", "application/json"),
        (b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--", "multipart/mixed; boundary=b"),
    ],
    ids=["no closing delimiter", "not multipart", "part of unknown type"],
)
def test_malformed_answers_raise_batch_format_error(body, content_type):
    with pytest.raises(BatchFormatError):
        parse_batch_response(body, content_type)


def test_builder_refuses_gets_in_change_sets_and_header_injection():
    with pytest.raises(BatchFormatError):
        build_batch([ChangeSet([BatchRequest("GET", "/api/data/v9.2/WhoAmI")])])
    with pytest.raises(BatchFormatError):
        build_batch([BatchRequest("PATCH", "/x", {"If-Match": "a\r\nX-Evil: 1"}, {"a": 1})])
    with pytest.raises(BatchFormatError):
        build_batch([])
