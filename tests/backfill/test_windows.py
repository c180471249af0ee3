"""triage.backfill.windows: planning (no gaps, no overlaps, sizing) and the window queries.

Query semantics are checked by evaluating the strings with the simulators' own query engines
(ServiceNow encoded queries; the Dataverse $filter subset), besides exact strings.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import ConfigError
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, FieldMapping, load_mapping
from tests.simulators.dataverse_odata import parse_filter
from tests.simulators.dataverse_schema import SCHEMAS
from tests.simulators.encoded_query import parse
from triage.backfill.windows import (
    Position,
    Window,
    parse_time,
    plan_windows,
    position_of,
    time_field,
    window_order,
    window_query,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SN = load_mapping()
DV = load_mapping(DYNAMICS_DEFAULT_MAPPING_PATH)
SN_ORDER = "ORDERBYsys_created_on^ORDERBYsys_id"
SN_UNSET = (
    "category=inquiry^ORcategoryISEMPTY^ORsubcategoryISEMPTY^ORimpact=3^ORimpactISEMPTY"
    "^ORurgency=3^ORurgencyISEMPTY^ORshort_descriptionISEMPTY"
)


# ---- planning -----------------------------------------------------------------------------


def test_without_an_estimate_windows_are_days_and_touch():
    windows = plan_windows(T0, T0 + timedelta(days=3), run_id="r1")
    assert [(w.index, w.start, w.end) for w in windows] == [
        (0, T0, T0 + timedelta(days=1)),
        (1, T0 + timedelta(days=1), T0 + timedelta(days=2)),
        (2, T0 + timedelta(days=2), T0 + timedelta(days=3)),
    ]
    assert {w.run_id for w in windows} == {"r1"}
    assert [w.key for w in windows] == ["w000000", "w000001", "w000002"]


def test_an_estimate_sizes_windows_to_the_target_and_the_last_one_ends_at_until():
    # 2,000 tickets a day, 500 per window: 6 hours each; 20 h -> 3 full windows and 2 h.
    windows = plan_windows(T0, T0 + timedelta(hours=20), estimated_per_day=2000, target_tickets=500)
    assert [w.end - w.start for w in windows] == [timedelta(hours=6)] * 3 + [timedelta(hours=2)]
    assert windows[-1].end == T0 + timedelta(hours=20)


def test_span_is_clamped_between_a_minute_and_a_month():
    busy = plan_windows(T0, T0 + timedelta(minutes=5), estimated_per_day=1e9)
    assert [w.end - w.start for w in busy] == [timedelta(minutes=1)] * 5
    quiet = plan_windows(T0, T0 + timedelta(days=62), estimated_per_day=0.01)
    assert [w.end - w.start for w in quiet] == [timedelta(days=31)] * 2


def test_max_windows_widens_the_windows():
    windows = plan_windows(T0, T0 + timedelta(days=10), max_windows=4)
    assert len(windows) == 4
    assert windows[0].end - windows[0].start == timedelta(days=2.5)
    assert windows[-1].end == T0 + timedelta(days=10)


def test_bounds_are_whole_utc_seconds_since_floored_until_ceiled():
    cet = timezone(timedelta(hours=1))
    since = datetime(2024, 1, 1, 1, 0, 0, 700_000, tzinfo=cet)  # 00:00:00.7 UTC
    until = datetime(2024, 1, 1, 1, 0, 9, 200_000, tzinfo=cet)
    (window,) = plan_windows(since, until)
    assert (window.start, window.end) == (T0, T0 + timedelta(seconds=10))
    assert window.start.tzinfo == UTC


@pytest.mark.parametrize(
    ("since", "until", "kwargs"),
    [
        (T0, T0, {}),
        (T0 + timedelta(days=1), T0, {}),
        (datetime(2024, 1, 1), T0 + timedelta(days=1), {}),
        (T0, T0 + timedelta(days=1), {"estimated_per_day": 0}),
        (T0, T0 + timedelta(days=1), {"estimated_per_day": float("nan")}),
        (T0, T0 + timedelta(days=1), {"target_tickets": 0}),
    ],
)
def test_bad_plans_are_refused(since, until, kwargs):
    with pytest.raises(ConfigError):
        plan_windows(since, until, **kwargs)


@given(
    start=st.integers(0, 10**8),
    length=st.integers(1, 10**8),
    per_day=st.none() | st.floats(0.001, 1e7),
    target=st.integers(1, 5000),
    max_windows=st.integers(1, 3000),
    probes=st.lists(st.floats(0, 1), max_size=20),
)
def test_windows_cover_the_range_once_with_no_gap_or_overlap(
    start, length, per_day, target, max_windows, probes
):
    since = T0 + timedelta(seconds=start)
    until = since + timedelta(seconds=length)
    windows = plan_windows(
        since, until, estimated_per_day=per_day, target_tickets=target, max_windows=max_windows
    )
    assert windows[0].start == since and windows[-1].end == until
    assert len(windows) <= max_windows
    assert [w.index for w in windows] == list(range(len(windows)))
    for left, right in itertools.pairwise(windows):
        assert left.end == right.start
    assert all(w.start < w.end for w in windows)
    # Every instant lies in exactly one window [start, end).
    for p in probes:
        t = since + timedelta(seconds=int(p * (length - 1)))
        assert sum(w.start <= t < w.end for w in windows) == 1


# ---- ServiceNow queries -------------------------------------------------------------------


def _sn_window(index: int = 0, field: str = "sys_created_on") -> Window:
    return Window("r1", index, T0, T0 + timedelta(days=1), field)


def test_servicenow_query_exact():
    query = window_query(_sn_window(), "servicenow", SN, "active=true^assignment_groupISEMPTY")
    assert query == (
        "active=true^assignment_groupISEMPTY^sys_created_on>=2024-01-01 00:00:00"
        f"^sys_created_on<2024-01-02 00:00:00^{SN_UNSET}^{SN_ORDER}"
    )


def test_servicenow_resume_query_exact():
    after = Position(T0 + timedelta(hours=5), "a" * 32)
    query = window_query(_sn_window(), "servicenow", SN, after=after)
    assert query == (
        "sys_created_on>=2024-01-01 05:00:00^sys_created_on>2024-01-01 05:00:00"
        f"^ORsys_id>{'a' * 32}^sys_created_on<2024-01-02 00:00:00^{SN_UNSET}^{SN_ORDER}"
    )


def test_servicenow_by_updated_time_and_modes():
    mapping = SN.model_copy(update={"modes": {"subcategory": "suggest", "summary": "off"}})
    window = _sn_window(field=time_field("servicenow", "updated"))
    query = window_query(window, "servicenow", mapping)
    assert query == (
        "sys_updated_on>=2024-01-01 00:00:00^sys_updated_on<2024-01-02 00:00:00"
        "^category=inquiry^ORcategoryISEMPTY^ORimpact=3^ORimpactISEMPTY^ORurgency=3"
        "^ORurgencyISEMPTY^ORDERBYsys_updated_on^ORDERBYsys_id"
    )


class _Schema:
    """The incident fields, for the simulator's encoded-query evaluator."""

    fields = ("sys_id", "sys_created_on", "category", "subcategory", "impact", "urgency",
              "short_description", "active")  # fmt: skip

    def target(self, path: str) -> tuple[str, str] | None:
        return ("incident", path) if path in self.fields else None

    def lookup(self, record, path: str) -> str:
        return str(record.get(path, ""))


