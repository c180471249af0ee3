"""Synthetic multilingual labelled tickets for the learner's tests (no real data in tests)."""

from __future__ import annotations

import random

#: subcategory → (category, class-specific words in Danish, Swedish, German and English)
VOCAB: dict[str, tuple[str, list[str]]] = {
    "vpn": ("network", ["vpn", "tunnel", "forbindelse", "anslutning", "verbindung", "remote"]),
    "wifi": ("network", ["wifi", "trådløst", "wlan", "trådlöst", "funknetz", "accesspoint"]),
    "printer": ("hardware", ["printer", "skriver", "skrivare", "drucker", "toner", "papir"]),
    "laptop": ("hardware", ["bærbar", "laptop", "bärbar", "skærm", "tastatur", "akku"]),
    "password_reset": (
        "account_access",
        ["adgangskode", "lösenord", "passwort", "password", "nulstil", "återställ"],
    ),
    "account_locked": (
        "account_access",
        ["låst", "spärrad", "gesperrt", "locked", "konto", "lockout"],
    ),
    "email": ("software", ["outlook", "mail", "postkasse", "brevlåda", "postfach", "kalender"]),
    "office": ("software", ["excel", "word", "powerpoint", "makro", "regneark", "kalkylblad"]),
}
GENERIC = [
    "hej",
    "hallo",
    "hi",
    "please",
    "venligst",
    "bitte",
    "tak",
    "tack",
    "danke",
    "thanks",
    "problem",
    "fejl",
    "fel",
    "fehler",
    "issue",
    "idag",
    "heute",
    "today",
    "kollega",
    "kollege",
    "colleague",
    "hjælp",
    "hjälp",
    "hilfe",
    "help",
    "mvh",
    "mfg",
]


def make_tickets(
    n: int, seed: int, *, label_noise: float = 0.04, vague: float = 0.1
) -> list[dict[str, str]]:
    """Tickets with title/body/category/subcategory; some vague ones carry no class words."""
    rng = random.Random(seed)
    subs = sorted(VOCAB)
    rows = []
    for _ in range(n):
        sub = rng.choice(subs)
        category, words = VOCAB[sub]
        k = 0 if rng.random() < vague else rng.randint(1, 3)
        body = rng.sample(GENERIC, rng.randint(3, 6)) + rng.sample(words, k)
        rng.shuffle(body)
        title = " ".join(rng.sample(words, 1) + rng.sample(GENERIC, 1)) if k else "hjælp"
        if rng.random() < label_noise:
            sub = rng.choice(subs)
            category = VOCAB[sub][0]
        rows.append(
            {
                "title": title.capitalize(),
                "body": " ".join(body),
                "category": category,
                "subcategory": sub,
            }
        )
    return rows


def texts_of(rows: list[dict[str, str]]) -> list[str]:
    """The model input, built like ``Ticket.text``."""
    return [f"{r['title']}\n{r['body']}".strip() for r in rows]
