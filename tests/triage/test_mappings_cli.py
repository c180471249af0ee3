"""``mappings validate | pull | schema`` without a platform: messages name file, key path and
value; live checks make one read per choice list; skeletons validate as written."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml

from domain.mapping import load_mapping
from domain.taxonomy import TAXONOMY_DIR
from triage.cli import build_parser
from triage.mappings_cli import check_against, schema_text

ROOT = Path(__file__).resolve().parents[2]
CS_DV = TAXONOMY_DIR / "examples" / "customer_service.dynamics.yaml"


def run(argv: list[str], **kwargs: Any) -> tuple[int, str]:
    args = build_parser().parse_args(["mappings", *argv])
    out = io.StringIO()
    code: int = args.handler(args, out=out, **kwargs)
    return code, out.getvalue()


class FakeServiceNow:
    """``list_choices`` over fixed sys_choice rows, counting calls."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self.rows, self.calls = rows, 0

    def list_choices(self, table: str, elements: list[str]) -> list[dict[str, str]]:
        self.calls += 1
        return [r for r in self.rows if r["element"] in elements]


class FakeDataverse:
    def __init__(self, options: dict[str, dict[str, str]], subjects: list[dict[str, str]]) -> None:
        self.options, self.subjects, self.calls = options, subjects, 0

    def list_choices(self, columns: list[str], *, table: str = "incident") -> list[dict[str, str]]:
        self.calls += 1
        return [
            {"element": c, "value": v, "label": lbl}
            for c in columns
            for v, lbl in self.options.get(c, {}).items()
        ]

    def list_subjects(self) -> list[dict[str, str]]:
        self.calls += 1
        return self.subjects


def choice(element: str, value: str, label: str = "", parent: str = "") -> dict[str, str]:
    return {"element": element, "value": value, "label": label or value, "dependent_value": parent}


def test_committed_schema_is_fresh() -> None:
    committed = (ROOT / "docs" / "mapping.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), (
        "run: python -m triage mappings schema --out docs/mapping.schema.json"
    )


