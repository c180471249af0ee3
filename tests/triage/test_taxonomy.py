"""One taxonomy bound per platform: composition into FieldMapping, errors naming key and value,
the two starter taxonomies, and keyword sanity of the customer-service one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from domain.errors import ConfigError
from domain.mapping import load_mapping
from domain.models import Ticket
from domain.taxonomy import TAXONOMY_DIR, load_taxonomy
from enrichers.keywords import KeywordEnricher

EXAMPLES = TAXONOMY_DIR / "examples"
IT_SN = EXAMPLES / "it_service_desk.servicenow.yaml"
CS_SN = EXAMPLES / "customer_service.servicenow.yaml"
CS_DV = EXAMPLES / "customer_service.dynamics.yaml"


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def binding(**extra: object) -> dict[str, object]:
    data: dict[str, object] = {
        "system": "servicenow",
        "taxonomy": "it_service_desk",
        "fields": {"title": "short_description", "description": "description",
                   "category": "category", "subcategory": "subcategory"},
        "values": {"category": {"network": "network", "hardware": "hardware"},
                   "subcategory": {"vpn": "vpn"}},
    }  # fmt: skip
    data.update(extra)
    return data


def test_it_taxonomy_bound_to_servicenow_is_the_default_mapping() -> None:
    default, composed = load_mapping(), load_mapping(IT_SN)
    for key in ("fields", "values", "unset", "min_confidence", "keywords", "subcategory_parent",
                "priority_matrix", "integration_user", "note_field"):  # fmt: skip
        assert getattr(composed, key) == getattr(default, key), key
    assert composed.taxonomy == "it_service_desk" and default.taxonomy is None
    assert composed.human_label("subcategory", "operating_system") == "Operating system"
    assert "Outlook" in (composed.description("subcategory", "email") or "")
    assert default.human_label("category", "network") is None


def test_binding_only_gets_the_keywords_and_parents_of_what_it_binds(tmp_path: Path) -> None:
    m = load_mapping(write(tmp_path / "b.yaml", binding()))
    it = load_taxonomy("it_service_desk")
    assert set(m.keywords["category"]) == {"network", "hardware"}
    assert m.keywords["subcategory"] == {
        "vpn": it.categories["network"].subcategories["vpn"].keywords
    }
    # Unbound subcategories keep counting for their bound category ("dns" under network).
    assert (
        "dns" in m.keywords["category"]["network"]
        and "vpn*" not in m.keywords["category"]["network"]
    )
    assert "printer*" in m.keywords["category"]["hardware"]  # hardware itself lists printer*
    assert "cpu" in m.keywords["category"]["hardware"]  # from the unbound subcategory cpu
    assert m.subcategory_parent == {"vpn": "network"}
    assert set(m.descriptions["category"]) == {"network", "hardware"}


def test_binding_keywords_replace_the_taxonomys_for_that_label(tmp_path: Path) -> None:
    data = binding(keywords={"category": {"network": ["netz*"]}})
    m = load_mapping(write(tmp_path / "b.yaml", data))
    assert m.keywords["category"]["network"] == ["netz*"]
    assert "printer*" in m.keywords["category"]["hardware"]


def test_unknown_label_names_file_key_path_and_value(tmp_path: Path) -> None:
    data = binding(values={"category": {"network": "network", "netwrok": "net2"},
                           "impakt": {"high": "1"}})  # fmt: skip
    path = write(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    lines = str(err.value).splitlines()
    assert f"{path}: values.category.netwrok: 'netwrok' is not a label of category" in lines[0]
    assert lines[1] == f"{path}: values.impakt: no such field in taxonomy it_service_desk"


def test_missing_taxonomy_and_invalid_taxonomy_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read taxonomy nope"):
        load_mapping(write(tmp_path / "b.yaml", binding(taxonomy="nope")))
    tax = {"name": "mine", "categories": {
        "a": {"description": "A", "subcategories": {"x": {"description": "X"}}},
        "b": {"description": "B", "subcategories": {"x": {"description": "X again"}}}}}  # fmt: skip
    write(tmp_path / "mine.yaml", tax)
    with pytest.raises(
        ConfigError, match=r"categories.b.subcategories.x: already a subcategory of a"
    ):
        load_mapping(write(tmp_path / "b.yaml", binding(taxonomy="mine.yaml")))
    tax["categories"]["b"]["subcategories"] = {"y": {"description": ""}}  # type: ignore[index]
    write(tmp_path / "mine.yaml", tax)
    with pytest.raises(ConfigError, match=r"categories.b.subcategories.y.description"):
        load_mapping(write(tmp_path / "b.yaml", binding(taxonomy="mine.yaml")))


def test_a_taxonomy_path_is_relative_to_the_binding(tmp_path: Path) -> None:
    (tmp_path / "tax").mkdir()
    write(tmp_path / "tax" / "desk.yaml", {"name": "desk", "categories": {
        "network": {"name": "Netværk", "description": "Net", "keywords": ["netværk*"]}}})  # fmt: skip
    data = binding(taxonomy="tax/desk.yaml", values={"category": {"network": "net"}})
    m = load_mapping(write(tmp_path / "b.yaml", data))
    assert m.taxonomy == "desk" and m.keywords == {"category": {"network": ["netværk*"]}}
    assert m.human_label("category", "network") == "Netværk"


def test_customer_service_binds_to_servicenow_and_dynamics_alike() -> None:
    sn, dv = load_mapping(CS_SN), load_mapping(CS_DV)
    assert sn.taxonomy == dv.taxonomy == "customer_service"
    # One definition: the same keywords for the same label on both platforms.
    assert (
        sn.keywords["subcategory"]["return_product"] == dv.keywords["subcategory"]["return_product"]
    )
    assert (
        sn.subcategory_parent["return_product"]
        == dv.subcategory_parent["return_product"]
        == "returns"
    )
    assert dv.column_types() == {"_subjectid_value": "lookup:subjects", "prioritycode": "choice",
                                 "casetypecode": "choice"}  # fmt: skip
    assert dv.to_raw("case_type", "problem") == "2"
    assert dv.priority_matrix["high"]["high"] == "high"  # the taxonomy's matrix
    assert dv.human_label("subcategory", "return_product") == "Return of a product"
    assert sn.to_raw("subcategory", "delivery_delay") == "late delivery"
    assert len(sn.values["subcategory"]) == 22


# (category, subcategory or None, title, body): retail tickets in da/sv/no/de/en.
TICKETS = [
    ("returns", "return_product", "Returnering af jakke", "Hej, jeg vil gerne returnere jakken jeg købte i sidste uge. Mvh Karen"),
    ("returns", "return_product", "Retur av skor", "Hej! Jag vill returnera ett par skor. Skickar ni en returetikett? Vänliga hälsningar, Eva"),
    ("returns", "return_product", "Rücksendung meiner Bestellung", "Guten Tag, ich möchte die Hose zurückschicken. Wo finde ich den Retourenschein?"),
    ("returns", None, "Refund not received", "Hi, I sent my return two weeks ago and still have no refund. Regards, Tom"),
    ("returns", "exchange", "Bytte til annen størrelse", "Hei, kan jeg bytte genseren til en annen størrelse? Hilsen Ola"),
    ("delivery", "delivery_status", "Hvor er min pakke?", "Hej, jeg bestilte for en uge siden og har ikke fået noget sporingsnummer."),
    ("delivery", "delivery_delay", "Paketet har inte kommit", "Hej, min beställning skulle levereras i tisdags men paketet har fortfarande inte kommit."),
    ("delivery", "delivery_status", "Wo bleibt mein Paket?", "Hallo, meine Lieferung ist seit einer Woche verspätet. Die Sendungsverfolgung zeigt nichts."),
    ("delivery", "damaged_in_transit", "Parcel arrived damaged", "Hello, the parcel arrived damaged in transit, the box was crushed."),
    ("delivery", "delivery_delay", "Pakken er ikke kommet frem", "Hei, pakken min er forsinket og sporingsnummeret virker ikke."),
    ("payment", "invoice", "Spørgsmål til faktura", "Hej, jeg har modtaget en faktura på 499 kr, men jeg har allerede betalt. Mvh Lise"),
    ("payment", "payment_failed", "Betalningen misslyckades", "Hej, betalningen misslyckades men pengarna drogs ändå."),
    ("payment", "invoice", "Rechnung doppelt", "Guten Tag, ich habe eine Mahnung bekommen, obwohl die Rechnung bezahlt ist."),
    ("payment", "payment_method", "Can I pay with Klarna?", "Hi, do you accept Klarna or PayPal in the web shop?"),
    ("payment", "payment_failed", "Trukket to ganger", "Hei, betalingen ble trukket to ganger fra kortet mitt."),
    ("membership", "loyalty_points", "Mangler bonuspoint", "Hej, mine bonuspoint fra sidste køb står ikke på mit medlemskort."),
    ("membership", "loyalty_points", "Bonuspoäng saknas", "Hej, jag handlade i lördags men fick inga bonuspoäng i kundklubben."),
    ("membership", "membership_cancel", "Mitgliedschaft kündigen", "Hallo, bitte beenden Sie meine Mitgliedschaft im Kundenclub."),
    ("membership", "membership_signup", "Become a member", "Hi, how do I become a member of your loyalty club?"),
    ("membership", "membership_signup", "Bli medlem", "Hei, hvordan kan jeg bli medlem i kundeklubben?"),
    ("product_complaint", "product_defect", "Kaffemaskine defekt", "Hej, kaffemaskinen er gået i stykker efter to uger. Mvh Peter"),
    ("product_complaint", "warranty_claim", "Reklamation på jacka", "Hej, dragkedjan på jackan gick sönder, jag vill reklamera."),
    ("product_complaint", None, "Staubsauger kaputt", "Guten Tag, der Staubsauger ist nach einem Monat kaputt. Gilt die Garantie?"),
    ("product_complaint", "product_defect", "Faulty headphones", "Hi, my headphones are faulty, the left side stopped working."),
    ("product_complaint", None, "Reklamasjon på sko", "Hei, sålen på skoene er ødelagt etter en uke."),
    ("order_change", "cancel_order", "Annuller min ordre", "Hej, jeg vil gerne annullere ordre 55512 som jeg lige har lagt."),
    ("order_change", "cancel_order", "Avbeställa order", "Hej, kan jag avbeställa min order från igår?"),
    ("order_change", "change_order", "Falsche Adresse", "Hallo, ich habe die falsche Adresse angegeben, bitte Lieferadresse ändern."),
    ("order_change", "cancel_order", "Cancel my order", "Hi, please cancel my order 7788, I ordered the wrong colour."),
    ("order_change", "change_order", "Endre leveringsadresse", "Hei, kan jeg endre leveringsadressen på bestillingen min?"),
    ("account_login", "login_problem", "Kan ikke logge ind", "Hej, jeg kan ikke logge ind på min konto i appen."),
    ("account_login", "password_reset", "Glömt lösenord", "Hej, jag har glömt mitt lösenord och får inget mejl för att återställa det."),
    ("account_login", "password_reset", "Passwort zurücksetzen", "Hallo, der Link zum Zurücksetzen meines Passworts funktioniert nicht."),
    ("account_login", "account_details", "Delete my account", "Hi, please delete my account and all personal data (GDPR)."),
    ("account_login", "login_problem", "Får ikke logget inn", "Hei, jeg får ikke logget inn på Min side i appen, den bare laster."),
    ("stores", "opening_hours", "Åbningstider i julen", "Hej, hvad er jeres åbningstider juleaften?"),
    ("stores", "opening_hours", "Öppettider på söndag", "Hej, vilka öppettider har butiken i Malmö på söndag?"),
    ("stores", "opening_hours", "Öffnungszeiten Filiale", "Hallo, wie sind die Öffnungszeiten der Filiale in Hamburg?"),
    ("stores", "store_location", "Nearest store", "Hi, where is your nearest store to Aarhus? I want to try the shoes."),
    ("stores", "opening_hours", "Åpningstider", "Hei, hva er åpningstidene i butikken på Storo?"),
]  # fmt: skip


@pytest.mark.parametrize("binding_path", [CS_SN, CS_DV], ids=["servicenow", "dynamics"])
def test_customer_service_keywords_pick_the_right_category(binding_path: Path) -> None:
    mapping = load_mapping(binding_path)
    enricher = KeywordEnricher(mapping)
    bound = set(mapping.values["category"])
    wrong = []
    for category, subcategory, title, body in TICKETS:
        ticket = Ticket(record_id="1", title=title, description=body, current={})
        got = {s.field: s.value for s in enricher.enrich(ticket, {})}
        # A class the binding leaves out is never guessed as another one.
        if got.get("category") != (category if category in bound else None):
            wrong.append((title, got.get("category")))
        sub_bound = subcategory in mapping.values["subcategory"]
        if subcategory and sub_bound and got.get("subcategory") != subcategory:
            wrong.append((title, got.get("subcategory")))
    assert wrong == []


def test_customer_service_covers_every_class_and_language() -> None:
    tax = load_taxonomy("customer_service")
    assert {c for c, *_ in TICKETS} == set(tax.categories)
    for category in tax.categories.values():
        assert category.description and all(s.description for s in category.subcategories.values())
    words = {
        w for labels in tax.field_labels().values() for lb in labels.values() for w in lb.keywords
    }
    for sample in ("returnering*", "returnera*", "rücksendung*", "tilbakebetaling*", "refund*"):
        assert sample in words
