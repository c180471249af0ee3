import csv
import json
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
    assert summary["would_fill"] is True
    assert rows[0]["category"]["value"] == "network"
    assert rows[1]["summary"]["would_fill"] is False  # the row has a title already


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
