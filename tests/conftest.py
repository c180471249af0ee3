"""Shared fixtures. The Azurite harness lives in tests/azurite.py."""

pytest_plugins = ["tests.azurite"]
