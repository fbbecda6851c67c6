"""A pool as the management plane spells it (azure-mgmt-batch `Pool`) and as the data plane
does (azure-batch `BatchPool`): the same pool, two shapes.

Requests go one way: an ARM body becomes the data-plane body `pool_spec.py` and `pools.py`
already check, so both planes obey one set of rules. Pools come back the other way: the
stored data-plane body rendered as ARM shows it (PascalCase enums, `properties`,
`scaleSettings`, `resizeOperationStatus`). Errors raised in data-plane terms name the ARM
property instead, and carry ARM's {code, message} details rather than Batch's key/value pairs.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from ...store.resources import Resource
from ..arm_ids import parse_typed
from ..arm_resources import check_tags
from ..errors import InvalidInput, ServiceError
from . import batch_input as bi, container_spec
from .pools import POOL_TYPE, iso

IDENTITY_TYPES = ("UserAssigned", "None")
MANAGED_IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
# Properties fixed when the pool is created: the data-plane name of each, by its ARM name.
FIXED = {"vmSize": "vmSize", "deploymentConfiguration": "virtualMachineConfiguration",
         "networkConfiguration": "networkConfiguration", "taskSlotsPerNode": "taskSlotsPerNode",
         "taskSchedulingPolicy": "taskSchedulingPolicy", "userAccounts": "userAccounts",
         "interNodeCommunication": "enableInterNodeCommunication"}

# Data-plane enum values (lower case) in ARM's spelling.
_PASCAL = {v.lower(): v for v in ("Steady", "Resizing", "Stopping", "Requeue", "Terminate", "TaskCompletion",
                                  "RetainedData", "Spread", "Pack", "TCP", "UDP", "Task", "Pool", "NonAdmin",
                                  "Admin", "Allow", "Deny", "DockerCompatible", "CriCompatible")}


def pascal(value: Any) -> Any:
    return _PASCAL.get(value.lower(), value) if isinstance(value, str) else value


# ARM -> data plane -----------------------------------------------------------------------------

def properties(body: Any) -> dict:
    body = bi.body_object(body)
    props = body.get("properties")
    if props is None:
        return {}
    if not isinstance(props, dict):
        raise bi.invalid("properties", props, "An object is required.")
    return props


def data_plane_body(name: str, props: dict) -> dict:
    """The data-plane create body for an ARM pool's properties: only the keys the ARM body
    gives, so that it also serves an update."""
    spec: dict[str, Any] = {"id": name}
    for same in ("displayName", "vmSize", "taskSlotsPerNode", "metadata", "userAccounts", "mountConfiguration",
                 "upgradePolicy"):
        if same in props:
            spec[same] = props[same]
    if "deploymentConfiguration" in props:
        deployment = bi.obj(props, "deploymentConfiguration") or {}
        spec["virtualMachineConfiguration"] = _vm_configuration(deployment.get("virtualMachineConfiguration"))
        if deployment.get("cloudServiceConfiguration") is not None:
            spec["cloudServiceConfiguration"] = deployment["cloudServiceConfiguration"]
    if "scaleSettings" in props:
        spec.update(scale_request(props.get("scaleSettings")))
    if props.get("interNodeCommunication") is not None:
        spec["enableInterNodeCommunication"] = _inter_node(props["interNodeCommunication"])
    if "networkConfiguration" in props:
        spec["networkConfiguration"] = _network(props["networkConfiguration"])
    if "taskSchedulingPolicy" in props:
        spec["taskSchedulingPolicy"] = props["taskSchedulingPolicy"]
    if "startTask" in props:
        spec["startTask"] = _start_task(props["startTask"])
    if "applicationPackages" in props:
        packages = bi.array(props, "applicationPackages")
        spec["applicationPackageReferences"] = [_renamed(p, {"id": "applicationId"}) for p in packages]
    return spec


def scale_request(settings: Any) -> dict:
    """scaleSettings -> the data plane's flat targets, or its enableAutoScale with the
    formula and evaluation interval."""
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise bi.invalid("scaleSettings", settings, "An object is required.")
    fixed, auto = settings.get("fixedScale"), settings.get("autoScale")
    if fixed is not None and auto is not None:
        raise bi.invalid("scaleSettings", "...", "Give either fixedScale or autoScale, not both.")
    if auto is not None:
        if not isinstance(auto, dict):
            raise bi.invalid("scaleSettings.autoScale", auto, "An object is required.")
        return {"enableAutoScale": True, **{name: auto[key] for key, name in (
            ("formula", "autoScaleFormula"), ("evaluationInterval", "autoScaleEvaluationInterval"))
            if auto.get(key) is not None}}
    if fixed is None:
        return {}
    if not isinstance(fixed, dict):
        raise bi.invalid("scaleSettings.fixedScale", fixed, "An object is required.")
    keys = ("targetDedicatedNodes", "targetLowPriorityNodes", "resizeTimeout", "nodeDeallocationOption")
    return {k: fixed[k] for k in keys if fixed.get(k) is not None}


def _vm_configuration(config: Any) -> Any:
    # what is missing or not an object passes as it is: the data plane's checks say so
    return _renamed_inside(_renamed(config, {"nodeAgentSkuId": "nodeAgentSKUId"}), "imageReference",
                           {"id": "virtualMachineImageId"})


def _network(network: Any) -> Any:
    return _renamed_inside(network, "endpointConfiguration", {"inboundNatPools": "inboundNATPools"})


def _start_task(task: Any) -> Any:
    # ARM removes a pool's start task with "startTask": {}
    if task is None or task == {}:
        return None
    return _renamed_inside(task, "userIdentity", {"userName": "username"})


def _inter_node(value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("enabled", "disabled"):
        return value.lower() == "enabled"
    raise bi.invalid("enableInterNodeCommunication", value, "Allowed values: Enabled, Disabled.")


def _renamed(obj: Any, names: dict[str, str]) -> Any:
    if not isinstance(obj, dict):
        return obj
    return {names.get(k, k): v for k, v in obj.items()}


def _renamed_inside(obj: Any, key: str, names: dict[str, str]) -> Any:
    """A copy of `obj` whose object under `key` has its names changed."""
    if not isinstance(obj, dict) or not isinstance(obj.get(key), dict):
        return obj
    return {**obj, key: _renamed(obj[key], names)}


def identity(value: Any, current: dict | None) -> dict | None:
    """`identity` in the data plane's shape (BatchPoolIdentity). Like the account's
    user-assigned identities, each keeps the client and principal ids it was given."""
    if value is None:
        return current
    if not isinstance(value, dict):
        raise bi.invalid("identity", value, "An object is required.")
    kind = next((t for t in IDENTITY_TYPES if isinstance(value.get("type"), str)
                 and value["type"].lower() == t.lower()), None)
    if kind is None:
        raise bi.invalid("identity.type", value.get("type"), "Allowed values: UserAssigned, None.")
    if kind == "None":
        return {"type": "None"}
    given = value.get("userAssignedIdentities")
    if not isinstance(given, dict) or not given:
        raise bi.invalid("identity.userAssignedIdentities", given,
                         "A UserAssigned identity needs at least one user-assigned identity resource id.")
    before = {i["resourceId"].lower(): i for i in (current or {}).get("userAssignedIdentities", [])}
    chosen = []
    for resource_id in given:
        try:
            parse_typed(resource_id, MANAGED_IDENTITY_TYPE, "identity.userAssignedIdentities")
        except ServiceError:
            raise bi.invalid("identity.userAssignedIdentities", resource_id,
                             f"Keys must be resource ids of {MANAGED_IDENTITY_TYPE}.") from None
        known = before.get(resource_id.lower(), {})
        chosen.append({"resourceId": resource_id, "clientId": known.get("clientId") or str(uuid.uuid4()),
                       "principalId": known.get("principalId") or str(uuid.uuid4())})
    return {"type": "UserAssigned", "userAssignedIdentities": chosen}


def tags(body: dict, current: dict | None) -> dict | None:
    return check_tags(body["tags"]) if "tags" in body else current


# data plane -> ARM -----------------------------------------------------------------------------

def arm_etag(etag: str) -> str:
    return f'W/"{etag}"'


def plain_etags(header: str | None) -> str | None:
    """If-Match / If-None-Match as the SDK sends them back (W/"0x...") -> the data plane's."""
    if header is None:
        return None
    return ",".join(tag.strip().removeprefix("W/").strip('"') for tag in header.split(","))


