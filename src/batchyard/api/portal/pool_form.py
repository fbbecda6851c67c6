"""The "Add pool" form of the guide, read into the body `POST /pools` takes, and the
service's validation errors placed next to the field they are about. Values go to the
service as typed (numbers as strings, which Batch reads as Azure does), so every rule and
every message is the service's own."""

from __future__ import annotations

from ...services.errors import ServiceError

# the guide's labels; Azure's portal now calls the Shared Image choice "Azure Compute Gallery"
IMAGE_TYPES = [("marketplace", "Marketplace"), ("custom", "Custom Image (Linux/Windows)"),
               ("gallery", "Shared Image (Azure Compute Gallery)")]

# where the service's PropertyName (or the start of it) lands in the form
_FIELD_OF = {"id": "pool_id", "vmsize": "vm_size", "targetdedicatednodes": "target_dedicated",
             "targetlowprioritynodes": "target_low_priority", "resizetimeout": "resize_timeout",
             "starttask": "start_task", "tasksslotspernode": "task_slots", "taskslotspernode": "task_slots",
             "maxtaskspernode": "task_slots", "virtualmachineconfiguration": "image",
             "imagereference": "image", "virtualmachineimageid": "image", "nodeagentskuid": "image_sku"}


def pool_body(form: dict[str, str], skus: list[dict]) -> dict:
    """skus: the supported images, in the order the form's Publisher/Offer/Sku choices index."""
    body: dict = {"id": form.get("pool_id", "").strip(), "vmSize": form.get("vm_size", "").strip()}
    chosen = _chosen_sku(form.get("image_sku", ""), skus)
    config: dict = {"nodeAgentSKUId": chosen["nodeAgentSKUId"] if chosen else ""}
    kind = form.get("image_type", "marketplace")
    if kind == "custom":
        config["imageReference"] = {"virtualMachineImageId": form.get("custom_image", "").strip()}
    elif kind == "gallery":
        config["imageReference"] = {"virtualMachineImageId": form.get("gallery_image", "").strip()}
    else:
        config["imageReference"] = dict(chosen["imageReference"]) if chosen else {}
    body["virtualMachineConfiguration"] = config
    body.update(resize_body(form))
    if form.get("task_slots", "").strip():
        body["taskSlotsPerNode"] = form["task_slots"].strip()
    command = form.get("start_task", "").strip()
    if command:
        body["startTask"] = {"commandLine": command, "waitForSuccess": form.get("start_task_wait") == "on"}
    return body


def resize_body(form: dict[str, str]) -> dict:
    """The node targets and resize timeout (minutes, or an ISO 8601 duration) the Add and
    Resize forms share, as `POST /pools/{id}/resize` takes them."""
    body = {name: form[field].strip() for name, field in (("targetDedicatedNodes", "target_dedicated"),
                                                          ("targetLowPriorityNodes", "target_low_priority"))
            if form.get(field, "").strip()}
    minutes = form.get("resize_timeout", "").strip()
    if minutes:
        body["resizeTimeout"] = f"PT{minutes}M" if minutes.isascii() and minutes.isdigit() else minutes
    return body


def _chosen_sku(value: str, skus: list[dict]) -> dict | None:
    # ASCII digits, and few: "²".isdigit() is true, and int() refuses it and 4,300 digits
    return skus[int(value)] if value.isascii() and value.isdigit() and len(value) <= 9 and int(value) < len(skus) \
        else None


def field_errors(exc: ServiceError) -> dict[str, str]:
    """{form field: message}; what names no field goes under "" (shown above the form)."""
    message = exc.message
    values = {d.get("key"): d.get("value") for d in exc.details if isinstance(d, dict)}
    reason = values.get("Reason")
    if reason and reason not in message:
        message = f"{message} {reason}"
    shown = f"{exc.code}: {message}"
    name = str(values.get("PropertyName") or "")
    for part in reversed(name.replace("/", ".").split(".")):
        field = _FIELD_OF.get(part.lower())
        if field:
            return {field: shown}
    if exc.code == "InsufficientPermissions" or "image" in message.lower():
        return {"image": shown}
    return {"": shown}
