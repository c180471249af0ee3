"""Where the worker reads an admin mapping from: a path, or an https URL (blob storage)."""

from __future__ import annotations

from pathlib import PurePosixPath

from connectors.blob import fetch_text, remote_name
from domain.mapping import FieldMapping, load_mapping, parse_mapping

__all__ = ["load_mapping_from"]


def load_mapping_from(location: str | None) -> FieldMapping:
    """Load a mapping from a local path or an ``https://`` URL (``None``: the embedded default).

    A remote mapping may reference a built-in taxonomy by name (``taxonomy: customer_service``);
    errors name the file, never the URL (its query string may be a SAS token).
    """
    if location is None or not location.startswith(("https://", "http://")):
        return load_mapping(location)
    remote = fetch_text(location)
    name = remote_name(location)
    return parse_mapping(remote.text, name=name, json_format=PurePosixPath(name).suffix == ".json")