def render(pool: Resource) -> dict:
    body = container_spec.withheld(pool.body)
    props: dict[str, Any] = {
        "displayName": body.get("displayName"),
        "lastModified": body["lastModified"],
        "creationTime": body["creationTime"],
        "provisioningState": "Deleting" if body["state"] == "deleting" else "Succeeded",
        "provisioningStateTransitionTime": body["stateTransitionTime"],
        "allocationState": pascal(body["allocationState"]),
        "allocationStateTransitionTime": body["allocationStateTransitionTime"],
        "vmSize": body["vmSize"].upper(),
        "deploymentConfiguration": {"virtualMachineConfiguration": _arm_vm_configuration(
            body["virtualMachineConfiguration"])},
        "currentDedicatedNodes": body["currentDedicatedNodes"],
        "currentLowPriorityNodes": body["currentLowPriorityNodes"],
        "scaleSettings": _scale_settings(body),
        "autoScaleRun": _auto_scale_run(body.get("autoScaleRun")),
        "interNodeCommunication": "Enabled" if body.get("enableInterNodeCommunication") else "Disabled",
        "networkConfiguration": _arm_network(body.get("networkConfiguration")),
        "taskSlotsPerNode": body["taskSlotsPerNode"],
        "taskSchedulingPolicy": {"nodeFillType": pascal(body["taskSchedulingPolicy"]["nodeFillType"])},
        "userAccounts": body.get("userAccounts") or None,
        "metadata": body.get("metadata") or None,
        "startTask": _arm_start_task(body.get("startTask")),
        "applicationPackages": [_renamed(p, {"applicationId": "id"})
                                for p in body.get("applicationPackageReferences", [])] or None,
        "resizeOperationStatus": _resize_status(pool),
    }
    view = {"id": pool.id, "name": pool.name, "type": POOL_TYPE, "etag": arm_etag(body["eTag"]),
            "properties": {k: v for k, v in props.items() if v is not None}}
    if body.get("identity"):
        view["identity"] = _arm_identity(body["identity"])
    if pool.internal.get("tags"):
        view["tags"] = pool.internal["tags"]
    return view


