"""The learning loop on Dynamics 365, against the Dataverse simulator over HTTPS with msal: pull
resolved, human-labelled cases through the connector (paged, skipping our application user's),
train, then let the trained model fill a new case through the pipeline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from connectors.dataverse import DataverseConnector
from connectors.state import MemoryClaimStore
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, FieldMapping, load_mapping
from domain.settings import DataverseSettings, Settings
from enrichers import default_enrichers
from tests.learn import make_tickets
from tests.simulators import FakeClock
from tests.simulators.dataverse import PERSON, DataverseSimulator
from tests.simulators.dataverse_testkit import simulator_connector, tls_session
from triage.cli import build_parser
from triage.learn.cli import run_train
from triage.model_store import load_model
from triage.pipeline import Pipeline

CLIENT = ("enricher-app", "enricher-app-secret-0123456789")
CATEGORIES = ("network", "hardware", "software", "account_access")
PAGE = 100


@pytest.fixture
def sim() -> Iterator[DataverseSimulator]:
    clock = FakeClock(start=1_800_000_000.0)
    with DataverseSimulator(clients={CLIENT[0]: CLIENT[1]}, clock=clock) as simulator:
        simulator.tokens.resource = simulator.url  # the environment lives at its loopback URL
        yield simulator


def mapping_file(tmp_path: Path, subjects: dict[str, str]) -> Path:
    """The default Dynamics mapping, category on the Subject tree with the org's GUIDs."""
    data = yaml.safe_load(DYNAMICS_DEFAULT_MAPPING_PATH.read_text(encoding="utf-8"))
    data["fields"]["category"] = "_subjectid_value"
    data["values"]["category"] = {c: subjects[c] for c in CATEGORIES}
    path = tmp_path / "dynamics.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def connect(
    sim: DataverseSimulator, mapping: FieldMapping, session: requests.Session
) -> tuple[DataverseConnector, DataverseSettings]:
    connector, settings = simulator_connector(
        sim, CLIENT[0], CLIENT[1], mapping.column_types(), session=session, page_size=PAGE
    )
    return connector, settings


def seed(
    sim: DataverseSimulator,
    rows: list[dict[str, str]],
    subjects: dict[str, str],
    extra: dict[str, Any],
    *,
    user: str = PERSON,
) -> list[str]:
    """One case per row, its subject from the row's category, last modified by ``user``."""
    return [
        sim.add_case(
            {
                "title": row["title"],
                "description": row["body"],
                "_subjectid_value": subjects[row["category"]],
                **extra,
            },
            user=user,
        )
        for row in rows
    ]


def test_train_from_dynamics_then_fill_a_new_case(sim: DataverseSimulator, tmp_path: Path) -> None:
    subjects = {name: sim.add_subject(name) for name in (*CATEGORIES, "database")}
    resolved = {"statecode": 1, "statuscode": 5}
    humans = make_tickets(300, seed=1, vague=0.0, label_noise=0.0)
    seed(sim, humans, subjects, resolved)
    seed(sim, make_tickets(40, seed=2, vague=0.0), subjects, {})  # active: not training data
    ours = make_tickets(30, seed=3, vague=0.0)
    for row in ours:  # resolved, but last modified by us: our own guesses, not an agent's
        row["category"] = "database"
    seed(sim, ours, subjects, resolved, user=sim.user_id(CLIENT[0]))
    # Cases created from an e-mail: empty description, the text is in their first e-mail.
    mailed = make_tickets(12, seed=4, vague=0.0, label_noise=0.0)
    for row in mailed:
        case_id = sim.add_case(
            {"title": row["title"], "description": "",
             "_subjectid_value": subjects[row["category"]], **resolved},
        )  # fmt: skip
        sim.add_email(case_id, f"<html><body><p>{row['body']}</p></body></html>")

    path = mapping_file(tmp_path, subjects)
    mapping = load_mapping(path)
    session = tls_session(sim)  # trusts the simulator's certificate, not the environment
    connector, dv = connect(sim, mapping, session)
    settings = Settings(dataverse=dv, dataverse_mapping_path=str(path))
    args = build_parser().parse_args(
        ["train", "--from", "dynamics", "--filter", "prioritycode ne 1 or prioritycode eq null",
         "--label", "category=_subjectid_value", "--out", str(tmp_path / "model")]
    )  # fmt: skip
    try:
        assert run_train(args, connector_factory=lambda: (connector, settings)) == 0

        model = load_model(str(tmp_path / "model"))
        info = model.metadata["fields"]["category"]
        assert info["n_train"] == 312  # 300 + 12 e-mail cases; not active, not ours
        assert set(info["labels"]) == set(CATEGORIES)  # subject GUIDs → canonical; no "database"
        pages = [r for r in sim.request_log if r.method == "GET" and r.path.endswith("/incidents")]
        # 342 resolved cases, 100 a page, by the opaque next links (never $skip)
        assert len(pages) == 4 and all(r.status == 200 for r in pages)
        assert {r.query["$filter"] for r in pages} == {
            "statecode eq 1 and (prioritycode ne 1 or prioritycode eq null)"
        }
        skips = [re.search(r'pagenumber="(\d+)"', r.query.get("$skiptoken", "")) for r in pages]
        assert [m[1] if m else None for m in skips] == [None, "100", "200", "300"]
        assert sum(r.path.endswith("/WhoAmI") for r in sim.request_log) == 1
        assert sum(r.path.endswith("/emails") for r in sim.request_log) == len(mailed)

        # The trained model now fills a new case: its subject is written as a lookup.
        pipeline = Pipeline(
            connector, mapping, default_enrichers(mapping, model=model), claims=MemoryClaimStore()
        )
        case_id = sim.add_case(
            {"title": "", "description": "hej tunnel anslutning verbindung remote tak"}
        )
        result = pipeline.enrich_record("incident", case_id)
        assert result.status == "written", result
        case = sim.get_case(case_id)
        assert case is not None and case["_subjectid_value"] == subjects["network"]
        [note] = sim.annotations(case_id)
        assert "model:" in str(note["notetext"])
    finally:
        session.close()
