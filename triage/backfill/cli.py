"""``python -m triage backfill``: run a backfill here, submit it to the app, or watch one.

``backfill --platform servicenow|dynamics [--query Q | --filter F] [--since DATE] [--until
DATE] [--by created|updated] [--limit N] [--dry-run] [--report FILE] [--run-id ID] [--state
FILE] [--submit]`` runs window after window in this process with a progress bar and ends with
a summary; ``--submit`` queues the windows for the deployed app instead; ``backfill status
RUN [--json]`` shows a run's progress. Exit codes: 0 done, 1 some windows failed (or were left
unfinished), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal, TextIO

from connectors.backfill_models import Counts, RunStatus
from domain.errors import EnrichmentError, InboundError
from triage.backfill.api import parse_when, status_body, time_range
from triage.backfill.engine import WindowOutcome, WindowRunner
from triage.backfill.report import FileReport
from triage.backfill.run import run_local
from triage.backfill.service import BackfillService, build_backfill_service
from triage.backfill.spec import BackfillSpec
from triage.backfill.windows import plan_windows, time_field

__all__ = ["BackfillFactory", "add_backfill_parser", "main", "print_summary"]

#: Builds the backfill service: (checkpoint file or None, whether Storage is required).
BackfillFactory = Callable[[str | None, bool], BackfillService]
_SYSTEMS: dict[str, Literal["servicenow", "dataverse"]] = {
    "servicenow": "servicenow",
    "dynamics": "dataverse",
}


def _default_factory(state: str | None, require_storage: bool) -> BackfillService:
    return build_backfill_service(state_path=state, require_storage=require_storage)


def _when(what: str) -> Callable[[str], datetime]:
    def parse(text: str) -> datetime:
        try:
            return parse_when(text, what)
        except InboundError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{what}: ")) from None

    return parse


def add_backfill_parser(
    sub: Any, *, factory: BackfillFactory | None = None, out: TextIO | None = None
) -> argparse.ArgumentParser:
    """Add ``backfill`` (and ``backfill status``) to the CLI's sub-parsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "backfill",
        help="fill old tickets: run here, --submit to the app, or `backfill status RUN`",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--platform", choices=sorted(_SYSTEMS))
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--query", help="ServiceNow encoded query, ANDed into each window's")
    which.add_argument("--filter", help="Dataverse $filter, ANDed into each window's")
    parser.add_argument(
        "--since", type=_when("--since"), help="DATE or ISO time (default: 30 days before --until)"
    )
    parser.add_argument("--until", type=_when("--until"), help="DATE or ISO time (default: now)")
    parser.add_argument("--by", choices=["created", "updated"], default="created")
    parser.add_argument("--limit", type=_positive, help="stop after N tickets")
    parser.add_argument("--dry-run", action="store_true", help="change nothing; write the report")
    parser.add_argument("--report", help="report path: FILE.csv and FILE.json")
    parser.add_argument("--run-id", help="resume this run (or name a new one)")
    parser.add_argument("--state", help="checkpoint file (default: Table Storage if configured)")
    parser.add_argument("--submit", action="store_true", help="queue the windows for the app")
    subs = parser.add_subparsers(dest="backfill_command")
    status = subs.add_parser("status", help="a run's progress (Table Storage or --state)")
    status.add_argument("run")
    status.add_argument("--json", action="store_true")
    status.add_argument("--state", default=argparse.SUPPRESS, help="checkpoint file")
    chosen = factory or _default_factory

    def handler(args: argparse.Namespace) -> int:
        return run(args, chosen, out or sys.stdout, sys.stderr if out is None else out)

    parser.set_defaults(handler=handler)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(
    argv: Sequence[str],
    *,
    factory: BackfillFactory,
    out: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """``backfill ARGS`` with an injected factory (tests); argparse errors return 2."""
    parser = argparse.ArgumentParser(prog="python -m triage")
    sub = parser.add_subparsers(dest="command", required=True)
    add_backfill_parser(sub)
    try:
        args = parser.parse_args(["backfill", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return run(args, factory, out, out, sleep=sleep)


def run(
    args: argparse.Namespace,
    factory: BackfillFactory,
    out: TextIO,
    err: TextIO,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Carry out the parsed ``backfill`` command; one line on ``err`` for any error (exit 2)."""
    try:
        if args.backfill_command == "status":
            return _status(args, factory, out)
        return _backfill(args, factory, out, err, sleep)
    except EnrichmentError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})", file=err)
        return 2


def _status(args: argparse.Namespace, factory: BackfillFactory, out: TextIO) -> int:
    import json

    state = getattr(args, "state", None)
    service = factory(state, state is None)
    status = service.status(args.run)
    if status.state == "missing":
        raise EnrichmentError(f"no run {args.run[:64]} in the checkpoint store")
    if args.json:
        out.write(json.dumps(status_body(status), indent=2) + "\n")
    else:
        print_summary(status, out)
    return 1 if status.state == "failed" else 0


def _backfill(
    args: argparse.Namespace,
    factory: BackfillFactory,
    out: TextIO,
    err: TextIO,
    sleep: Callable[[float], None],
) -> int:
    if args.platform is None:
        raise EnrichmentError("--platform servicenow|dynamics is required")
    system = _SYSTEMS[args.platform]
    if system == "dataverse" and args.query:
        raise EnrichmentError("--query is for servicenow; dynamics takes --filter ($filter)")
    if system == "servicenow" and args.filter:
        raise EnrichmentError("--filter is for dynamics; servicenow takes --query")
    if args.submit and (args.state or args.report):
        raise EnrichmentError("--submit runs in the app: --state and --report do not apply")
    service = factory(args.state, bool(args.submit))
    spec = _spec(args, service, system)
    service.check(spec)
    if args.submit:
        windows = service.submit(spec)
        print(f"submitted {spec.run_id}: {windows} windows queued", file=out)
        print(f"watch it: python -m triage backfill status {spec.run_id}", file=out)
        return 0
    if service.queue is None and not spec.dry_run:
        print(
            "warning: no Storage configured: claims stay in this process, so a live enrichment "
            "of the same ticket is not seen (set AzureWebJobsStorage for a real run)",
            file=err,
        )
    return _run_here(args, service, spec, out, err, sleep)


def _spec(
    args: argparse.Namespace, service: BackfillService, system: Literal["servicenow", "dataverse"]
) -> BackfillSpec:
    if args.run_id:
        stored = service.store.run_spec(args.run_id)
        if stored is not None:  # resume: the run's own question, whatever else was given
            spec = BackfillSpec.from_stored(stored)
            if spec.system != system:
                raise EnrichmentError(f"run {args.run_id} is a {spec.system} run")
            return spec
    try:
        since, until = time_range(args.since, args.until, service.now())
    except InboundError as exc:
        raise EnrichmentError(f"--{exc}") from None
    try:
        return service.spec(
            system, since, until, by=args.by, query=args.query or args.filter,
            limit=args.limit, dry_run=args.dry_run, origin="cli", run_id=args.run_id,
        )  # fmt: skip
    except ValueError:  # pydantic: a run id or query the spec refuses
        raise EnrichmentError(
            "invalid run: --run-id is letters, digits, . _ - (64 at most); "
            "a query at most 2000 characters"
        ) from None


def _run_here(
    args: argparse.Namespace,
    service: BackfillService,
    spec: BackfillSpec,
    out: TextIO,
    err: TextIO,
    sleep: Callable[[float], None],
) -> int:
    base = service.runners(spec.system)
    if base is None:
        raise EnrichmentError(f"no {spec.system} platform is configured")
    report = None
    if spec.dry_run or args.report:
        report = FileReport(args.report or f"backfill-{spec.run_id}")
    total = len(
        plan_windows(
            spec.since, spec.until, run_id=spec.run_id,
            field=time_field(spec.system, spec.by), target_tickets=spec.window_tickets,
        )
    )  # fmt: skip
    before = service.store.run_status(spec.run_id)
    progress = Progress(
        total, initial=before.counts, quota_used=service.quota_used, stream=err, desc=spec.run_id
    )
    settings = {f.name: getattr(base, f.name) for f in fields(base)}
    settings.update(report=report, progress=progress.page)
    runner = _CountingRunner(**settings, on_window=progress.window)
    try:
        status = run_local(spec, runner, service.store, sleep=sleep)
    except KeyboardInterrupt:
        print(f"\ninterrupted: resume with --run-id {spec.run_id}", file=err)
        return 130
    finally:
        progress.close()
        if report is not None:
            report.close()
    print_summary(status, out)
    if report is not None:
        print(f"report: {report.csv_path} and {report.json_path} ({report.count} rows)", file=out)
    if status.state == "done":
        return 0
    if status.state != "failed":
        print(f"not finished: resume with --run-id {spec.run_id}", file=out)
    return 1


@dataclass
class _CountingRunner(WindowRunner):
    """A ``WindowRunner`` that tells the progress bar when a window ends."""

    on_window: Callable[[WindowOutcome], None] | None = None

    def run(self, spec: BackfillSpec, index: int) -> WindowOutcome:
        outcome = super().run(spec, index)
        if self.on_window is not None:
            self.on_window(outcome)
        return outcome


def print_summary(status: RunStatus, out: TextIO) -> None:
    """Scanned, filled per field, skipped and why, failed and why, failed windows."""
    c: Counts = status.counts
    by = ", ".join(f"{n} {s}" for s, n in sorted(status.by_status.items()))
    print(f"run {status.run_id}: {status.state} ({status.windows} windows: {by})", file=out)
    print(
        f"scanned {c.scanned}, filled {c.filled}, skipped {c.skipped}, failed {c.failed}",
        file=out,
    )
    for kind, title in (("filled", "filled per field"), ("skipped", "skipped, why"),
                        ("failed", "failed, why")):  # fmt: skip
        rows = sorted(c.by_kind(kind).items(), key=lambda kv: (-kv[1], kv[0]))
        if rows:
            print(f"{title}:", file=out)
            width = max(len(k) for k, _ in rows)
            for key, count in rows:
                print(f"  {key.ljust(width)}  {count}", file=out)
    if status.failures:
        print("failed windows:", file=out)
        for index, reason in status.failures[:20]:
            print(f"  window {index}: {reason[:200]}", file=out)
        if len(status.failures) > 20:
            print(f"  ... and {len(status.failures) - 20} more", file=out)


class Progress:
    """The progress bar (tqdm) of a local run: windows done of the total, and as postfix the
    tickets scanned, filled, skipped and failed, the rate, and the quota used when known."""

    def __init__(
        self,
        total: int,
        *,
        initial: Counts,
        quota_used: Callable[[], float] | None,
        stream: TextIO,
        desc: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from tqdm import tqdm

        self.counts = initial
        self._fresh = 0  # tickets scanned by this process (the rate)
        self._quota = quota_used
        self._clock = clock
        self._started = clock()
        # disable=None: no bar when the stream is not a terminal (a log, a pipe, a test)
        self._bar = tqdm(total=total, desc=desc, unit="window", file=stream, disable=None)

    def page(self, delta: Counts) -> None:
        """A page was checkpointed (``WindowRunner.progress``)."""
        self.counts = self.counts + delta
        self._fresh += delta.scanned
        self._bar.set_postfix(self.postfix(), refresh=True)

    def window(self, outcome: WindowOutcome) -> None:
        """A window ended (done or failed) or paused."""
        if outcome.state in ("done", "failed", "missing"):
            self._bar.update(1)

    def postfix(self) -> dict[str, str]:
        """What the bar shows after the windows: counts, tickets per second, quota used."""
        c = self.counts
        elapsed = max(self._clock() - self._started, 1e-9)
        shown = {
            "scanned": str(c.scanned),
            "filled": str(c.filled),
            "skipped": str(c.skipped),
            "failed": str(c.failed),
            "rate": f"{self._fresh / elapsed:.1f}/s",
        }
        if self._quota is not None:
            with suppress(Exception):  # a display must never stop the run
                shown["quota"] = f"{self._quota():.0%}"
        return shown

    def close(self) -> None:
        """End the bar."""
        self._bar.close()
