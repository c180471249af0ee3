"""Each package's public surface is what its __all__ says (httpx's test_exported_members)."""

import importlib
import types

import pytest


@pytest.mark.parametrize(
    "module_name",
    [
        "connectors",
        "enrichers",
        "domain.errors",
        "domain.models",
        "domain.mapping",
        "triage.policy",
    ],
)
def test_all_names_exist_and_public_names_are_listed(module_name):
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    assert exported, f"{module_name} exports nothing"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ lists missing {name}"
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and isinstance(value, type | types.FunctionType)
        and value.__module__ == module_name
    }
    assert public <= exported, f"{module_name} defines public names missing from __all__"


def test_every_error_derives_from_the_one_base():
    import domain.errors as errors

    for name in errors.__all__:
        if name.isupper():
            continue
        assert issubclass(getattr(errors, name), errors.EnrichmentError)