def _arm_vm_configuration(config: dict) -> dict:
    out = _renamed(config, {"nodeAgentSKUId": "nodeAgentSkuId"})
    out["imageReference"] = _renamed(config["imageReference"], {"virtualMachineImageId": "id"})
    if config.get("containerConfiguration"):
        # ARM's ContainerType is PascalCase (DockerCompatible), the data plane's camelCase
        containers = config["containerConfiguration"]
        out["containerConfiguration"] = {**containers, "type": pascal(containers["type"])}
    return out


def _arm_network(network: dict | None) -> dict | None:
    if not network:
        return None
    out = dict(network)
    endpoint = network.get("endpointConfiguration")
    if endpoint:
        out["endpointConfiguration"] = {"inboundNatPools": [
            {**nat, "protocol": pascal(nat["protocol"]),
             "networkSecurityGroupRules": [{**rule, "access": pascal(rule.get("access"))}
                                           for rule in nat.get("networkSecurityGroupRules", [])]}
            for nat in endpoint.get("inboundNATPools", [])]}
    return out


def _arm_start_task(task: dict | None) -> dict | None:
    if not task:
        return None
    auto = task["userIdentity"]["autoUser"]
    return {**task, "userIdentity": {"autoUser": {"scope": pascal(auto["scope"]),
                                                  "elevationLevel": pascal(auto["elevationLevel"])}}}


def _resize_status(pool: Resource) -> dict:
    body, resize = pool.body, pool.internal.get("resize", {})
    status = {"targetDedicatedNodes": body["targetDedicatedNodes"],
              "targetLowPriorityNodes": body["targetLowPriorityNodes"],
              "resizeTimeout": body["resizeTimeout"],
              "nodeDeallocationOption": pascal(resize.get("deallocation", "requeue"))}
    if resize.get("started"):
        status["startTime"] = iso(datetime.fromtimestamp(resize["started"], UTC))
    errors = body.get("resizeErrors") or []
    if errors:
        status["errors"] = [{"code": e["code"], "message": e["message"],
                             "details": [{"code": v.get("name"), "message": v.get("value")}
                                         for v in e.get("values", [])]} for e in errors]
    return status


def _arm_identity(value: dict) -> dict:
    if value["type"] == "None":
        return {"type": "None"}
    return {"type": "UserAssigned", "userAssignedIdentities": {
        i["resourceId"]: {"principalId": i["principalId"], "clientId": i["clientId"]}
        for i in value["userAssignedIdentities"]}}