def _sn_record(i: int, created: datetime, **values: str) -> dict[str, str]:
    base = {
        "sys_id": "f" + hashlib.sha256(str(i).encode()).hexdigest()[1:32],
        "sys_created_on": created.strftime("%Y-%m-%d %H:%M:%S"),
        "category": "software",
        "subcategory": "email",
        "impact": "2",
        "urgency": "2",
        "short_description": "mail is down",
        "active": "true",
    }
    return {**base, **values}


def test_servicenow_query_selects_only_tickets_needing_something_in_the_window():
    inside = T0 + timedelta(hours=1)
    records = [
        _sn_record(1, inside),  # complete: not selected
        _sn_record(2, inside, category="inquiry"),
        _sn_record(3, inside, subcategory=""),
        _sn_record(4, inside, urgency="3"),
        _sn_record(5, inside, short_description=""),
        _sn_record(6, inside, impact="3", active="false"),  # the admin's query excludes it
        _sn_record(7, T0 - timedelta(seconds=1), category=""),  # before the window
        _sn_record(8, T0 + timedelta(days=1), category=""),  # end is exclusive
        _sn_record(9, T0, category=""),  # start is inclusive
    ]
    query = window_query(_sn_window(), "servicenow", SN, "active=true")
    got = [r["sys_id"] for r in parse(query).select(records, _Schema())]
    want = {records[i]["sys_id"] for i in (1, 2, 3, 4, 8)}
    assert set(got) == want
    assert got[0] == records[8]["sys_id"]  # ordered by time first


def test_servicenow_resume_continues_after_the_checkpoint_within_a_tied_second():
    tied = T0 + timedelta(hours=2)
    records = [_sn_record(i, tied if i < 8 else tied + timedelta(seconds=i), category="")
               for i in range(12)]  # fmt: skip
    full = parse(window_query(_sn_window(), "servicenow", SN)).select(records, _Schema())
    for k in range(len(full)):
        last = full[k]
        after = position_of(_sn_window(), last["sys_id"], last)
        rest = parse(window_query(_sn_window(), "servicenow", SN, after=after))
        assert rest.select(records, _Schema()) == full[k + 1 :]


@pytest.mark.parametrize("extra", ["a=1^NQb=2", "a=1^ORDERBYnumber", "a=1^EQ", "a=1\nb=2"])
def test_servicenow_queries_that_could_escape_the_and_are_refused(extra):
    with pytest.raises(ConfigError):
        window_query(_sn_window(), "servicenow", SN, extra)


