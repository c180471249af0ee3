"""The backfill triggers (triggers/backfill.py) called with constructed Functions objects; the
timer is indexed only with a schedule, and a timer firing twice in one minute starts one run."""

from __future__ import annotations

import json
from datetime import timedelta

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

import function_app
from domain.errors import ConfigError, UnavailableError
from domain.settings import BackfillSettings
from tests.backfill.test_cli import NOW, BatchFake, kit, record, settings, sys_id
from triage.backfill.service import scheduled_run_id
from triage.backfill.spec import WindowJob
from triggers import backfill


@pytest.fixture
def service():
    svc, _ = kit()
    function_app.backfills.override(svc)
    yield svc
    function_app.backfills.override(None)


def post(data: object, ctype: str = "application/json") -> func.HttpRequest:
    return func.HttpRequest(method="POST", url="/api/backfill", headers={"Content-Type": ctype},
                            body=json.dumps(data).encode())  # fmt: skip


def test_http_submit_then_queue_worker_then_status(service):
    resp = function_app.backfill_submit(
        post({"platform": "servicenow", "since": "2024-01-01", "until": "2024-01-03"})
    )
    assert resp.status_code == 202 and resp.mimetype == "application/json"
    run_id = json.loads(resp.get_body())["run_id"]
    for message in list(service.queue.messages):
        function_app.backfill_worker(func.QueueMessage(id="1", body=message.encode()))
    req = func.HttpRequest(method="GET", url=f"/api/backfill/{run_id}", body=b"",
                           route_params={"run_id": run_id})  # fmt: skip
    status = json.loads(function_app.backfill_status(req).get_body())
    assert status["state"] == "done" and status["counts"]["filled"] == 5


def test_http_bad_input_is_4xx_json(service):
    resp = function_app.backfill_submit(post({"platform": "servicenow"}, ctype="text/xml"))
    assert resp.status_code == 415
    assert json.loads(resp.get_body())["error"]["code"] == "unsupported_media_type"
    missing = func.HttpRequest(method="GET", url="/api/backfill/nope", body=b"",
                               route_params={"run_id": "nope"})  # fmt: skip
    assert function_app.backfill_status(missing).status_code == 404


def test_broken_backfill_settings_answer_503_and_leave_live_functions_alone():
    def broken():
        raise ConfigError("invalid settings: ENRICH_BACKFILL__SHARE: bad")

    original = function_app.backfills.set_factory(broken)
    try:
        resp = function_app.backfill_submit(post({"platform": "servicenow"}))
        backfill.backfill_schedule(TimerRequest())  # a timer has nobody to answer: returns
    finally:
        function_app.backfills.set_factory(original)
    assert resp.status_code == 503 and "SHARE" not in resp.get_body().decode()


def test_the_worker_poisons_bad_messages_without_raising(service):
    function_app.backfill_worker(func.QueueMessage(id="1", body=b"\xff not a window"))
    unknown = WindowJob(run_id="nope", window=0).model_dump_json().encode()
    function_app.backfill_worker(func.QueueMessage(id="2", body=unknown))
    reasons = [json.loads(m)["reason"] for m in service.poison.messages]
    assert reasons[0].startswith("invalid_message") and reasons[1].startswith("unknown_run")


def test_the_worker_raises_storage_failures_for_the_host_retry():
    cfg = settings().model_copy(update={"backfill": BackfillSettings(page_size=1)})
    svc, _ = kit(settings_=cfg)
    svc.runners("servicenow").time_budget_s = -1.0  # give the window back after each page
    function_app.backfills.override(svc)
    try:
        function_app.backfill_submit(
            post({"platform": "servicenow", "since": "2024-01-01", "until": "2024-01-02"})
        )
        [message] = svc.queue.messages

        def down(message: str, *, delay_s: float = 0) -> None:
            raise UnavailableError("queue down", system="storage")

        svc.queue.send = down  # the window cannot be re-queued: the host must retry it
        with pytest.raises(UnavailableError):
            function_app.backfill_worker(func.QueueMessage(id="1", body=message.encode()))
    finally:
        function_app.backfills.override(None)


