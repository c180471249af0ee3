"""Connectors: all platform I/O. They move source-native records; mapping lives in triage."""

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
