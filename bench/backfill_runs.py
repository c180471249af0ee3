"""Seeding the simulators and running the backfill child with kills (for ``bench.bench_backfill``).

``seed_servicenow`` / ``seed_dataverse`` generate tickets spread over ``DAYS`` days (varied
texts, some with nothing an enricher can be sure of, some with a value a person set);
``run_with_kills`` starts the backfill child, SIGKILLs it when ``KILL_AT`` shares of the
tickets are scanned, restarts it with the same run id and lets the last one finish, and
returns its status, kills, per-incarnation stats and CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.backfill_child import SECRET_ENV
from connectors.backfill_stores import FileCheckpointStore

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2025, 3, 1, tzinfo=UTC)
DAYS = 40
KILL_AT = (0.3, 0.6)
SN_CLIENT = ("bench-backfill", "bench-backfill-secret-0123456789")
SN_USER = "svc_ticket_enricher"
DV_CLIENT = ("bench-backfill-app", "bench-backfill-app-secret-0123456789")
PERSON_PRIORITY = 1

# (title, body); the last ones give an enricher nothing to be sure of.
TEXTS = [
    ("VPN down", "The VPN is down for all users in store {n}, nobody can work. Please help asap!"),
    ("Printer jam", "The printer on floor {n} keeps jamming, customers are waiting. Urgent."),
    ("Password reset", "My account is locked and I cannot work, please reset it asap ({n})."),
    ("Laptop broken", "My laptop screen is cracked and the keyboard does not respond (asset {n})."),
    ("Email not syncing", "Outlook does not sync my mailbox, I am unable to work. Ref {n}."),
    ("Wi-Fi", "The wireless network in the whole office drops every few minutes, room {n}."),
    ("Database slow", "The SQL Server database for orders is down, order {n} is stuck. Urgent!"),
    ("Kassen", "Alle kasser i butik {n} er nede, ingen kan betale. Det haster!"),
    ("Monitor", "My second monitor stays black after the update, desk {n}. Please fix asap."),
    ("DNS", "DNS does not resolve the intranet from branch {n}, all users are affected."),
    ("Konto låst", "Min konto er blevet låst efter ferien, jeg kan ikke arbejde. Bruger {n}."),
    ("Mouse", "The mouse at till {n} stopped working."),
    ("hello", "thanks ({n})"),
    ("question", "Can you call me back about the thing we discussed? ({n})"),
]


@dataclass
class Generated:
    """What the parent generated: every ticket id and the values a person set on some."""

    ids: list[str] = field(default_factory=list)
    person: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Kid:
    """One incarnation of the child process and its stats file."""

    proc: subprocess.Popen[bytes]
    stats: Path
    started: float


def _stamp(rng: random.Random) -> datetime:
    return START + timedelta(seconds=rng.randrange(DAYS * 86400))


def seed_servicenow(sim: Any, count: int, seed: int) -> Generated:
    """``count`` incidents over 40 days; one in eight with a person's category and impact."""
    rng, out = random.Random(seed), Generated()
    for n in range(count):
        title, body = TEXTS[rng.randrange(len(TEXTS))]
        fields: dict[str, Any] = {
            "short_description": title,
            "description": body.format(n=n),
            "sys_created_on": _stamp(rng).strftime("%Y-%m-%d %H:%M:%S"),
        }
        person = rng.random() < 0.125
        if person:
            fields.update(category="hardware", impact="2")
        sys_id = sim.add_record("incident", fields, user="anna.b")
        out.ids.append(sys_id)
        if person:
            out.person[sys_id] = {"category": "hardware", "impact": "2"}
    return out


