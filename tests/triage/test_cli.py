import csv
import json
import re
from pathlib import Path

import pytest

from triage.cli import main, read_tickets

ROOT = Path(__file__).resolve().parents[2]

EMAIL = (
    "Hej,\n\nVPN virker ikke på min bærbare, jeg kan ikke komme på netværket hjemmefra.\n\n"
    "Med venlig hilsen\nPeter Hansen\nButik 12"
)


def write_csv(path, rows, header=("short_description", "description")):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_jsonl_output_has_row_and_value_confidence_reason_per_field(tmp_path, capsys):
    data = write_csv(tmp_path / "t.csv", [("", EMAIL), ("Printer jam in store 4", "")])
    assert main(["enrich", str(data), "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["row"] for r in rows] == [1, 2]
    summary = rows[0]["summary"]
    assert set(summary) >= {"value", "confidence", "reason"}
    assert "VPN" in summary["value"]
    assert "Hej" not in summary["value"]
    assert "Peter" not in summary["value"]
    assert len(summary["value"]) <= 160
    assert summary["would_write"] is True
    assert rows[0]["category"]["value"] == "network"
    assert rows[1]["summary"]["would_write"] is False  # the row has a title already


def test_every_description_only_example_row_gets_a_summary(capsys):
    assert main(["enrich", str(ROOT / "examples" / "tickets.csv"), "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) >= 30
    with (ROOT / "examples" / "tickets.csv").open(encoding="utf-8", newline="") as handle:
        untitled = [
            i for i, r in enumerate(csv.DictReader(handle), 1) if not r["short_description"]
        ]
    assert untitled
    for row in rows:
        if row["row"] in untitled:
            assert 0 < len(row["summary"]["value"]) <= 160


def test_table_output_is_readable(tmp_path, capsys):
    data = write_csv(tmp_path / "t.csv", [("", EMAIL)])
    assert main(["enrich", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "row", "category", "subcategory", "impact", "urgency", "priority", "summary",
    ]  # fmt: skip
    assert "network" in out


def test_jsonl_input_with_title_and_body_columns(tmp_path, capsys):
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps({"title": "", "body": EMAIL}) + "\n\n", encoding="utf-8")
    assert main(["enrich", str(data), "--format", "jsonl"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["category"]["value"] == "network"


def test_read_tickets_marks_file_values_as_set(tmp_path):
    data = write_csv(
        tmp_path / "t.csv", [("VPN down", "x", "hardware")],
        header=("title", "description", "category"),
    )  # fmt: skip
    [ticket] = read_tickets(data)
    assert ticket.current["category"] == "hardware"
    assert ticket.current["summary"] == "VPN down"


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("foo,bar\n1,2\n", "t.csv", "no text column"),
        ('{"title": "x"}\nnot json\n', "t.jsonl", "t.jsonl:2: not valid JSON"),
        ("[1, 2]\n", "t.jsonl", "JSON object"),
    ],
)
def test_bad_input_files_exit_2_with_a_clear_message(tmp_path, capsys, content, name, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert main(["enrich", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_missing_file_and_bad_mapping_exit_2(tmp_path, capsys):
    assert main(["enrich", str(tmp_path / "none.csv")]) == 2
    bad = tmp_path / "m.yaml"
    bad.write_text("version: 1\nfields: {title: t}\n")
    data = write_csv(tmp_path / "t.csv", [("a", "b")])
    assert main(["enrich", str(data), "--mapping", str(bad)]) == 2
    assert "fields.description" in capsys.readouterr().err


# --- Dynamics 365 exports: Dataverse column names, raw values --------------------------------

OUTAGE = "Hej, kasserne virker ikke i alle butikker siden i morges. Det haster!"
DYNAMICS_HEADER = ("ticketnumber", "title", "description", "prioritycode", "_subjectid_value")
NETWORK_SUBJECT = "5e000000-0000-4000-8000-000000000001"


def test_a_dynamics_csv_export_is_read_with_the_dynamics_mapping(tmp_path, capsys):
    data = write_csv(
        tmp_path / "cases.csv",
        [
            ("CAS-01001-A1B2", "Kasser nede i alle butikker", OUTAGE, "", ""),
            ("CAS-01002-C3D4", "Kasser nede i alle butikker", OUTAGE, "2", ""),  # Normal: unset
            ("CAS-01003-E5F6", "Kasser nede i alle butikker", OUTAGE, "3", ""),  # an agent's Low
        ],
        header=DYNAMICS_HEADER,
    )
    assert main(["enrich", str(data), "--platform", "dynamics", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["row"] for r in rows] == [1, 2, 3]
    assert {r["priority"]["value"] for r in rows} == {"critical"}
    # Dynamics does not derive priority: we write it, unless an agent chose one.
    assert [r["priority"]["would_write"] for r in rows] == [True, True, False]
    # A Case has no impact/urgency column out of the box, and the default names no summary one.
    assert not any(r[f]["would_write"] for r in rows for f in ("impact", "urgency", "summary"))


def test_a_web_api_jsonl_export_with_ints_nulls_and_annotations(tmp_path, capsys):
    from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH

    rows = [
        {"@odata.etag": 'W/"1"', "title": "Kasser nede i alle butikker", "description": OUTAGE,
         "prioritycode": None, "prioritycode@OData.Community.Display.V1.FormattedValue": ""},
        {"@odata.etag": 'W/"2"', "title": "Kasser nede", "description": OUTAGE, "prioritycode": 1},
    ]  # fmt: skip
    data = tmp_path / "cases.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    argv = ["enrich", str(data), "--mapping", str(DYNAMICS_DEFAULT_MAPPING_PATH)]
    assert main([*argv, "--format", "jsonl"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["priority"]["would_write"] for r in out] == [True, False]  # 1 (High) is set
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert re.search(r"\bcritical \d", table) and re.search(r"\bcritical\? \d", table)
    assert "a Case has none out of the box" in table and "ServiceNow computes" not in table


def test_read_tickets_maps_raw_dynamics_values_like_the_pipeline(tmp_path):
    import yaml

    from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, load_mapping

    config = yaml.safe_load(DYNAMICS_DEFAULT_MAPPING_PATH.read_text(encoding="utf-8"))
    config["fields"]["category"] = "_subjectid_value"
    config["values"]["category"] = {"network": NETWORK_SUBJECT}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    data = write_csv(
        tmp_path / "cases.csv",
        [("CAS-1", "VPN down", "x", "3", NETWORK_SUBJECT), ("CAS-2", "", "y", "2", "")],
        header=DYNAMICS_HEADER,
    )
    first, second = read_tickets(data, load_mapping(path))
    assert (first.system, first.number, first.title) == ("dataverse", "CAS-1", "VPN down")
    assert first.current == {"category": "network", "priority": "planning"}  # raw → canonical
    assert second.current == {"category": None, "priority": None}  # empty and Normal: unset


def test_dynamics_exports_need_their_text_columns_and_mapping(tmp_path, capsys):
    from domain.mapping import DEFAULT_MAPPING_PATH

    no_text = write_csv(tmp_path / "a.csv", [("CAS-1", "2")], header=("ticketnumber", "x"))
    assert main(["enrich", str(no_text), "--platform", "dynamics"]) == 2
    assert "expected one of: title, description" in capsys.readouterr().err
    data = write_csv(tmp_path / "b.csv", [("VPN", "down")], header=("title", "description"))
    argv = ["enrich", str(data), "--platform", "dynamics", "--mapping", str(DEFAULT_MAPPING_PATH)]
    assert main(argv) == 2
    assert "--platform dynamics needs a mapping with system: dataverse" in capsys.readouterr().err


# --- explainable output -----------------------------------------------------------------------

FIELD_KEYS = {"value", "confidence", "source", "would_write", "action", "reason", "why"}


def test_jsonl_gives_every_canonical_field_with_null_and_a_reason_when_abstaining(tmp_path, capsys):
    data = write_csv(tmp_path / "t.csv", [("", EMAIL), ("Hej", "")])
    assert main(["enrich", str(data), "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for row in rows:
        fields = {k: v for k, v in row.items() if k != "row"}
        assert set(fields) >= {
            "category",
            "subcategory",
            "impact",
            "urgency",
            "priority",
            "summary",
        }
        for name, f in fields.items():
            assert set(f) == FIELD_KEYS, name
            assert isinstance(f["would_write"], bool) and f["reason"]
            if f["value"] is None:
                assert (f["confidence"], f["source"], f["would_write"]) == (None, None, False)
            else:
                assert 0 <= f["confidence"] <= 1 and f["source"] and f["why"]
    vpn, bare = rows
    assert vpn["category"]["value"] == "network" and vpn["category"]["source"] == "keywords"
    assert vpn["impact"]["value"] is None
    assert vpn["impact"]["reason"] == "keywords: no cue found; model not configured"
    assert bare["priority"]["reason"] == (
        "priority: needs impact and urgency; no impact and no urgency"
    )
    # "Hej" is the row's title: an uninformative one, and there is no description.
    assert bare["summary"]["value"] is None
    assert "no description to summarise" in bare["summary"]["reason"]


def test_a_value_the_file_already_holds_is_shown_but_not_written_with_the_policy_why(
    tmp_path, capsys
):
    data = write_csv(
        tmp_path / "t.csv", [("VPN virker ikke", EMAIL, "hardware")],
        header=("title", "description", "category"),
    )  # fmt: skip
    assert main(["enrich", str(data), "--format", "jsonl"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["category"]["value"] == "network"
    assert row["category"]["would_write"] is False and row["category"]["action"] == "skip"
    assert "already set" in row["category"]["why"]
    # The subcategory must hang under the person's category, which vpn does not.
    assert row["subcategory"]["value"] is None
    assert "belongs to category network, not hardware" in row["subcategory"]["reason"]


def test_table_marks_a_summary_that_would_not_be_written(tmp_path, capsys):
    data = write_csv(tmp_path / "t.csv", [("VPN virker ikke", EMAIL), ("", EMAIL)])
    assert main(["enrich", str(data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    titled, untitled = lines[1], lines[2]
    assert titled.endswith("? VPN virker ikke")  # the title is already the summary
    assert untitled.split("  ")[-1].strip().startswith("VPN virker ikke")  # written: no mark
    assert "'?' after a value (before the summary) = would not be written" in lines[-1]
