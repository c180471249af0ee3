"""Connectors: all platform I/O. They move source-native records; mapping lives in triage."""

from connectors._auth import ServiceNowOAuth, TokenProvider
from connectors.base import Connector, SourceRecord
from connectors.servicenow import ServiceNowConnector, build_servicenow_connector

__all__ = [
    "Connector",
    "ServiceNowConnector",
    "ServiceNowOAuth",
    "SourceRecord",
    "TokenProvider",
    "build_servicenow_connector",
]
