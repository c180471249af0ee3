"""Connectors: all platform and Storage I/O. They move source-native records; the mapping to
canonical labels lives in ``domain``."""

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
