"""The weekly learning loop against the simulator: pull closed, human-labelled incidents through
the connector (paged), train, then let the trained model fill a new ticket end to end."""

from __future__ import annotations

from domain.mapping import load_mapping
from tests.integration.conftest import INTEGRATION_USER, build_slice, installed
from tests.learn import make_tickets
from triage.cli import build_parser
from triage.learn.cli import run_train
from triage.model_store import load_model

MAPPING = load_mapping()


def seed(sim, rows, *, state: str, user: str = "agent.k") -> None:  # type: ignore[no-untyped-def]
    for row in rows:
        sim.add_record(
            "incident",
            {
                "short_description": row["title"],
                "description": row["body"],
                "category": MAPPING.to_raw("category", row["category"]),
                "state": state,
            },
            user=user,
        )


def test_train_from_servicenow_then_fill_a_new_ticket(sim, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    seed(sim, make_tickets(360, seed=1, vague=0.0, label_noise=0.0), state="7")
    seed(sim, make_tickets(40, seed=2, vague=0.0), state="1")  # open: not training data
    machine = make_tickets(30, seed=3, vague=0.0)
    for row in machine:  # closed, but last updated by us: our own guesses, not human labels
        row["category"] = "database"
    seed(sim, machine, state="7", user=INTEGRATION_USER)

    app = build_slice(sim, clock)
    connector = app.service.pipeline.connector
    settings = app.service.settings
    args = build_parser().parse_args(
        ["train", "--from", "servicenow", "--label", "category=category", "--out", str(tmp_path)]
    )
    assert run_train(args, connector_factory=lambda: (connector, settings)) == 0

    model = load_model(str(tmp_path))
    info = model.metadata["fields"]["category"]
    assert info["n_train"] == 360
    assert set(info["labels"]) == {"network", "hardware", "account_access", "software"}
    pages = [r for r in sim.request_log if r.method == "GET" and r.path.endswith("/incident")]
    # 390 closed records, 100 a page (the connector's page size), stable order, offset paging
    assert [r.query["sysparm_offset"] for r in pages] == ["0", "100", "200", "300"]
    assert all("ORDERBYsys_id" in r.query["sysparm_query"] for r in pages)
    assert all(r.query["sysparm_query"].startswith("stateIN6,7") for r in pages)

    # The trained model now fills a new ticket through the normal webhook → worker path.
    from enrichers import default_enrichers

    app.service.pipeline.enrichers = default_enrichers(MAPPING, model=model)
    with installed(app):
        sys_id = sim.add_record(
            "incident",
            {"short_description": "", "description": "hej tunnel anslutning verbindung remote tak"},
            user="anna.b",
        )
        app.webhook(sys_id)
        app.drain()
    rec = sim.get_record("incident", sys_id)
    assert rec["category"] == "network"
    note = sim.journal(sys_id, "work_notes")[0]["value"]
    assert "model:" in note
