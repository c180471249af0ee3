"""Run a simulator standalone until Ctrl-C, optionally seeded with sample tickets.

    python -m tests.simulators.dataverse --port 0 --seed 5 [--tls | --no-tls]
    python -m tests.simulators.servicenow --port 0 --seed 5
    python -m tests.simulators {dataverse|servicenow} ...

Prints the base URL and the credentials to use. ``--port 0`` picks a free port (the
simulators always bind 127.0.0.1); another port is bound exactly.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["SAMPLE_TICKETS", "main", "sample_tickets"]

SAMPLE_TICKETS = [
    (
        "Cannot connect to VPN from home office",
        "The VPN client disconnects every 30 minutes. Error 809.",
    ),
    (
        "Outlook keeps asking for my password",
        "Since the update this morning Outlook prompts for credentials on every start.",
    ),
    ("Printer on floor 3 jams", "The HP printer near the kitchen jams on every duplex job."),
    (
        "Need access to the finance share",
        "Please grant read access to \\\\fs01\\finance for the audit.",
    ),
    (
        "Laptop screen flickers",
        "The screen flickers when the laptop is docked; external monitor is fine.",
    ),
    (
        "Invoice portal returns error 500",
        "Customers report a server error when downloading invoices.",
    ),
    (
        "New hire onboarding: accounts",
        "Create mailbox and Teams account for a new hire starting Monday.",
    ),
    (
        "Wi-Fi drops in meeting room B",
        "Guests lose the Wi-Fi connection every few minutes in room B.",
    ),
]


def sample_tickets(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """``count`` (title, description) pairs drawn deterministically from SAMPLE_TICKETS."""
    rng = random.Random(seed)
    return [
        (f"{t} (#{i + 1})", d) for i, (t, d) in enumerate(rng.choice(SAMPLE_TICKETS) for _ in range(count))
    ]  # fmt: skip


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def _dataverse(args: argparse.Namespace) -> Any:
    from tests.simulators.dataverse import DataverseSimulator

    sim = DataverseSimulator({"client": "secret"}, tls=args.tls)
    sim.set_choices("new_impact", {1: "High", 2: "Medium", 3: "Low"})
    sim.set_choices("new_urgency", {1: "High", 2: "Medium", 3: "Low"})
    network = sim.add_subject("Network")
    sim.add_subject("VPN", parent=network)
    for title, description in sample_tickets(args.seed, args.seed):
        sim.add_case({"title": title, "description": description})
    sim.port = args.port
    sim.start()
    _say(f"Dataverse simulator: {sim.api_url}")
    _say(f"  authority: {sim.authority}  client_id: client  client_secret: secret")
    _say(f"  scope: {sim.scope}")
    if sim.ca_path:
        _say(f"  CA certificate (requests verify=): {sim.ca_path}")
    return sim


def _servicenow(args: argparse.Namespace) -> Any:
    from tests.simulators.servicenow import ServiceNowSimulator

    sim = ServiceNowSimulator(users={"admin": "admin"}, oauth_clients={"client": ("secret", "svc")})
    for title, description in sample_tickets(args.seed, args.seed):
        sim.add_record("incident", {"short_description": title, "description": description})
    ca_path = None
    if args.tls:  # real clients refuse plain http to an instance; so does our settings check
        from tests.simulators.dataverse_auth import make_certificate, server_context

        cert, key = make_certificate(Path(tempfile.mkdtemp(prefix="servicenow-sim-")))
        sim.ssl_context, ca_path = server_context(cert, key), str(cert)
    sim.port = args.port
    sim.start()
    _say(f"ServiceNow simulator: {sim.url}")
    _say("  basic auth: admin / admin  OAuth client: client / secret (POST /oauth_token.do)")
    if ca_path:
        _say(f"  CA certificate (requests verify=): {ca_path}")
    return sim


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``{dataverse|servicenow} [--port N] [--seed N] [--tls|--no-tls]`` and serve."""
    parser = argparse.ArgumentParser(prog="python -m tests.simulators")
    parser.add_argument("system", choices=["dataverse", "servicenow"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="number of sample tickets")
    parser.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    sim = (_dataverse if args.system == "dataverse" else _servicenow)(args)
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