def seed_dataverse(sim: Any, count: int, seed: int) -> Generated:
    """``count`` cases over 40 days; one in eight with a person's priority and impact."""
    rng, out = random.Random(seed), Generated()
    for column in ("new_impact", "new_urgency"):
        sim.set_choices(column, {1: "High", 2: "Medium", 3: "Low"})
    for n in range(count):
        title, body = TEXTS[rng.randrange(len(TEXTS))]
        fields: dict[str, Any] = {
            "title": f"{title} {n}",
            "description": body.format(n=n),
            "createdon": _stamp(rng).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        person = rng.random() < 0.125
        if person:
            fields.update(prioritycode=PERSON_PRIORITY, new_impact=2)
        case_id = sim.add_case(fields)
        out.ids.append(case_id)
        if person:
            out.person[case_id] = {"prioritycode": PERSON_PRIORITY, "new_impact": 2}
    return out


def _child_args(platform: str, sim: Any, args: argparse.Namespace, work: Path) -> list[str]:
    quota = args.servicenow_quota_per_s if platform == "servicenow" else args.dynamics_quota_per_s
    out = [
        "--platform", platform, "--url", sim.url, "--run-id", f"bench-{platform}",
        "--state", str(work / f"{platform}-state.json"),
        "--budget", str(work / f"{platform}-budget.json"),
        "--since", START.isoformat(), "--until", (START + timedelta(days=DAYS)).isoformat(),
        "--quota-per-s", str(quota), "--lease-s", str(args.lease_s),
        "--window-tickets", str(max(1, args.tickets // DAYS)),
    ]  # fmt: skip
    if platform == "servicenow":
        out += ["--client-id", SN_CLIENT[0], "--page-size", "100"]
    else:
        out += ["--client-id", DV_CLIENT[0], "--page-size", "500", "--tenant", sim.tenant,
                "--ca", str(sim.ca_path)]  # fmt: skip
    return out


def _start(argv: list[str], secret: str, work: Path, n: int) -> Kid:
    stats = work / f"stats-{n}.json"
    env = {**os.environ, SECRET_ENV: secret, "PYTHONPATH": str(ROOT)}
    with open(work / f"stderr-{n}.txt", "wb") as errors:  # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.backfill_child", *argv, "--stats", str(stats)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    return Kid(proc, stats, time.monotonic())


def _scanned(state: Path, run_id: str) -> int:
    if not state.exists():
        return 0
    try:
        return FileCheckpointStore(str(state)).run_status(run_id).counts.scanned
    except Exception:
        return 0


def run_with_kills(
    platform: str, sim: Any, args: argparse.Namespace, work: Path, secret: str
) -> dict[str, Any]:
    """Start the child, kill it at 30 % and 60 % of the tickets scanned, let the third finish."""
    argv = _child_args(platform, sim, args, work)
    state, run_id = work / f"{platform}-state.json", f"bench-{platform}"
    kids: list[Kid] = []
    kills: list[dict[str, Any]] = []
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    parent_before = time.process_time()
    started = time.monotonic()
    kids.append(_start(argv, secret, work, 0))
    for share in KILL_AT[: args.kills]:
        while True:
            scanned = _scanned(state, run_id)
            if scanned >= share * args.tickets or kids[-1].proc.poll() is not None:
                break
            time.sleep(0.05)
        alive = kids[-1].proc.poll() is None
        if alive:
            kids[-1].proc.send_signal(signal.SIGKILL)
            kids[-1].proc.wait()
        kills.append({"at_scanned": scanned, "killed": alive,
                      "at_s": round(time.monotonic() - started, 2)})  # fmt: skip
        kids.append(_start(argv, secret, work, len(kids)))
    code = kids[-1].proc.wait(timeout=args.timeout_s)
    wall = time.monotonic() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {
        "children_cpu_s": round(
            children.ru_utime + children.ru_stime
            - children_before.ru_utime - children_before.ru_stime, 1
        ),
        "parent_cpu_s": round(time.process_time() - parent_before, 1),
    }  # fmt: skip
    status = FileCheckpointStore(str(state)).run_status(run_id)
    incarnations = []
    for kid in kids:
        try:
            incarnations.append(json.loads(kid.stats.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            incarnations.append({})
    return {"exit_code": code, "wall_s": wall, "status": status, "kills": kills,
            "incarnations": incarnations, "cpu": cpu}  # fmt: skip
