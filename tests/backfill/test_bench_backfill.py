"""``bench.bench_backfill`` at a tiny size: the JSON the issue names and the run's invariants.

Both simulators, a real child process killed twice (SIGKILL) and resumed with the same run id;
the figures are checked against the simulators' state, not only against the run's own counts.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench import bench_backfill

KEYS = {
    "tickets",
    "tickets_per_s",
    "quota_used_share",
    "requests_per_enriched_ticket",
    "failed",
    "duplicated",
    "resumed_after_kill",
}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return bench_backfill.main(
        [
            "--tickets", "300",
            "--servicenow-quota-per-s", "150",
            "--dynamics-quota-per-s", "3",
            "--lease-s", "2",
        ]
    )  # fmt: skip


def test_prints_one_object_with_the_issue_s_keys_per_platform(report: dict[str, Any]) -> None:
    assert set(report) >= {"platforms", "tickets_requested", "quota", "targets", "met"}
    assert set(report["platforms"]) == {"servicenow", "dynamics"}
    for figures in report["platforms"].values():
        assert set(figures) >= KEYS
    assert report["tickets_requested"] == 300
    assert report["targets"]["servicenow_requests_per_enriched_ticket_max"] == 1.05
    assert report["targets"]["dynamics_requests_per_enriched_ticket_max"] == 0.05


@pytest.mark.parametrize("platform", ["servicenow", "dynamics"])
def test_killed_twice_it_finishes_with_every_fillable_ticket_filled_once(
    report: dict[str, Any], platform: str
) -> None:
    figures = report["platforms"][platform]
    detail = figures["detail"]
    assert [k["killed"] for k in detail["kills"]] == [True, True]  # two real SIGKILLs
    assert detail["exit_code"] == 0
    assert figures["resumed_after_kill"] is True
    assert figures["failed"] == 0 and figures["duplicated"] == 0
    # Checked on the simulator: a clean dry run over the final state finds nothing to fill,
    # no person's value was replaced, and every ticket the run filled carries one note.
    assert detail["still_fillable_after_run"] == 0
    assert detail["person_values_overwritten"] == 0
    # A batch that landed just before a kill is written but was never counted by the run.
    assert detail["written"] >= detail["run_counts"]["filled"] > detail["generated"] // 2
    assert detail["generated"] * 0.9 <= figures["tickets"] <= detail["generated"] * 1.2
    per = figures["requests_per_enriched_ticket"]
    assert per == pytest.approx(detail["requests_served"] / detail["written"], abs=1e-3)


def test_servicenow_is_charged_per_sub_request_and_dataverse_per_batch(
    report: dict[str, Any],
) -> None:
    sn = report["platforms"]["servicenow"]["detail"]
    dv = report["platforms"]["dynamics"]["detail"]
    # One PATCH sub-request per ticket written, and no PATCH outside the Batch API.
    assert sn["requests_by_kind"]["batch sub-request"] == sn["written"]
    assert "PATCH incident" not in sn["requests_by_kind"]
    assert report["platforms"]["servicenow"]["requests_per_enriched_ticket"] > 1.0
    # Dataverse: a $batch of up to 100 cases is one request.
    assert dv["requests_by_kind"]["POST $batch"] < dv["written"] / 2
    assert report["platforms"]["dynamics"]["requests_per_enriched_ticket"] < 1.0


def test_budget_grants_match_what_the_platform_counts(report: dict[str, Any]) -> None:
    for figures in report["platforms"].values():
        detail = figures["detail"]
        # Every request the children sent went through their budget (the token requests and
        # the dry-run check's reads are not the children's).
        assert 0 < detail["granted"] <= detail["requests_counted_by_platform_limits"]
        assert figures["quota_used_share"] > 0
        json.dumps(report)  # plain JSON types throughout
