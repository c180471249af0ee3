"""Shared fixtures and the hypothesis profiles. The Azurite harness lives in tests/azurite.py.

Profiles (``HYPOTHESIS_PROFILE=deep make test`` for a longer hunt):

* ``ci`` (default): bounded example counts so the property suites run in seconds, derandomised
  so CI never flakes on a newly found example (a new find shows up in ``deep`` runs instead).
* ``deep``: 20x the examples, random seeds, for a hunt before a release.
"""

import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.azurite"]

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep",
    max_examples=6000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _logging_enabled() -> Iterator[None]:
    """Benches run in-process silence logging (``logging.disable``) for their figures; a test
    after them must still see every record (caplog)."""
    yield
    logging.disable(logging.NOTSET)