def test_the_timer_is_indexed_only_with_a_valid_schedule():
    assert backfill.schedule_blueprint("") is None
    assert backfill.schedule_blueprint("   ") is None
    assert backfill.schedule_blueprint("0 2 * * *") is None  # five fields: logged, not indexed
    app = func.FunctionApp()
    for blueprint in backfill.blueprints({"ENRICH_BACKFILL__SCHEDULE": "0 0 2 * * *"}):
        app.register_functions(blueprint)
    functions = {f.get_function_name(): f for f in app.get_functions()}
    assert set(functions) == {"backfill_worker", "backfill_submit", "backfill_status",
                              "backfill_schedule"}  # fmt: skip
    [timer] = functions["backfill_schedule"].get_bindings()
    assert timer.type == "timerTrigger" and timer.schedule == "%ENRICH_BACKFILL__SCHEDULE%"
    assert [b for b in backfill.blueprints({})] == [backfill.bp]


def test_a_timer_firing_twice_in_one_minute_starts_one_run():
    updated = {sys_id(i): record(i, NOW - timedelta(hours=i)) for i in (1, 2, 3)}
    updated[sys_id(9)] = record(9, NOW - timedelta(hours=30))  # before the lookback
    cfg = settings().model_copy(update={"backfill": BackfillSettings(schedule="0 0 2 * * *")})
    svc, conn = kit(connector=BatchFake(updated), settings_=cfg)
    moments = iter([NOW, NOW + timedelta(seconds=20)])
    svc.now = lambda: next(moments)
    function_app.backfills.override(svc)
    try:
        backfill.backfill_schedule(TimerRequest(past_due=False))
        backfill.backfill_schedule(TimerRequest(past_due=True))
    finally:
        function_app.backfills.override(None)
    run_id = scheduled_run_id(NOW, "servicenow")
    assert run_id == "nightly-20240301-1200-sn"
    jobs = {WindowJob.model_validate_json(m).run_id for m in svc.queue.messages}
    assert jobs == {run_id}  # both firings asked for the same run
    for message in list(svc.queue.messages):
        svc.process(message)
    status = svc.status(run_id)
    assert status.state == "done" and status.windows == 1
    assert (status.counts.scanned, status.counts.filled) == (3, 3)  # each ticket once
    assert sorted(r for r, _ in conn.updates) == [sys_id(i) for i in (1, 2, 3)]
    assert status.spec["by"] == "updated" and status.spec["origin"] == "timer"
    assert status.spec["since"].startswith("2024-02-29T12:00:00")


def test_broken_backfill_settings_do_not_stop_the_live_settings(monkeypatch):
    from domain.settings import load_settings

    monkeypatch.setenv("ENRICH_BACKFILL__SHARE", "1.5")
    monkeypatch.setenv("ENRICH_BACKFILL__SCHEDULE", "0 2 * * *")
    assert load_settings(backfill=False).backfill == BackfillSettings()  # what the live one reads
    with pytest.raises(ConfigError, match="ENRICH_BACKFILL__SHARE") as caught:
        load_settings()
    assert "1.5" not in str(caught.value)
    monkeypatch.delenv("ENRICH_BACKFILL__SHARE")
    with pytest.raises(ConfigError, match="ENRICH_BACKFILL: Value error, schedule must have 6"):
        load_settings()
    monkeypatch.setenv("ENRICH_BACKFILL__SCHEDULE", "0 */5 1-6 * Jan,Jul Mon-Fri")
    assert load_settings().backfill.schedule == "0 */5 1-6 * Jan,Jul Mon-Fri"


def test_built_from_settings_without_storage_the_cli_keeps_checkpoints_in_a_file(
    monkeypatch, tmp_path
):
    from connectors.backfill_stores import FileCheckpointStore
    from triage.backfill.service import build_backfill_service

    monkeypatch.setenv("ENRICH_SERVICENOW__INSTANCE_URL", "https://x.service-now.com")
    monkeypatch.setenv("ENRICH_SERVICENOW__AUTH", "basic")
    monkeypatch.setenv("ENRICH_SERVICENOW__USERNAME", "u")
    monkeypatch.setenv("ENRICH_SERVICENOW__PASSWORD", "p")
    env = {"ENRICH_SERVICENOW__INSTANCE_URL": "https://x.service-now.com"}
    with pytest.raises(ConfigError, match="this needs Storage: set AzureWebJobsStorage"):
        build_backfill_service(env, require_storage=True)
    svc = build_backfill_service(env, state_path=str(tmp_path / "s.json"))
    assert isinstance(svc.store, FileCheckpointStore) and svc.queue is None
    assert svc.systems() == ("servicenow",)
    runner = svc.runners("servicenow")
    assert runner is not None and runner.lease_s == 600.0 and svc.runners("dataverse") is None
    assert runner.pipeline.mapping.system == "servicenow"
