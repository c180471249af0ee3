"""The learned summary: training on synthetic pairs, the model.json part, safety, CLI wiring."""

from __future__ import annotations

import base64
import csv
import io
import json
import random
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.rouge import rouge_l_f1
from domain.errors import ConfigError
from domain.models import SUMMARY_MAX_CHARS, Ticket
from enrichers import default_enrichers
from enrichers.summary import ExtractiveSummarizer, SummaryEnricher
from enrichers.summary_model import LearnedSummarizer, SummaryModel, trim
from triage.learn.summary_train import rouge_l, train_summary

DEVICES = ["printer", "skrivare", "drucker", "laptop", "scanner", "monitor", "router", "headset"]
PLACES = ["room", "floor", "building", "lager", "raum", "kontor"]
SYMPTOMS = ["jams paper", "shows stripes", "beeps twice", "stays dark", "reboots", "is slow"]
COVERS = [  # contentless first sentences with an "error" cue the extractive summarizer likes
    "Zorblax portal error report number {n} created from the web form.",
    "Zorblax ticket error notice {n} forwarded by the portal.",
    "Automatic zorblax error report {n} from the portal.",
]


def _pair(rng: random.Random) -> tuple[str, str]:
    """A body whose first sentence is desk boilerplate; the title names the device problem."""
    device, place, symptom = rng.choice(DEVICES), rng.choice(PLACES), rng.choice(SYMPTOMS)
    n = rng.randint(2, 999)
    cover = rng.choice(COVERS).format(n=rng.randint(1000, 9999))
    body = (
        f"Hello,\n\n{cover}\nQuux blorp the {device} in {place} {n} {symptom} since monday.\n\n"
        f"Best regards\nKim Jensen"
    )
    return body, f"{device.capitalize()} in {place} {n} {symptom}"


