"""Pick up a changed admin mapping without a redeploy.

The worker's service is built once from settings; the mapping files it read are watched. At most
every ``check_every_s`` seconds (on the next invocation, no timer needed) the files' identity —
size and modification time of a path, the ETag of an https (blob) URL — is compared with what
the service was built from. When it
changed, the service is rebuilt; in-flight invocations finish on the old one, later ones use
the new one, so no invocation mixes two mappings. A new mapping that fails validation is refused
with one clear log line (once per change) and the last valid one stays in use: the worker never
writes with a broken mapping, and never stops because an admin saved a typo.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping

from domain.errors import ConfigError
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH

__all__ = ["DEFAULT_CHECK_EVERY_S", "MappingWatch", "mapping_files"]

log = logging.getLogger(__name__)

DEFAULT_CHECK_EVERY_S = 30.0


def mapping_files(env: Mapping[str, str]) -> list[str]:
    """The admin mapping files a worker built from ``env`` reads (embedded defaults excluded:
    they change only with a deploy)."""
    names = ("ENRICH_MAPPING_PATH", "ENRICH_DATAVERSE_MAPPING_PATH")
    return [env[n] for n in names if env.get(n) and env[n] != str(DYNAMICS_DEFAULT_MAPPING_PATH)]


def _identity(paths: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for path in paths:
        if path.startswith("https://"):
            from connectors.blob import remote_version  # requests: only for a blob mapping

            out.append((path, remote_version(path)))  # blob: its ETag (a HEAD request)
            continue
        try:
            st = os.stat(path)
        except OSError:
            out.append((path, "gone"))  # a change too (the rebuild then names the error)
            continue
        out.append((path, f"{st.st_size}:{st.st_mtime_ns}"))
    return tuple(out)


class MappingWatch:
    """Tells the service provider when to rebuild: the watched files changed since the build."""

    def __init__(
        self,
        paths: Callable[[], list[str]],
        *,
        check_every_s: float = DEFAULT_CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._paths = paths
        self._every = check_every_s
        self._clock = clock
        self._built_from: tuple[tuple[str, str], ...] | None = None
        self._refused: tuple[tuple[str, str], ...] | None = None
        self._checked_at = float("-inf")

    def built(self) -> None:
        """Record the files' identity at (just before) a successful build."""
        self._built_from = _identity(self._paths())
        self._checked_at = self._clock()

    def changed(self) -> bool:
        """Whether a rebuild is due: the files changed since the build and were not refused."""
        now = self._clock()
        if now - self._checked_at < self._every or self._built_from is None:
            return False
        self._checked_at = now
        current = _identity(self._paths())
        return current != self._built_from and current != self._refused

    def refused(self, exc: ConfigError) -> None:
        """The changed files failed validation: log once, keep the service built before."""
        self._refused = _identity(self._paths())
        log.error("the changed admin mapping is refused; the previous one stays in use: %s", exc)
