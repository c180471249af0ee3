"""``$batch`` on the Dataverse simulator (dataverse.md §7): parts, change sets, Content-ID."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from connectors.odata_batch import parse_batch_response
from tests.simulators import FakeClock
from tests.simulators.dataverse import DataverseSimulator
from tests.simulators.dataverse_batch import BatchError, ChangeSet, parse_batch
from tests.simulators.dataverse_testkit import CLIENT, SECRET, api_session

API = "/api/data/v9.2"


@pytest.fixture
def sim() -> Iterator[DataverseSimulator]:
    with DataverseSimulator({CLIENT: SECRET}, FakeClock()) as s:
        yield s
    assert s.errors == []


@pytest.fixture
def http(sim: DataverseSimulator) -> Iterator[requests.Session]:
    with api_session(sim) as session:
        yield session


def part(
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    cid: int | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if cid is not None:
        lines.append(f"Content-ID: {cid}")
    lines += ["", f"{method} {url} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json; type=entry", "", json.dumps(body)]
    else:
        lines += [""]
    return "\r\n".join(lines) + "\r\n"


def changeset(name: str, parts: list[str]) -> str:
    inner = "".join(f"--{name}\r\n{p}" for p in parts) + f"--{name}--\r\n"
    return f"Content-Type: multipart/mixed; boundary={name}\r\n\r\n{inner}"


def batch(items: list[str]) -> str:
    return "".join(f"--batch_x\r\n{i}" for i in items) + "--batch_x--\r\n"


def send(sim: DataverseSimulator, http: requests.Session, body: str, prefer: str | None = None) -> requests.Response:  # fmt: skip
    headers = {"Content-Type": 'multipart/mixed; boundary="batch_x"'}
    if prefer:
        headers["Prefer"] = prefer
    return http.post(f"{sim.api_url}/$batch", data=body.encode(), headers=headers, timeout=5)


def statuses(resp: requests.Response) -> list[int]:
    return [int(s) for s in re.findall(r"HTTP/1\.1 (\d{3}) ", resp.text)]


def test_parser_reads_parts_and_change_sets_with_lf_or_crlf() -> None:
    body = batch(
        [
            part("GET", f"{API}/WhoAmI"),
            changeset("changeset_y", [part("PATCH", f"{API}/incidents(1)", {"a": 1}, cid=1)]),
        ]
    )
    for text in (body, body.replace("\r\n", "\n")):
        items = parse_batch(text.encode(), "batch_x")
        assert items[0].method == "GET"  # type: ignore[union-attr]
        assert isinstance(items[1], ChangeSet)
        assert items[1].parts[0].content_id == "1"
        assert json.loads(items[1].parts[0].body) == {"a": 1}
    with pytest.raises(BatchError):
        parse_batch(body.replace("--batch_x--", "").encode(), "batch_x")


def test_change_set_patch_and_note_commit_together(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    case = sim.add_case({"title": "x"})
    etag = f'W/"{sim.get_case(case)["versionnumber"]}"'  # type: ignore[index]
    note = {
        "subject": "triage",
        "notetext": "n",
        "objectid_incident@odata.bind": f"/incidents({case})",
    }
    body = batch([changeset("changeset_y", [
        part("PATCH", f"{sim.api_url}/incidents({case})", {"prioritycode": 1}, 1, {"If-Match": etag}),
        part("POST", f"{API}/annotations", note, 2),
    ])])  # fmt: skip
    resp = send(sim, http, body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    assert "--changesetresponse_" in resp.text
    assert statuses(resp) == [204, 204]
    assert sim.get_case(case)["prioritycode"] == 1  # type: ignore[index]
    assert len(sim.annotations(case)) == 1


def test_a_failing_part_rolls_back_the_whole_change_set(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    case = sim.add_case({"title": "x"})
    before = sim.get_case(case)
    note = {
        "subject": "triage",
        "notetext": "n",
        "objectid_incident@odata.bind": f"/incidents({case})",
    }
    body = batch([changeset("changeset_y", [
        part("POST", f"{API}/annotations", note, 1),
        part("PATCH", f"{API}/incidents({case})", {"prioritycode": 1}, 2),
        part("PATCH", f"{API}/incidents({case})", {"title": "y"}, 3, {"If-Match": 'W/"1"'}),
    ])])  # fmt: skip
    resp = send(sim, http, body)
    assert resp.status_code == 400
    assert statuses(resp) == [412]
    assert sim.get_case(case) == before
    assert sim.annotations(case) == []


def test_content_id_reference_binds_a_note_to_a_case_created_in_the_same_change_set(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    new_case = {
        "title": "new",
        "customerid_account@odata.bind": "/accounts(11111111-1111-4111-8111-111111111111)",
    }
    body = batch([changeset("changeset_y", [
        part("POST", f"{API}/incidents", new_case, 1),
        part("POST", f"{API}/annotations", {"subject": "s", "notetext": "t", "objectid_incident@odata.bind": "$1"}, 2),
        part("PATCH", "$1", {"prioritycode": 3}, 3),
    ])])  # fmt: skip
    resp = send(sim, http, body)
    assert statuses(resp) == [204, 204, 204], resp.text
    case_id = re.search(r"incidents\(([0-9a-f-]{36})\)", resp.text).group(1)  # type: ignore[union-attr]
    assert sim.get_case(case_id)["prioritycode"] == 3  # type: ignore[index]
    assert len(sim.annotations(case_id)) == 1
    undeclared = batch([changeset("changeset_z", [part("PATCH", "$9", {"prioritycode": 3}, 1)])])
    assert statuses(send(sim, http, undeclared)) == [400]


def test_get_inside_a_change_set_is_refused(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    body = batch([changeset("changeset_y", [part("GET", f"{API}/WhoAmI", cid=1)])])
    resp = send(sim, http, body)
    assert statuses(resp) == [400]
    assert "GET requests are not allowed" in resp.text


def test_first_failure_stops_unless_continue_on_error(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    case = sim.add_case({"title": "x"})
    items = [
        part("PATCH", f"{API}/incidents({case})", {"prioritycode": 9}),
        part("GET", f"{API}/incidents({case})?$select=title"),
    ]
    stop = send(sim, http, batch(items))
    assert stop.status_code == 400 and statuses(stop) == [400]
    go_on = send(sim, http, batch(items), prefer="odata.continue-on-error")
    assert go_on.status_code == 200
    assert statuses(go_on) == [400, 200]
    assert '"title": "x"' in go_on.text


def test_a_batch_is_one_request_for_the_limits(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    sim.limits.requests = 2
    case = sim.add_case({"title": "x"})
    body = batch([part("GET", f"{API}/incidents({case})") for _ in range(5)])
    assert send(sim, http, body).status_code == 200
    assert send(sim, http, body).status_code == 200
    assert send(sim, http, body).status_code == 429


def test_missing_boundary_is_a_400(sim: DataverseSimulator, http: requests.Session) -> None:
    resp = http.post(
        f"{sim.api_url}/$batch", data=b"x", headers={"Content-Type": "application/json"}, timeout=5
    )
    assert resp.status_code == 400


def test_many_change_sets_go_on_past_a_412_and_return_their_representation(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    cases = [sim.add_case({"title": f"c{n}"}) for n in range(5)]
    etags = {c: f'W/"{sim.get_case(c)["versionnumber"]}"' for c in cases}  # type: ignore[index]
    sim.update_record(cases[2], {"title": "a person was here"})  # its etag is now stale
    items = []
    for n, case in enumerate(cases):
        note = {"subject": "s", "notetext": f"n{n}", "objectid_incident@odata.bind": f"/incidents({case})"}  # fmt: skip
        patch_headers = {"If-Match": etags[case], "Prefer": "return=representation"}
        items.append(changeset(f"changeset_{n}", [
            part("PATCH", f"{API}/incidents({case})?$select=casetypecode,modifiedon", {"casetypecode": 1}, 2 * n + 1, patch_headers),
            part("POST", f"{API}/annotations", note, 2 * n + 2),
        ]))  # fmt: skip
    resp = send(sim, http, batch(items), prefer="odata.continue-on-error")
    assert resp.status_code == 200, resp.text
    assert resp.headers["Preference-Applied"] == "odata.continue-on-error"
    assert statuses(resp) == [200, 204, 200, 204, 412, 200, 204, 200, 204]
    parsed = parse_batch_response(resp.content, resp.headers["Content-Type"])
    assert [r.change_set for r in parsed] == [0, 0, 1, 1, 2, 3, 3, 4, 4]  # one answer per set
    assert [r.content_id for r in parsed if r.status >= 400] == ["5"]
    for n, case in enumerate(cases):
        stored = sim.get_case(case)
        assert stored is not None
        assert stored["casetypecode"] == (None if n == 2 else 1)
        assert len(sim.annotations(case)) == (0 if n == 2 else 1)
    # Each PATCH answer is the stored row as selected, with its new etag.
    written = [r.json() for r in parsed if r.status == 200]
    assert len(written) == 4
    for body in written:
        assert set(body) == {"@odata.context", "@odata.etag", "casetypecode", "modifiedon", "incidentid"}  # fmt: skip
        stored = sim.get_case(body["incidentid"])
        assert stored is not None and body["@odata.etag"] == f'W/"{stored["versionnumber"]}"'