def _pairs(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [_pair(rng) for _ in range(count)]


@pytest.fixture(scope="module")
def model() -> SummaryModel:
    pairs = _pairs(120, seed=1)
    return train_summary([b for b, _ in pairs], [t for _, t in pairs], source="synthetic")


def _mean_rouge(summarize: object, pairs: list[tuple[str, str]]) -> float:
    total = 0.0
    for body, title in pairs:
        candidate = summarize.summarize("", body)  # type: ignore[attr-defined]
        total += rouge_l_f1(candidate.text if candidate else "", title)
    return total / len(pairs)


def test_training_learns_to_skip_the_planted_filler_and_pick_the_informative_sentence(
    model: SummaryModel,
) -> None:
    held_out = _pairs(40, seed=2)
    learned = LearnedSummarizer(model)
    for body, title in held_out[:10]:
        text = learned.summarize("", body)
        assert text is not None
        assert "zorblax" not in text.text.lower()
        assert not text.text.lower().startswith("quux"), text.text  # the filler lead is trimmed
        assert title.split()[0].lower() in text.text.lower()
    learned_f = _mean_rouge(learned, held_out)
    extractive_f = _mean_rouge(ExtractiveSummarizer(), held_out)
    assert learned_f > 0.8
    assert extractive_f < 0.5  # the unlearned summarizer falls for the cover sentence
    assert "quux blorp" in model.lead


def test_trim_drops_filler_ngrams_at_both_ends_but_never_everything() -> None:
    lead, trail = frozenset({"quux blorp", "hi"}), frozenset({"thanks"})
    assert trim("Hi quux blorp the VPN fails, thanks", lead, trail) == "the VPN fails"
    assert trim("quux blorp", lead, trail) == "quux blorp"  # nothing would be left
    assert trim("The VPN fails", lead, trail) == "The VPN fails"


def test_rouge_l_of_training_matches_the_bench_metric() -> None:
    assert rouge_l(["a", "b", "c"], ["a", "c"]) == pytest.approx(rouge_l_f1("a b c", "a c"))
    assert rouge_l([], ["a"]) == 0.0


def test_too_few_pairs_are_refused() -> None:
    with pytest.raises(ConfigError, match="pairs"):
        train_summary(["body one"], ["title"])


# --- the model.json part -------------------------------------------------------------------------
def test_save_load_round_trip_keeps_other_keys_and_picks(
    model: SummaryModel, tmp_path: Path
) -> None:
    (tmp_path / "model.json").write_text(json.dumps({"format": "x", "fields": {}}), "utf-8")
    model.save(tmp_path)
    document = json.loads((tmp_path / "model.json").read_text("utf-8"))
    assert document["format"] == "x" and document["summary"]["format_version"] == 1
    loaded = SummaryModel.load(tmp_path)
    assert loaded is not None
    for body, _ in _pairs(10, seed=3):
        assert loaded.pick(body) == model.pick(body)
    assert SummaryModel.from_metadata(document) is not None
    assert SummaryModel.from_metadata({"fields": {}}) is None


def test_a_directory_without_a_summary_part_has_none(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("{}", "utf-8")
    assert SummaryModel.load(tmp_path) is None
    with pytest.raises(ConfigError, match="missing"):
        SummaryModel.load(tmp_path / "nowhere")


def _tampered(model: SummaryModel, tmp_path: Path, change: object) -> Path:
    model.save(tmp_path)
    path = tmp_path / "model.json"
    document = json.loads(path.read_text("utf-8"))
    change(document["summary"])  # type: ignore[operator]
    path.write_text(json.dumps(document), "utf-8")
    return tmp_path


def _flip_a_weight_byte(part: dict[str, object]) -> None:
    arrays = part["arrays"]
    assert isinstance(arrays, dict)
    raw = bytearray(base64.b64decode(arrays["npz_base64"]))
    raw[len(raw) // 2] ^= 0xFF
    arrays["npz_base64"] = base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_flip_a_weight_byte, "SHA-256"),
        (lambda part: part.update(format_version=2), "version 2 is not supported"),
        (lambda part: part.update(format="other"), "not a"),
        (lambda part: part.pop("prior_rate"), "missing key 'prior_rate'"),
        (lambda part: part.update(features=["x"]), "features differ"),
        (lambda part: part["arrays"].update(npz_base64="!!"), "unreadable arrays"),
    ],
)
def test_a_tampered_or_foreign_summary_part_is_refused(
    model: SummaryModel, tmp_path: Path, change: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SummaryModel.load(_tampered(model, tmp_path, change))


# --- what is never written -----------------------------------------------------------------------
GREETINGS = ["Hi team,", "Hej alle", "Hallo zusammen,", "Hej!", "Dear Sir,", "Good morning"]
SIGN_OFFS = [
    "Best regards",
    "Med venlig hilsen",
    "Mit freundlichen Grüßen",
    "Med vänliga hälsningar",
]
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzæøåäöüß ", min_size=1, max_size=60)


@given(
    greeting=st.sampled_from(GREETINGS),
    sign_off=st.sampled_from(SIGN_OFFS),
    lines=st.lists(WORDS, min_size=0, max_size=4),
    filler=st.booleans(),
)
def test_the_learned_summary_never_writes_greeting_signature_quote_or_our_note(
    model: SummaryModel, greeting: str, sign_off: str, lines: list[str], filler: bool
) -> None:
    body = "\n".join(
        [
            greeting,
            "Quux blorp zorblax portal error." if filler else "",
            *lines,
            sign_off,
            "Sigurd Signatursen",
            "",
            "> Quotedword from the earlier mail",
            "Filled automatically; please correct anything wrong: notetoken",
        ]
    )
    enricher = SummaryEnricher(model=model)
    suggestions = enricher.enrich(Ticket(record_id="1", title="", description=body), {})
    for suggestion in suggestions:
        value = suggestion.value
        assert len(value) <= SUMMARY_MAX_CHARS
        lowered = value.lower()
        assert not any(lowered.startswith(g.lower().rstrip(",!")) for g in GREETINGS), value
        for token in ("signatursen", "quotedword", "notetoken", "filled automatically"):
            assert token not in lowered, value
        assert not any(s.lower() in lowered for s in SIGN_OFFS), value


# --- wiring: default_enrichers and the CLI -------------------------------------------------------
def test_default_enrichers_use_the_summary_part_of_the_model(model: SummaryModel) -> None:
    from domain.mapping import load_mapping

    mapping = load_mapping(None)
    chain = default_enrichers(mapping, summary_model=model)
    summary = chain[-1]
    assert isinstance(summary, SummaryEnricher) and summary.summarizer.name == "learned"
    assert default_enrichers(mapping)[-1].summarizer.name == "extractive"  # type: ignore[attr-defined]
    # default_enrichers(model=TextModel) reads the same part from the loaded model.json
    assert SummaryModel.from_metadata({"summary": model.to_json(), "fields": {}}) is not None


def test_train_summary_flag_writes_the_part_and_enrich_uses_it(tmp_path: Path) -> None:
    from triage.cli import main

    rng = random.Random(5)
    path = tmp_path / "tickets.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["short_description", "description", "category"])
        for _ in range(120):
            body, title = _pair(rng)
            writer.writerow([title, body, "hardware" if "printer" in body else "network"])
    out_dir = tmp_path / "model"
    common = ["--data", str(path), "--text", "short_description,description", "--folds", "3"]
    argv = ["train", *common, "--label", "category", "--summary", "short_description"]
    argv += ["--jobs", "1", "--out", str(out_dir)]
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert main(argv) == 0
    assert "summary: 120 (description, short_description) pairs" in stdout.getvalue()
    assert SummaryModel.load(out_dir) is not None
    body, _ = _pair(random.Random(99))
    tickets = tmp_path / "new.csv"
    with tickets.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["short_description", "description"], ["", body]])
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert main(["enrich", str(tickets), "--format", "jsonl", "--model", str(out_dir)]) == 0
    row = json.loads(stdout.getvalue().splitlines()[0])
    assert row["summary"]["reason"].startswith("learned:"), row["summary"]
    assert "zorblax" not in row["summary"]["value"].lower()


def test_a_learned_summary_that_does_not_beat_the_extractive_one_is_not_kept(
    tmp_path: Path,
) -> None:
    from triage.learn.summary_check import holdout_check

    rng = random.Random(9)
    pairs = [_pair(rng) for _ in range(150)]
    bodies = [b for b, _ in pairs]
    good = holdout_check(bodies, [t for _, t in pairs])
    assert good.keep and good.learned > good.extractive and good.held_out > 10
    # Titles that say nothing about the body: nothing to learn, so the learned part is dropped.
    useless = holdout_check(bodies, ["zz qq" for _ in pairs])
    assert not useless.keep

    from triage.cli import main

    path = tmp_path / "tickets.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["short_description", "description", "category"])
        for body, _ in pairs:
            writer.writerow(["zz qq", body, "hardware" if "printer" in body else "network"])
    out_dir = tmp_path / "model"
    argv = ["train", "--data", str(path), "--text", "short_description,description"]
    argv += ["--folds", "3", "--label", "category", "--summary", "short_description"]
    argv += ["--jobs", "1", "--out", str(out_dir)]
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert main(argv) == 0
    assert "summary: not kept" in stdout.getvalue()
    assert "summary" not in json.loads((out_dir / "model.json").read_text())