_SELECT = re.compile(r"properties/([A-Za-z][A-Za-z0-9]*)")


def select(view: dict, text: str | None) -> dict:
    """$select: top-level properties under properties/, as the management plane allows."""
    if text is None or not text.strip():
        return view
    wanted = set()
    for name in (n.strip() for n in text.split(",")):
        match = _SELECT.fullmatch(name)
        if match is None:
            raise InvalidInput("InvalidQueryParameterValue",
                               f"The $select value '{name}' is invalid: only top-level properties under "
                               "properties/ can be selected, e.g. properties/allocationState.", target="$select")
        wanted.add(match[1])
    out = {k: view[k] for k in ("id", "name", "type")}
    out["properties"] = {k: v for k, v in view["properties"].items() if k in wanted}
    return out


def _scale_settings(body: dict) -> dict:
    if body.get("enableAutoScale"):
        return {"autoScale": {"formula": body["autoScaleFormula"],
                              "evaluationInterval": body["autoScaleEvaluationInterval"]}}
    return {"fixedScale": {k: body[k] for k in ("targetDedicatedNodes", "targetLowPriorityNodes", "resizeTimeout")}}


def _auto_scale_run(run: dict | None) -> dict | None:
    """The data plane's run in ARM's shape: evaluationTime, and an error whose details are
    errors too."""
    if run is None:
        return None
    shaped = {"evaluationTime": run["timestamp"], "results": run.get("results")}
    error = run.get("error")
    if error:
        shaped["error"] = {"code": error["code"], "message": error["message"],
                           "details": [{"code": v["name"], "message": v["value"]} for v in error.get("values", [])]}
    return shaped


# errors ----------------------------------------------------------------------------------------

# Data-plane property paths (prefixes) and what ARM calls them, most specific first.
_FIELDS = [
    ("virtualMachineConfiguration.imageReference.virtualMachineImageId",
     "deploymentConfiguration.virtualMachineConfiguration.imageReference.id"),
    ("virtualMachineConfiguration.nodeAgentSKUId", "deploymentConfiguration.virtualMachineConfiguration.nodeAgentSkuId"),
    ("virtualMachineConfiguration", "deploymentConfiguration.virtualMachineConfiguration"),
    ("networkConfiguration.endpointConfiguration.inboundNATPools",
     "networkConfiguration.endpointConfiguration.inboundNatPools"),
    ("startTask.userIdentity.username", "startTask.userIdentity.userName"),
    ("targetDedicatedNodes", "scaleSettings.fixedScale.targetDedicatedNodes"),
    ("targetLowPriorityNodes", "scaleSettings.fixedScale.targetLowPriorityNodes"),
    ("resizeTimeout", "scaleSettings.fixedScale.resizeTimeout"),
    ("nodeDeallocationOption", "scaleSettings.fixedScale.nodeDeallocationOption"),
    ("autoScaleFormula", "scaleSettings.autoScale.formula"),
    ("autoScaleEvaluationInterval", "scaleSettings.autoScale.evaluationInterval"),
    ("enableAutoScale", "scaleSettings.autoScale"),
    ("enableInterNodeCommunication", "interNodeCommunication"),
    ("applicationPackageReferences", "applicationPackages"),
]


def arm_field(field: str) -> str:
    if field == "id":
        return "poolName"
    if field.split(".")[0] in ("identity", "tags", "properties"):  # named in ARM's terms already
        return field
    for data_name, arm_name in _FIELDS:
        if field == data_name or field.startswith(data_name + ".") or field.startswith(data_name + "["):
            return "properties." + arm_name + field[len(data_name):]
    return "properties." + field


def arm_error(error: ServiceError) -> ServiceError:
    """The same error, in ARM's terms: the property it names is the ARM one (also as the
    target), the reason joins the message, and the details are ARM's {code, message}."""
    values = {d["key"]: d["value"] for d in error.details if isinstance(d, dict) and "key" in d}
    if not values:
        return error
    target = error.target
    if "PropertyName" in values:
        values["PropertyName"] = target = arm_field(values["PropertyName"])
    message = error.message
    if values.get("Reason"):
        message = f"{message} {values['Reason']}"
    if target and "PropertyName" in values:
        message = f"{message} (property '{target}')"
    return type(error)(error.code, message, target=target,
                       details=[{"code": k, "message": v} for k, v in values.items()])
