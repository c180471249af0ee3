"""Connectors: all platform and Storage I/O. They move source-native records; the mapping to
canonical labels lives in ``domain``.

The exports are loaded on first use (PEP 562), so importing one connector module (``connectors
.base``, ``connectors.queue``) does not pull in every platform client and msal: that keeps the
Functions host's cold start down.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors._auth import ServiceNowOAuth, TokenProvider
    from connectors._msal import MsalTokenProvider
    from connectors.base import Connector, SourceRecord
    from connectors.dataverse import DataverseConnector, build_dataverse_connector
    from connectors.servicenow import ServiceNowConnector, build_servicenow_connector

__all__ = [
    "Connector",
    "DataverseConnector",
    "MsalTokenProvider",
    "ServiceNowConnector",
    "ServiceNowOAuth",
    "SourceRecord",
    "TokenProvider",
    "build_dataverse_connector",
    "build_servicenow_connector",
]

_WHERE = {
    "Connector": "connectors.base",
    "SourceRecord": "connectors.base",
    "ServiceNowOAuth": "connectors._auth",
    "TokenProvider": "connectors._auth",
    "MsalTokenProvider": "connectors._msal",
    "DataverseConnector": "connectors.dataverse",
    "build_dataverse_connector": "connectors.dataverse",
    "ServiceNowConnector": "connectors.servicenow",
    "build_servicenow_connector": "connectors.servicenow",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'connectors' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