def test_servicenow_refuses_a_checkpoint_id_that_is_not_a_sys_id():
    with pytest.raises(ConfigError):
        window_query(_sn_window(), "servicenow", SN, after=Position(T0, "x^NQactive=true"))


# ---- Dataverse queries --------------------------------------------------------------------

GUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def _dv_window() -> Window:
    return Window("r1", 0, T0, T0 + timedelta(days=1), "createdon")


def test_dataverse_filter_and_order_exact():
    query = window_query(_dv_window(), "dataverse", DV, "statecode eq 0")
    assert query == (
        "(statecode eq 0) and createdon ge 2024-01-01T00:00:00Z"
        " and createdon lt 2024-01-02T00:00:00Z and (prioritycode eq 2 or prioritycode eq null)"
    )
    assert window_order(_dv_window(), "dataverse", DV) == "createdon asc,incidentid asc"


def test_dataverse_resume_filter_exact():
    after = Position(T0 + timedelta(hours=5), GUID.upper())
    query = window_query(_dv_window(), "dataverse", DV, after=after)
    assert query == (
        "createdon ge 2024-01-01T05:00:00Z and (createdon gt 2024-01-01T05:00:00Z"
        f" or incidentid gt {GUID}) and createdon lt 2024-01-02T00:00:00Z"
        " and (prioritycode eq 2 or prioritycode eq null)"
    )


def test_dataverse_text_and_lookup_columns_and_quotes():
    mapping = FieldMapping.model_validate(
        {
            "system": "dataverse",
            "fields": {
                "title": "title",
                "description": "description",
                "summary": "new_summary",
                "category": "_subjectid_value",
            },
            "unset": {"summary": ["n/a", "it's empty"], "category": [GUID.upper()]},
        }
    )
    query = window_query(_dv_window(), "dataverse", mapping)
    assert query.endswith(
        " and (new_summary eq 'n/a' or new_summary eq 'it''s empty' or new_summary eq null"
        f" or new_summary eq '' or _subjectid_value eq {GUID} or _subjectid_value eq null)"
    )


def test_dataverse_filter_selects_the_right_rows_in_the_simulator():
    rows = [
        {"incidentid": GUID, "createdon": "2024-01-01T03:00:00Z", "prioritycode": 2,
         "statecode": 0},  # unset priority: selected
        {"incidentid": GUID, "createdon": "2024-01-01T03:00:00Z", "prioritycode": None,
         "statecode": 0},  # empty: selected
        {"incidentid": GUID, "createdon": "2024-01-01T03:00:00Z", "prioritycode": 1,
         "statecode": 0},  # set by a person
        {"incidentid": GUID, "createdon": "2024-01-01T03:00:00Z", "prioritycode": 2,
         "statecode": 1},  # closed: the admin's filter
        {"incidentid": GUID, "createdon": "2024-01-02T00:00:00Z", "prioritycode": 2,
         "statecode": 0},  # the next window
    ]  # fmt: skip
    predicate = parse_filter(SCHEMAS["incidents"], window_query(_dv_window(), "dataverse", DV,
                                                                "statecode eq 0"))  # fmt: skip
    assert [predicate(r) for r in rows] == [True, True, False, False, False]


@pytest.mark.parametrize("extra", ["a eq 1) or (b eq 2", "(a eq 1", "a eq 'x", "a eq 1\nor b eq 2"])
def test_dataverse_filters_that_could_escape_the_and_are_refused(extra):
    with pytest.raises(ConfigError):
        window_query(_dv_window(), "dataverse", DV, extra)


def test_dataverse_parentheses_inside_strings_are_fine():
    query = window_query(_dv_window(), "dataverse", DV, "contains(title,'a) or (b')")
    assert query.startswith("(contains(title,'a) or (b')) and ")


# ---- shared refusals and helpers ----------------------------------------------------------


def test_a_mapping_that_fills_nothing_is_refused():
    nothing = SN.model_copy(update={"modes": dict.fromkeys(SN.fields, "suggest")})
    with pytest.raises(ConfigError, match="fills no field"):
        window_query(_sn_window(), "servicenow", nothing)


def test_time_field_must_belong_to_the_platform_and_mapping_too():
    with pytest.raises(ConfigError):
        window_query(_dv_window(), "servicenow", SN)
    with pytest.raises(ConfigError):
        window_query(_sn_window(), "dataverse", DV)
    with pytest.raises(ConfigError):
        window_query(Window("r", 0, T0, T0, "sys_created_on"), "dataverse", SN)
    with pytest.raises(ConfigError):
        time_field("servicenow", "closed")


def test_parse_time_reads_both_platforms_as_utc():
    assert parse_time("2024-01-01 05:00:00") == T0 + timedelta(hours=5)
    assert parse_time("2024-01-01T05:00:00Z") == T0 + timedelta(hours=5)
    with pytest.raises(ConfigError):
        parse_time("")
