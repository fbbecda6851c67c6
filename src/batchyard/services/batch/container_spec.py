"""Reading the container parts of Batch bodies: a pool's
`virtualMachineConfiguration.containerConfiguration` and a task's `containerSettings`
(tasks, start, job preparation/release and job manager tasks), with Azure's rules and
Batch's error shapes. `containerRunOptions` are the arguments Azure passes to
`docker create`; the common ones are honoured (see RUN_OPTIONS) and any other is refused
here rather than ignored."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ...runtime.oci_registry import parse_reference
from . import batch_input as bi

CONTAINER_TYPES = ("dockerCompatible", "criCompatible")
WORKING_DIRECTORIES = ("taskWorkingDirectory", "containerImageDefault")
# ContainerHostDataPath -> the directory under AZ_BATCH_NODE_ROOT_DIR it names
# ("Task" is the task's own directory, filled in when the task runs).
HOST_DATA_PATHS = {"Shared": "shared", "Startup": "startup", "VfsMounts": "fsmounts", "Task": None,
                   "JobPrep": None, "Applications": "applications"}
# docker create options honoured: name -> whether it takes a value
RUN_OPTIONS = {"--rm": False, "-e": True, "--env": True, "--env-file": True, "-w": True, "--workdir": True,
               "-u": True, "--user": True, "--entrypoint": True, "--read-only": False}
_CANONICAL = {"-e": "--env", "-w": "--workdir", "-u": "--user"}


@dataclass
class RunOptions:
    env: list[str] = field(default_factory=list)  # KEY=VALUE, or KEY (taken from the task's environment)
    env_files: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    entrypoint: str | None = None  # "" clears the image's
    read_only: bool = False


def _canonical(value: str, allowed: tuple[str, ...], field_: str) -> str:
    for name in allowed:
        if isinstance(value, str) and value.lower() == name.lower():
            return name
    raise bi.invalid(field_, value, f"Allowed values: {', '.join(allowed)}.")


def image_name(value, field_: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bi.missing(field_) if value is None else bi.invalid(field_, value, "A non-empty string is required.")
    try:
        parse_reference(value)
    except ValueError as exc:
        raise bi.invalid(field_, value, f"{exc} (as `docker pull` reads one).") from None
    return value


def registry(body: dict, name: str, field_: str) -> dict | None:
    """ContainerRegistryReference: registryServer (docker.io if omitted) with username and
    password; identityReference needs managed identities, which this service has not."""
    entry = bi.obj(body, name, field_)
    return None if entry is None else login(entry, field_)


def login(entry, field_: str) -> dict:
    if not isinstance(entry, dict):
        raise bi.invalid(field_, entry, "An object is required.")
    if entry.get("identityReference") is not None:
        raise bi.invalid(f"{field_}.identityReference", "...", "Managed identities are not supported here; give "
                                                               "username and password.")
    username = bi.string(entry, "username", f"{field_}.username", required_=True)
    password = bi.string(entry, "password", f"{field_}.password", required_=True)
    server = bi.string(entry, "registryServer", f"{field_}.registryServer") or "docker.io"
    return {"registryServer": server, "username": username, "password": password}


def container_configuration(config: dict, field_: str) -> dict | None:
    body = bi.obj(config, "containerConfiguration", field_)
    if body is None:
        return None
    kind = _canonical(bi.required(body, "type", f"{field_}.type"), CONTAINER_TYPES, f"{field_}.type")
    names = [image_name(value, f"{field_}.containerImageNames[{index}]")
             for index, value in enumerate(bi.array(body, "containerImageNames", f"{field_}.containerImageNames"))]
    registries = []
    for index, entry in enumerate(bi.array(body, "containerRegistries", f"{field_}.containerRegistries")):
        registries.append(login(entry, f"{field_}.containerRegistries[{index}]"))
    out: dict = {"type": kind}
    if names:
        out["containerImageNames"] = names
    if registries:
        out["containerRegistries"] = registries
    return out


def container_settings(body: dict, field_: str) -> dict | None:
    settings = bi.obj(body, "containerSettings", f"{field_}.containerSettings")
    if settings is None:
        return None
    where = f"{field_}.containerSettings"
    out: dict = {"imageName": image_name(settings.get("imageName"), f"{where}.imageName")}
    options = bi.string(settings, "containerRunOptions", f"{where}.containerRunOptions", max_len=8192)
    if options:
        run_options(options, f"{where}.containerRunOptions")
        out["containerRunOptions"] = options
    given = registry(settings, "registry", f"{where}.registry")
    if given is not None:
        out["registry"] = given
    directory = settings.get("workingDirectory")
    out["workingDirectory"] = WORKING_DIRECTORIES[0] if directory is None else \
        _canonical(directory, WORKING_DIRECTORIES, f"{where}.workingDirectory")
    if settings.get("containerHostBatchBindMounts") is not None:
        mounts = []
        for index, entry in enumerate(bi.array(settings, "containerHostBatchBindMounts",
                                               f"{where}.containerHostBatchBindMounts")):
            at = f"{where}.containerHostBatchBindMounts[{index}]"
            if not isinstance(entry, dict):
                raise bi.invalid(at, entry, "An object is required.")
            source = _canonical(bi.required(entry, "source", f"{at}.source"), tuple(HOST_DATA_PATHS), f"{at}.source")
            mounts.append({"source": source,
                           "isReadOnly": bi.boolean(entry, "isReadOnly", f"{at}.isReadOnly", default=False)})
        out["containerHostBatchBindMounts"] = mounts
    return out


def run_options(text: str, field_: str) -> RunOptions:
    """The docker create arguments honoured here; any other is refused, by name."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise bi.invalid(field_, text, f"The options cannot be split as a shell would: {exc}.") from None
    out = RunOptions()
    index = 0
    while index < len(words):
        word = words[index]
        name, has_value, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name not in RUN_OPTIONS:
            raise bi.invalid(field_, word, "Supported container run options: " + ", ".join(RUN_OPTIONS) + "; "
                             f"'{name}' is not supported here.")
        takes = RUN_OPTIONS[name]
        if takes and not has_value:
            index += 1
            if index >= len(words):
                raise bi.invalid(field_, word, f"The option {name} needs a value.")
            value = words[index]
        elif not takes and has_value and value.lower() not in ("true", "false"):
            raise bi.invalid(field_, word, f"The option {name} takes no value.")
        name = _CANONICAL.get(name, name)
        if name == "--env":
            out.env.append(value)
        elif name == "--env-file":
            out.env_files.append(value)
        elif name == "--workdir":
            if not value.startswith("/"):
                raise bi.invalid(field_, word, "The working directory must be an absolute path.")
            out.workdir = value
        elif name == "--user":
            out.user = value
        elif name == "--entrypoint":
            out.entrypoint = value
        elif name == "--read-only":
            out.read_only = value.lower() != "false"
        index += 1  # --rm: a task's container never outlives it anyway
    return out


def withheld(body: dict) -> dict:
    """A body as shown to callers: registry passwords (of a pool's containerRegistries, or a
    task's containerSettings.registry, wherever they are nested) are kept, never shown, as
    Azure shows no secret it was given. Bodies that hold none are returned as they are."""
    return _withheld(body) if _has_login(body) else body


def _has_login(value) -> bool:
    if isinstance(value, dict):
        return "password" in value and "registryServer" in value or any(_has_login(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_login(v) for v in value)
    return False


def _withheld(value):
    if isinstance(value, dict):
        return {k: _withheld(v) for k, v in value.items() if not (k == "password" and "registryServer" in value)}
    if isinstance(value, list):
        return [_withheld(v) for v in value]
    return value