def test_schema_describes_mapping_and_taxonomy_files(tmp_path: Path) -> None:
    code, _ = run(["schema", "--out", str(tmp_path / "s.json")])
    schema = yaml.safe_load((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert code == 0
    props = schema["$defs"]["FieldMapping"]["properties"]
    assert {"taxonomy", "values", "keywords", "modes", "names", "descriptions"} <= set(props)
    assert "subcategories" in schema["$defs"]["CategoryLabel"]["properties"]


def test_validate_invalid_file_names_file_key_path_and_value(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    data = yaml.safe_load(CS_DV.read_text(encoding="utf-8"))
    data["values"]["category"]["retrns"] = "abc"
    data["min_confidence"]["impact"] = 1.5
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    code, out = run(["validate", str(path)])
    lines = out.splitlines()
    assert code == 1
    assert lines[0].startswith(f"{path}: values.category.retrns: 'retrns' is not a label")
    assert lines[-1] == f"{path}: INVALID, 1 problem(s)"
    del data["values"]["category"]["retrns"]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    code, out = run(["validate", str(path)])
    assert code == 1 and "min_confidence.impact: 1.5 is not within 0..1" in out


def test_validate_valid_file_says_what_it_checked() -> None:
    code, out = run(["validate", str(CS_DV)])
    assert code == 0
    assert (
        out
        == f"{CS_DV}: valid (dataverse, 17 values bound, taxonomy customer_service; checked the schema)\n"
    )


def test_against_servicenow_one_read_and_dependent_values() -> None:
    mapping = load_mapping()  # the default ServiceNow mapping
    rows = [choice("category", v) for v in mapping.values["category"].values() if v != "database"]
    rows += [choice("subcategory", raw, parent=mapping.to_raw("category", mapping.subcategory_parent[label]) or "")
             for label, raw in mapping.values["subcategory"].items() if raw != "vpn"]  # fmt: skip
    rows += [choice("subcategory", "vpn", parent="hardware")]  # under the wrong category
    rows += [choice(e, v) for e in ("impact", "urgency") for v in "12"]  # "3" missing
    rows += [choice("priority", v) for v in "12345"]
    fake = FakeServiceNow(rows)
    problems = check_against(mapping, fake, "m.yaml")
    assert fake.calls == 1
    assert (
        "m.yaml: values.category.database: 'database' is not an active choice of incident.category"
        in problems
    )
    assert ("m.yaml: values.subcategory.vpn: 'vpn' is not a choice of incident.subcategory under "
            "category 'network' (it is under hardware)") in problems  # fmt: skip
    assert "m.yaml: values.impact.low: '3' is not an active choice of incident.impact" in problems
    assert "m.yaml: unset.urgency[0]: '3' is not an active choice of incident.urgency" in problems
    # db2, sql server, oracle are fine under the missing category: only the category is named
    assert len(problems) == 6  # database, vpn, impact.low, urgency.low, unset.impact, unset.urgency


def test_against_dynamics_options_and_subject_tree() -> None:
    mapping = load_mapping(CS_DV)
    ids = {label: raw for table in mapping.values.values() for label, raw in table.items()}
    subjects = [
        {"subjectid": ids["returns"], "title": "Returnering", "_parentsubject_value": ""},
        {"subjectid": ids["return_product"], "title": "Returnering af produkt",
         "_parentsubject_value": ids["returns"]},
        {"subjectid": ids["refund"], "title": "Tilbagebetaling", "_parentsubject_value": ids["delivery"]},
        {"subjectid": ids["delivery"], "title": "Levering", "_parentsubject_value": ""},
    ]  # fmt: skip
    options = {"prioritycode": {"1": "High", "2": "Normal", "3": "Low"},
               "casetypecode": {"1": "Question", "2": "Problem"}}  # fmt: skip
    fake = FakeDataverse(options, subjects)
    problems = check_against(mapping, fake, "d.yaml")
    assert fake.calls == 2  # one metadata read, one subject tree read
    assert problems == [
        "d.yaml: values.case_type.request: '3' is not an option of incident.casetypecode",
        f"d.yaml: values.subcategory.refund: {ids['refund']!r} is not under category returns's "
        f"subject {ids['returns']!r}",
        f"d.yaml: values.subcategory.delivery_status: {ids['delivery_status']!r} is not a subject "
        "of the Subject tree (_subjectid_value)",
    ]


def test_validate_against_the_wrong_platform_fails_before_any_read() -> None:
    def factory(platform: str) -> Any:
        raise AssertionError("no connector for a mapping of the wrong system")

    code, out = run(["validate", str(CS_DV), "--against", "servicenow"], connector_factory=factory)
    assert code == 1 and "system: 'dataverse' is not 'servicenow'" in out


def test_pull_servicenow_skeleton_without_taxonomy_loads_with_parents(tmp_path: Path) -> None:
    rows = [choice("category", "request", "Request"), choice("category", "network", "Network"),
            choice("subcategory", "password reset", "Password Reset", "request"),
            choice("subcategory", "vpn", "VPN", "network"),
            choice("impact", "1", "1 - High"), choice("impact", "2", "2 - Medium")]  # fmt: skip
    out_file = tmp_path / "sn.yaml"
    code, _ = run(["pull", "--platform", "servicenow", "--out", str(out_file)],
                  connector_factory=lambda p: FakeServiceNow(rows))  # fmt: skip
    assert code == 0
    text = out_file.read_text(encoding="utf-8")
    assert '    password_reset: "password reset"   # Password Reset (under request)' in text
    m = load_mapping(out_file)
    assert m.values["impact"] == {"high": "1", "medium": "2"}
    assert m.subcategory_parent == {"password_reset": "request", "vpn": "network"}


def test_pull_with_taxonomy_binds_matches_and_comments_the_rest(tmp_path: Path) -> None:
    rows = [choice("category", "network", "Network"), choice("category", "facilities", "Facilities"),
            choice("subcategory", "vpn", "VPN", "network"), choice("urgency", "1", "1 - High")]  # fmt: skip
    out_file = tmp_path / "sn.yaml"
    run(["pull", "--platform", "servicenow", "--taxonomy", "it_service_desk", "--out", str(out_file)],
        connector_factory=lambda p: FakeServiceNow(rows))  # fmt: skip
    text = out_file.read_text(encoding="utf-8")
    assert (
        '    # facilities: "facilities"   # Facilities (no label of it_service_desk matches)'
        in text
    )
    m = load_mapping(out_file)
    assert m.taxonomy == "it_service_desk"
    assert m.values == {"category": {"network": "network"}, "subcategory": {"vpn": "vpn"},
                        "urgency": {"high": "1"}}  # fmt: skip
    assert m.subcategory_parent == {"vpn": "network"} and "vpn*" in m.keywords["subcategory"]["vpn"]
