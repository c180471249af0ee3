"""DataverseConnector against `responses`: reads, the one-change-set write, errors, paging."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

import pytest

from connectors.base import SourceRecord
from connectors.dataverse import DataverseConnector, build_dataverse_connector
from connectors.odata_batch import (
    BatchRequest,
    BatchResult,
    ChangeSet,
    build_batch_response,
    parse_batch_request,
)
from domain.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    NotFoundError,
    RejectedError,
    ThrottledError,
    UnavailableError,
)
from domain.settings import DataverseSettings, Settings

ORG = "https://acme.crm.dynamics.com"
API = f"{ORG}/api/data/v9.2"
CASE = "5f1c1e9a-0b8e-4c1e-9f00-0000000000aa"
SUBJECT = "a1b2c3d4-0000-4000-8000-00000000beef"
ETAG = 'W/"1001"'
FIELD_TYPES = {
    "prioritycode": "choice",
    "new_impact": "choice",
    "casetypecode": "choice",
    "_subjectid_value": "lookup:subjects",
    "new_summary": "text",
}
ANY_CASE = re.compile(rf"{re.escape(API)}/incidents\({CASE}\).*")
BATCH = f"{API}/$batch"


class StubTokens:
    """A TokenProvider handing out tok-1, tok-2, ... and counting invalidations."""

    def __init__(self) -> None:
        self.issued = 0
        self.current: str | None = None
        self.invalidated = 0

    def token(self) -> str:
        if self.current is None:
            self.issued += 1
            self.current = f"tok-{self.issued}"
        return self.current

    def invalidate(self) -> None:
        self.invalidated += 1
        self.current = None


def dv_settings(**extra: object) -> DataverseSettings:
    values: dict[str, object] = {
        "org_url": ORG,
        "tenant_id": "tenant-1",
        "client_id": "client-1",
        "client_secret": "s3cret-value",
    }
    values.update(extra)
    return DataverseSettings.model_validate(values)


@pytest.fixture
def tokens() -> StubTokens:
    return StubTokens()


@pytest.fixture
def connector(http_settings, clock, tokens) -> DataverseConnector:
    return make(http_settings, clock, tokens)


def make(http_settings, clock, tokens, **extra: object) -> DataverseConnector:
    return DataverseConnector(
        dv_settings(**extra),
        http_settings,
        field_types=FIELD_TYPES,
        token_provider=tokens,
        sleep=clock.sleep,
        now=clock.now,
        monotonic=clock.monotonic,
    )


def record(etag: str = ETAG, **fields: object) -> dict[str, object]:
    return {
        "@odata.context": f"{API}/$metadata#incidents/$entity",
        "@odata.etag": etag,
        "incidentid": CASE,
        "prioritycode@OData.Community.Display.V1.FormattedValue": "High",
        **fields,
    }


def batch_ok(rsps, results=None) -> None:
    encoded = build_batch_response(
        [results or [BatchResult(204, content_id="1"), BatchResult(204, content_id="2")]]
    )
    rsps.post(
        BATCH,
        body=encoded.body,
        content_type=encoded.content_type,
        headers={"REQ_ID": "batch-req-1"},
    )


def sent_change_set(call) -> list[BatchRequest]:
    items = parse_batch_request(call.request.body, call.request.headers["Content-Type"])
    assert len(items) == 1 and isinstance(items[0], ChangeSet)
    return list(items[0].requests)


def test_get_selects_fields_sends_odata_headers_and_keeps_the_etag(rsps, connector):
    rsps.get(ANY_CASE, json=record(title="VPN down", prioritycode=1, _subjectid_value=SUBJECT))
    got = connector.get("incident", CASE.upper(), ["title", "prioritycode", "_subjectid_value"])
    request = rsps.calls[0].request
    assert unquote(request.url) == (
        f"{API}/incidents({CASE})?$select=title,prioritycode,_subjectid_value"
    )
    for name, value in {
        "Accept": "application/json",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
        "If-None-Match": "null",
        "Authorization": "Bearer tok-1",
    }.items():
        assert request.headers[name] == value
    assert got.system == "dataverse" and got.record_id == CASE and got.etag == ETAG
    assert got.fields == {
        "incidentid": CASE,
        "title": "VPN down",
        "prioritycode": 1,
        "_subjectid_value": SUBJECT,
    }


def test_update_is_one_change_set_with_if_match_binds_ints_and_the_note(
    rsps, http_settings, clock, tokens
):
    batch_ok(rsps)
    rsps.get(ANY_CASE, json=record('W/"1002"', prioritycode=1, new_summary="Sum"))
    connector = make(http_settings, clock, tokens, bypass_business_logic="CustomAsync")
    changes = {
        "prioritycode": "1",
        "_subjectid_value": SUBJECT,
        "new_summary": "Sum\r\n‘quoted’ ✓",
        "annotation": "Filled by triage [marker-1]",
    }
    stored = connector.update("incident", CASE, changes, etag=ETAG)

    post = rsps.calls[0].request
    assert post.url == BATCH
    assert post.headers["Content-Type"].startswith("multipart/mixed; boundary=batch_")
    assert post.headers["MSCRM.BypassBusinessLogicExecution"] == "CustomAsync"
    patch, note = sent_change_set(rsps.calls[0])
    assert (patch.method, patch.url, patch.content_id) == (
        "PATCH",
        f"/api/data/v9.2/incidents({CASE})",
        "1",
    )
    assert patch.headers["If-Match"] == ETAG
    assert patch.headers["MSCRM.BypassBusinessLogicExecution"] == "CustomAsync"
    assert patch.body == {
        "prioritycode": 1,
        "subjectid@odata.bind": f"/subjects({SUBJECT})",
        "new_summary": "Sum\r\n‘quoted’ ✓",
    }
    assert (note.method, note.url) == ("POST", "/api/data/v9.2/annotations")
    assert note.body == {
        "subject": "Ticket enrichment",
        "notetext": "Filled by triage [marker-1]",
        "objectid_incident@odata.bind": f"/incidents({CASE})",
    }
    # The answer is the record re-read: its new etag and the written columns.
    reread = unquote(rsps.calls[1].request.url)
    assert (
        "$select=prioritycode,_subjectid_value,new_summary,modifiedon,_modifiedby_value" in reread
    )
    assert stored.etag == 'W/"1002"' and stored.fields["prioritycode"] == 1


def test_update_without_a_known_etag_still_refuses_to_create(rsps, connector):
    batch_ok(rsps, [BatchResult(204, content_id="1")])
    rsps.get(ANY_CASE, json=record())
    connector.update("incident", CASE, {"casetypecode": "2"})
    (patch,) = sent_change_set(rsps.calls[0])
    assert patch.headers["If-Match"] == "*"
    assert patch.body == {"casetypecode": 2}


def _failed_batch(rsps, status: int, code: str, message: str) -> None:
    error = json.dumps({"error": {"code": code, "message": message}}).encode()
    encoded = build_batch_response(
        [
            [
                BatchResult(
                    status,
                    headers={"Content-Type": "application/json", "REQ_ID": "part-req-9"},
                    body=error,
                    content_id="1",
                )
            ]
        ]
    )
    rsps.post(BATCH, status=400, body=encoded.body, content_type=encoded.content_type)


def test_stale_etag_is_a_conflict_and_nothing_else_is_sent(rsps, connector):
    _failed_batch(
        rsps,
        412,
        "0x80060882",
        "The version of the existing record doesn't match the RowVersion property provided.",
    )
    with pytest.raises(ConflictError) as info:
        connector.update("incident", CASE, {"prioritycode": "1", "annotation": "n"}, etag=ETAG)
    assert info.value.status_code == 412
    assert info.value.request_id == "part-req-9"
    assert "0x80060882: The version of the existing record" in str(info.value)
    assert "PATCH /api/data/v9.2/incidents(" in str(info.value)
    assert len(rsps.calls) == 1  # one atomic request: no separate note, no retry


def test_missing_case_under_if_match_is_not_found(rsps, connector):
    _failed_batch(rsps, 404, "0x80040217", f"incident With Id = {CASE} Does Not Exist")
    with pytest.raises(NotFoundError):
        connector.update("incident", CASE, {"prioritycode": "3"}, etag=ETAG)


def test_batch_answered_200_with_a_failed_part_still_raises(rsps, connector):
    batch_ok(
        rsps,
        [
            BatchResult(204, content_id="1"),
            BatchResult(
                400, body=b'{"error":{"code":"0x80044331","message":"too long"}}', content_id="2"
            ),
        ],
    )
    with pytest.raises(RejectedError, match="0x80044331: too long"):
        connector.update("incident", CASE, {"prioritycode": "1", "annotation": "n"}, etag=ETAG)


def test_unreadable_batch_answer_is_unavailable(rsps, connector):
    rsps.post(BATCH, body="<html>proxy</html>", content_type="text/html")
    with pytest.raises(UnavailableError, match="may or may not have applied"):
        connector.update("incident", CASE, {"prioritycode": "1"}, etag=ETAG)


@pytest.mark.parametrize(
    "changes",
    [{"prioritycode": "High"}, {"unknown_column": "x"}, {"_subjectid_value": "not-a-guid"}, {}],
)
def test_bad_values_are_refused_before_any_request(rsps, connector, changes):
    with pytest.raises(RejectedError):
        connector.update("incident", CASE, changes, etag=ETAG)
    assert len(rsps.calls) == 0


def test_429_on_the_batch_waits_retry_after_and_resends(rsps, connector, clock):
    rsps.post(
        BATCH,
        status=429,
        headers={"Retry-After": "7", "x-ms-service-request-id": "r-429"},
        json={"error": {"code": "0x80072322", "message": "Number of requests exceeded the limit"}},
    )
    batch_ok(rsps, [BatchResult(204, content_id="1")])
    rsps.get(ANY_CASE, json=record())
    connector.update("incident", CASE, {"prioritycode": "2"}, etag=ETAG)
    assert clock.waits == [7.0]


def test_throttled_error_carries_the_service_protection_code(rsps, http_settings, clock, tokens):
    rsps.get(
        ANY_CASE,
        status=429,
        headers={"Retry-After": "600", "x-ms-service-request-id": "r-1"},
        json={"error": {"code": "0x80072326", "message": "Number of concurrent requests exceeded"}},
    )
    with pytest.raises(ThrottledError) as info:
        make(http_settings, clock, tokens).get("incident", CASE, ["title"])
    assert info.value.retry_after_s == 600 and info.value.request_id == "r-1"
    assert "0x80072326" in str(info.value)


def test_401_refreshes_the_token_once(rsps, connector, tokens):
    rsps.get(ANY_CASE, status=401, json={"error": {"code": "0x80090001", "message": "expired"}})
    rsps.get(ANY_CASE, json=record(title="t"))
    assert connector.get("incident", CASE, ["title"]).fields["title"] == "t"
    assert [c.request.headers["Authorization"] for c in rsps.calls] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    assert tokens.invalidated == 1


def test_401_twice_is_an_auth_error(rsps, connector, tokens):
    rsps.get(ANY_CASE, status=401, json={"error": {"code": "", "message": "no"}})
    rsps.get(ANY_CASE, status=401, json={"error": {"code": "", "message": "still no"}})
    with pytest.raises(AuthError):
        connector.get("incident", CASE, ["title"])
    assert tokens.invalidated == 1


NEXT = f"{API}/incidents?$select=incidentid,title&$skiptoken=%3Ccookie%20pagenumber=%222%22/%3E"


def test_iter_records_pages_by_next_link_unchanged(rsps, connector):
    rows = [{"@odata.etag": 'W/"1"', "incidentid": CASE, "title": "a"}]
    more = [{"@odata.etag": 'W/"2"', "incidentid": SUBJECT, "title": "b"}]
    rsps.get(
        re.compile(rf"{re.escape(API)}/incidents\?.*"),
        json={"value": rows, "@odata.nextLink": NEXT},
    )
    rsps.get(re.compile(r".*skiptoken.*"), json={"value": more})
    got = list(connector.iter_records("incident", "statecode eq 0", ["title"], page_size=2))
    assert [(r.record_id, r.etag, r.fields["title"]) for r in got] == [
        (CASE, 'W/"1"', "a"),
        (SUBJECT, 'W/"2"', "b"),
    ]
    first, second = (c.request for c in rsps.calls)
    assert unquote(first.url) == (
        f"{API}/incidents?$select=incidentid,title&$filter=statecode eq 0"
        "&$orderby=createdon asc,incidentid asc"
    )
    assert first.headers["Prefer"] == "odata.maxpagesize=2"
    assert second.url == NEXT  # not re-encoded, nothing appended
    assert second.headers["Prefer"] == "odata.maxpagesize=2"
    assert "$skip=" not in unquote(first.url + second.url)


def test_iter_records_refuses_a_repeated_or_foreign_next_link(rsps, connector):
    rsps.get(
        re.compile(rf"{re.escape(API)}/incidents\?.*"), json={"value": [], "@odata.nextLink": NEXT}
    )
    rsps.get(re.compile(r".*skiptoken.*"), json={"value": [], "@odata.nextLink": NEXT})
    with pytest.raises(UnavailableError, match="twice"):
        list(connector.iter_records("incident", "", ["title"]))
    rsps.get(
        re.compile(rf"{re.escape(API)}/incidents\?.*"),
        json={"value": [], "@odata.nextLink": "https://evil.example/api/data/v9.2/incidents?x=1"},
    )
    with pytest.raises(RejectedError, match="outside the organisation"):
        list(connector.iter_records("incident", "", ["title"]))


def test_has_note_filters_annotations_of_the_case(rsps, connector):
    rsps.get(
        re.compile(rf"{re.escape(API)}/annotations\?.*"),
        json={"value": [{"annotationid": SUBJECT}]},
    )
    rsps.get(re.compile(rf"{re.escape(API)}/annotations\?.*"), json={"value": []})
    assert connector.has_note("incident", CASE, "triage:abc123", element="annotation")
    assert not connector.has_note("incident", CASE, "triage:abc123", element="annotation")
    assert unquote(rsps.calls[0].request.url) == (
        f"{API}/annotations?$filter=_objectid_value eq {CASE} and "
        "contains(notetext,'triage:abc123')&$select=annotationid&$top=1"
    )
    with pytest.raises(RejectedError):
        connector.has_note("incident", CASE, "x') or true or ('", element="annotation")


def test_overwritten_is_always_empty_without_a_request(rsps, connector):
    written = SourceRecord("dataverse", "incident", CASE, {"prioritycode": 1}, etag='W/"2"')
    read = SourceRecord("dataverse", "incident", CASE, {"prioritycode": None}, etag=ETAG)
    found = connector.overwritten(
        "incident", CASE, written=written, marker="m", element="annotation", read=read
    )
    assert found == {}
    assert len(rsps.calls) == 0


def test_who_am_i_is_cached(rsps, connector):
    rsps.get(f"{API}/WhoAmI", json={"UserId": SUBJECT.upper(), "BusinessUnitId": CASE})
    assert connector.who_am_i() == SUBJECT
    assert connector.who_am_i() == SUBJECT
    assert len(rsps.calls) == 1


def test_first_email_text_reads_the_earliest_email(rsps, connector):
    rsps.get(
        re.compile(rf"{re.escape(API)}/emails\?.*"),
        json={"value": [{"description": "<p>Hi</p>", "subject": "s"}]},
    )
    rsps.get(re.compile(rf"{re.escape(API)}/emails\?.*"), json={"value": []})
    assert connector.first_email_text(CASE) == "<p>Hi</p>"
    assert connector.first_email_text(CASE) is None
    assert unquote(rsps.calls[0].request.url) == (
        f"{API}/emails?$filter=_regardingobjectid_value eq {CASE}&$orderby=createdon asc"
        "&$select=description,subject&$top=1"
    )


def test_list_choices_and_subjects(rsps, connector):
    label = {"UserLocalizedLabel": {"Label": "High"}}
    rsps.get(
        re.compile(r".*PicklistAttributeMetadata.*"),
        json={
            "value": [
                {
                    "LogicalName": "prioritycode",
                    "OptionSet": {"Options": [{"Value": 1, "Label": label}]},
                },
                {
                    "LogicalName": "statuscode",
                    "OptionSet": {"Options": [{"Value": 5, "Label": label}]},
                },
            ]
        },
    )
    assert connector.list_choices(["prioritycode"]) == [
        {"element": "prioritycode", "value": "1", "label": "High"}
    ]
    assert unquote(rsps.calls[0].request.url) == (
        f"{API}/EntityDefinitions(LogicalName='incident')/Attributes/"
        "Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
        "?$select=LogicalName&$expand=OptionSet($select=Options)"
    )
    rsps.get(
        re.compile(rf"{re.escape(API)}/subjects\?.*"),
        json={"value": [{"subjectid": SUBJECT, "title": "Network", "_parentsubject_value": None}]},
    )
    assert connector.list_subjects() == [
        {"subjectid": SUBJECT, "title": "Network", "_parentsubject_value": ""}
    ]


def test_build_needs_dataverse_settings_and_valid_field_types():
    with pytest.raises(ConfigError):
        build_dataverse_connector(Settings(), field_types=FIELD_TYPES)
    settings = Settings(dataverse=dv_settings())
    assert build_dataverse_connector(settings, field_types=FIELD_TYPES).system == "dataverse"
    with pytest.raises(ConfigError):
        build_dataverse_connector(settings, field_types={"subjectid": "lookup:subjects"})
    with pytest.raises(ConfigError):
        build_dataverse_connector(settings, field_types={"prioritycode": "number"})
