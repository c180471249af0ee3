"""``mappings pull`` and ``mappings validate --against`` against both simulators: the skeleton
pulled from the live choice lists validates against the same platform, a value that is missing
or inactive there is named, and each choice list is read once."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors._msal import MsalTokenProvider
from connectors.dataverse import DataverseConnector
from domain.mapping import load_mapping
from domain.settings import DataverseSettings, HttpSettings
from tests.integration.conftest import CLIENT as SN_CLIENT
from tests.simulators import FakeClock
from tests.simulators.dataverse import DataverseSimulator
from tests.simulators.dataverse_testkit import tls_session
from tests.simulators.servicenow import ServiceNowSimulator
from triage.cli import build_parser

DV_CLIENT = ("enricher-app", "enricher-app-secret-0123456789")
SUBJECTS = {  # the retail desk's Subject tree, as people see it
    "Returnering": ["Returnering af produkt", "Tilbagebetaling"],
    "Levering": ["Hvor er min pakke", "Forsinket levering"],
    "Delivery": ["Delivery status"],  # English titles match the taxonomy's names
}


def run(argv: list[str], **kwargs: Any) -> tuple[int, str]:
    args = build_parser().parse_args(["mappings", *argv])
    out = io.StringIO()
    code: int = args.handler(args, out=out, **kwargs)
    return code, out.getvalue()


@pytest.fixture
def sn_env(sim: ServiceNowSimulator, monkeypatch: pytest.MonkeyPatch) -> ServiceNowSimulator:
    """Settings for the connector ``mappings`` builds itself (``ENRICH_*``)."""
    for key, value in {
        "ENRICH_SERVICENOW__INSTANCE_URL": sim.url,
        "ENRICH_SERVICENOW__AUTH": "oauth",
        "ENRICH_SERVICENOW__CLIENT_ID": SN_CLIENT[0],
        "ENRICH_SERVICENOW__CLIENT_SECRET": SN_CLIENT[1],
    }.items():
        monkeypatch.setenv(key, value)
    return sim


def choice_reads(sim: ServiceNowSimulator) -> int:
    return sum(1 for r in sim.request_log if r.path.endswith("/sys_choice"))


def test_servicenow_pull_then_validate_against_the_instance(
    sn_env: ServiceNowSimulator, tmp_path: Path
) -> None:
    out = tmp_path / "sn.yaml"
    code, said = run(["pull", "--platform", "servicenow", "--out", str(out)])
    assert code == 0 and "wrote" in said
    m = load_mapping(out)
    assert m.values["category"]["request"] == "request"
    assert m.values["subcategory"]["ms_sql_server"] == "sql server"  # label "MS SQL Server"
    assert m.subcategory_parent["password_reset"] == "request"
    assert m.values["impact"] == {"high": "1", "medium": "2", "low": "3"}
    assert "# Password Reset (under request)" in out.read_text(encoding="utf-8")

    before = choice_reads(sn_env)
    code, said = run(["validate", str(out), "--against", "servicenow"])
    assert code == 0, said
    assert said.endswith("checked the schema and the live servicenow choices)\n")
    assert choice_reads(sn_env) == before + 1  # one read for every list and value

    # An admin deactivates a choice and moves another to a different category.
    sn_env.set_choices("incident", "category", {"request": "Request", "inquiry": "Inquiry / Help",
        "software": "Software", "hardware": "Hardware", "network": "Network"})  # fmt: skip
    rows = [{"value": "vpn", "label": "VPN", "dependent_value": "hardware"},
            {"value": "db2", "label": "DB2", "dependent_value": "database", "inactive": "true"}]  # fmt: skip
    sn_env.set_choices("incident", "subcategory", rows)
    code, said = run(["validate", str(out), "--against", "servicenow"])
    lines = said.splitlines()
    assert code == 1
    assert (
        f"{out}: values.category.database: 'database' is not an active choice of incident.category"
        in lines
    )
    assert (
        f"{out}: values.subcategory.db2: 'db2' is not an active choice of incident.subcategory"
        in lines
    )
    assert (f"{out}: values.subcategory.vpn: 'vpn' is not a choice of incident.subcategory under "
            "category 'network' (it is under hardware)") in lines  # fmt: skip
    assert lines[-1].startswith(f"{out}: INVALID against servicenow, ")


def test_servicenow_customer_service_desk_pull_with_taxonomy(
    sn_env: ServiceNowSimulator, tmp_path: Path
) -> None:
    sn_env.set_choices("incident", "category", {"returns": "Returns", "delivery": "Delivery",
                                                "facilities": "Facilities"})  # fmt: skip
    sn_env.set_choices("incident", "subcategory", [
        {"value": "return product", "label": "Return of a product", "dependent_value": "returns"},
        {"value": "refund", "label": "Refund", "dependent_value": "returns"},
        {"value": "late delivery", "label": "Late delivery", "dependent_value": "delivery"},
    ])  # fmt: skip
    out = tmp_path / "cs.yaml"
    assert run(["pull", "--platform", "servicenow", "--taxonomy", "customer_service",
                "--out", str(out)])[0] == 0  # fmt: skip
    m = load_mapping(out)
    assert m.taxonomy == "customer_service"
    assert m.values["category"] == {"returns": "returns", "delivery": "delivery"}
    assert m.values["subcategory"] == {"return_product": "return product", "refund": "refund",
                                       "delivery_delay": "late delivery"}  # fmt: skip
    assert "returnering*" in m.keywords["subcategory"]["return_product"]
    assert "# facilities" in out.read_text(encoding="utf-8")
    code, said = run(["validate", str(out), "--against", "servicenow"])
    assert code == 0, said


@pytest.fixture
def dv() -> Iterator[DataverseSimulator]:
    clock = FakeClock(start=1_800_000_000.0)
    with DataverseSimulator(clients={DV_CLIENT[0]: DV_CLIENT[1]}, clock=clock) as simulator:
        simulator.tokens.resource = simulator.url
        yield simulator


def dv_factory(sim: DataverseSimulator) -> Any:
    def factory(platform: str) -> DataverseConnector:
        assert platform == "dynamics"
        settings = DataverseSettings(org_url=sim.url, tenant_id=sim.tenant, client_id=DV_CLIENT[0],
                                     client_secret=DV_CLIENT[1], authority_host=sim.url)  # fmt: skip
        session = tls_session(sim)
        tokens = MsalTokenProvider(settings, http_client=session, validate_authority=False)
        http = HttpSettings(read_timeout_s=5.0, backoff_initial_s=0.1, backoff_max_s=1.0)
        return DataverseConnector(settings, http, field_types={}, token_provider=tokens,
                                  session=session)  # fmt: skip

    return factory


def seed_subjects(sim: DataverseSimulator) -> dict[str, str]:
    ids = {}
    for top, children in SUBJECTS.items():
        ids[top] = sim.add_subject(top)
        for child in children:
            ids[child] = sim.add_subject(child, parent=ids[top])
    return ids


def test_dynamics_pull_then_validate_against_the_org(
    dv: DataverseSimulator, tmp_path: Path
) -> None:
    ids = seed_subjects(dv)
    out = tmp_path / "dv.yaml"
    code, _ = run(
        ["pull", "--platform", "dynamics", "--out", str(out)], connector_factory=dv_factory(dv)
    )
    assert code == 0
    text = out.read_text(encoding="utf-8")
    assert f'returnering_af_produkt: "{ids["Returnering af produkt"]}"' in text
    assert "# Returnering af produkt   [Returnering > Returnering af produkt]" in text
    m = load_mapping(out)
    assert m.values["priority"] == {"high": "1", "normal": "2", "low": "3"}
    assert m.values["case_type"] == {"question": "1", "problem": "2", "request": "3"}
    assert m.subcategory_parent["tilbagebetaling"] == "returnering"
    assert m.column_types()["_subjectid_value"] == "lookup:subjects"

    code, said = run(
        ["validate", str(out), "--against", "dynamics"], connector_factory=dv_factory(dv)
    )
    assert code == 0, said
    metadata = [r for r in dv.request_log if "EntityDefinitions" in r.path]
    subjects = [r for r in dv.request_log if r.path.endswith("/subjects")]
    assert len(metadata) == 2 and len(subjects) == 2  # one each for pull, one each for validate


def test_dynamics_customer_service_binding_checked_against_the_org(
    dv: DataverseSimulator, tmp_path: Path
) -> None:
    ids = seed_subjects(dv)
    pulled = tmp_path / "pulled.yaml"
    run(["pull", "--platform", "dynamics", "--taxonomy", "customer_service", "--out", str(pulled)],
        connector_factory=dv_factory(dv))  # fmt: skip
    m = load_mapping(pulled)
    assert m.values["category"] == {"delivery": ids["Delivery"]}  # matched by name
    assert m.values["subcategory"] == {"delivery_status": ids["Delivery status"]}
    assert m.values["priority"] == {"high": "1", "normal": "2", "low": "3"}

    # The admin binds the Danish subjects by hand (the one-taxonomy, small-binding file).
    binding = {
        "system": "dataverse", "taxonomy": "customer_service",
        "fields": {"title": "title", "description": "description", "category": "_subjectid_value",
                   "subcategory": "_subjectid_value", "priority": "prioritycode"},
        "values": {"category": {"returns": ids["Returnering"], "delivery": ids["Levering"]},
                   "subcategory": {"return_product": ids["Returnering af produkt"],
                                   "refund": ids["Hvor er min pakke"],  # under Levering: wrong
                                   "delivery_delay": "0badc0de-0000-4000-8000-000000000000"},
                   "priority": {"high": "1", "normal": "2", "low": "4"}},
        "write_back": {"priority": True},
    }  # fmt: skip
    path = tmp_path / "cs.dynamics.yaml"
    path.write_text(yaml.safe_dump(binding), encoding="utf-8")
    code, said = run(
        ["validate", str(path), "--against", "dynamics"], connector_factory=dv_factory(dv)
    )
    assert code == 1
    lines = said.splitlines()
    assert lines[-1] == f"{path}: INVALID against dynamics, 3 problem(s)"
    assert sorted(lines[:-1]) == [
        f"{path}: values.priority.low: '4' is not an option of incident.prioritycode",
        f"{path}: values.subcategory.delivery_delay: '0badc0de-0000-4000-8000-000000000000' is not "
        "a subject of the Subject tree (_subjectid_value)",
        f"{path}: values.subcategory.refund: '{ids['Hvor er min pakke']}' is not under category "
        f"returns's subject '{ids['Returnering']}'",
    ]
