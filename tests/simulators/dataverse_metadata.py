"""Option set metadata of ``incident`` served by the Dataverse simulator (dataverse.md §2).

``GET /EntityDefinitions(LogicalName='incident')/Attributes/Microsoft.Dynamics.CRM.
PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)`` lists the
choice columns (custom ones added with ``set_choices`` included); ``statecode`` and
``statuscode`` are served under the ``State``/``StatusAttributeMetadata`` casts, as on the
platform (status options carry their ``State``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from tests.simulators import Response
from tests.simulators.dataverse_odata import ODataError
from tests.simulators.dataverse_schema import STATUS_STATE
from tests.simulators.dataverse_store import Store

__all__ = ["option_sets"]

_SELECTS = ("LogicalName", "LogicalName,MetadataId")
_EXPANDS = ("OptionSet", "OptionSet($select=Options)")


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def option_sets(store: Store, api: str, query: Mapping[str, str], kind: str) -> Response:
    """Answer the attribute metadata of cast ``kind`` (Picklist, State or Status)."""
    if query.get("$select", "LogicalName") not in _SELECTS:
        raise ODataError("Only $select=LogicalName is implemented for attribute metadata.")
    if query.get("$expand", "OptionSet") not in _EXPANDS:
        raise ODataError("Only $expand=OptionSet($select=Options) is implemented.")
    special = {"State": ["statecode"], "Status": ["statuscode"]}
    with store.lock:
        names = special.get(kind) or [
            c for c in store.choices if c not in ("statecode", "statuscode")
        ]
        value = [
            _attribute(api, name, kind, store.choices[name], "$expand" in query) for name in names
        ]
    cast = f"Microsoft.Dynamics.CRM.{kind}AttributeMetadata"
    context = f"{api}/$metadata#EntityDefinitions('incident')/Attributes/{cast}"
    return Response(
        200, {"@odata.context": f"{context}(LogicalName,OptionSet(Options))", "value": value}
    )


def _attribute(
    api: str, name: str, kind: str, choices: Mapping[int, str], expand: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {"LogicalName": name, "MetadataId": _id(name)}
    if not expand:
        return out
    options = []
    for value, text in sorted(choices.items()):
        label = {
            "Label": text,
            "LanguageCode": 1033,
            "IsManaged": True,
            "MetadataId": _id(f"{name}/{value}"),
            "HasChanged": None,
        }
        option: dict[str, Any] = {
            "Value": value,
            "Color": None,
            "IsManaged": True,
            "ExternalValue": None,
            "ParentValues": [],
            "Tag": None,
            "Label": {"LocalizedLabels": [label], "UserLocalizedLabel": label},
        }
        if kind == "Status":
            option["State"] = STATUS_STATE[value]
        options.append(option)
    entity = f"EntityDefinitions('incident')/Attributes({out['MetadataId']})"
    out["OptionSet@odata.context"] = (
        f"{api}/$metadata#{entity}/{kind}AttributeMetadata/OptionSet/$entity"
    )
    out["OptionSet"] = {"Options": options, "MetadataId": _id(f"{name}/set")}
    return out
