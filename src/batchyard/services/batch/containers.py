"""What Azure's node agent does for containers: pull a container pool's images on each node
before it is idle, and run a task that has `containerSettings` in a container of its image,
as `docker create` with Batch's options would.

As Azure documents for Linux: the task's command line is the container's command (after
the image's ENTRYPOINT, unless `--entrypoint`); every task environment variable is mapped
into the container, over the image's own; AZ_BATCH_NODE_ROOT_DIR is bound in at its own
path, read-write (or only the `containerHostBatchBindMounts` the task names); the working
directory is the task's (`taskWorkingDirectory`) or the image's (`containerImageDefault`);
the container runs as the image's user unless `--user` says otherwise.

Errors use Azure's codes: an image that cannot be had is `ContainerInvalidImage` ("One or
more container images specified are invalid"), settings that cannot be honoured
`ContainerInvalidSettings`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ...runtime.container_images import ContainerImage
from ...runtime.oci_registry import Login, parse_reference, same_registry
from ...runtime.provider import ContainerRun, MachineError, MachineProvider
from . import container_spec

NODE_ROOT = "/mnt/batch/tasks"
INVALID_IMAGE = ("ContainerInvalidImage", "One or more container images specified are invalid")
INVALID_SETTINGS = ("ContainerInvalidSettings", "At least one value of specified task container settings is invalid")
# A process's whole environment must fit in Linux's argument space (a quarter of an 8 MiB
# stack, and 128 KiB a string): a larger file is a mistake, and is not read into memory.
MAX_ENV_FILE_BYTES = 1 << 20


class ContainerFailure(Exception):
    """A container task could not start: `failure_info` says why, as Azure does."""

    def __init__(self, code_message: tuple[str, str], reason: str):
        super().__init__(reason)
        self.code, self.message = code_message

    def failure_info(self) -> dict:
        return {"category": "usererror", "code": self.code, "message": self.message,
                "details": [{"name": "Message", "value": str(self)[:500]}]}

    def node_error(self) -> dict:
        return {"code": self.code, "message": self.message,
                "errorDetails": [{"name": "Message", "value": str(self)[:500]}]}


@dataclass(frozen=True)
class Launch:
    """How the runner starts a container command."""
    argv: list[str]
    env: dict[str, str]
    cwd: str
    container: ContainerRun


def pool_containers(pool_body: dict) -> dict | None:
    return (pool_body.get("virtualMachineConfiguration") or {}).get("containerConfiguration")


def login_for(image: str, pool_body: dict, task_registry: dict | None = None) -> Login | None:
    """The task's own registry login, else the pool's for the image's registry, else none."""
    registry = parse_reference(image).registry
    for entry in ([task_registry] if task_registry else []) + list(
            (pool_containers(pool_body) or {}).get("containerRegistries") or []):
        if same_registry(entry.get("registryServer") or "docker.io", registry):
            return Login(entry["username"], entry["password"])
    return None


def pull(provider: MachineProvider, machine_key: str, image: str, login: Login | None) -> ContainerImage:
    try:
        return provider.pull_image(machine_key, image, login)
    except MachineError as exc:
        raise ContainerFailure(INVALID_IMAGE, f"{image}: {exc}") from None


def prefetch(provider: MachineProvider, machine_key: str, pool_body: dict) -> None:
    """The pool's containerImageNames on the node's host (pulled once per host); raises
    ContainerFailure for the first that cannot be had."""
    for image in (pool_containers(pool_body) or {}).get("containerImageNames") or []:
        pull(provider, machine_key, image, login_for(image, pool_body))


def launch(provider: MachineProvider, machine_key: str, pool_body: dict, spec: dict, env: dict[str, str],
           task_dir: str, job_prep_dir: str | None = None) -> Launch:
    """The container command for a task spec with containerSettings; pulls its image if
    the host lacks it. Raises ContainerFailure."""
    settings = spec["containerSettings"]
    if pool_containers(pool_body) is None:
        raise ContainerFailure(INVALID_SETTINGS, "The pool has no containerConfiguration: tasks with "
                               "containerSettings need a container pool.")
    options = container_spec.run_options(settings.get("containerRunOptions") or "", "containerRunOptions")
    image = pull(provider, machine_key, settings["imageName"],
                 login_for(settings["imageName"], pool_body, settings.get("registry")))
    variables = dict(item.split("=", 1) if "=" in item else (item, "") for item in image.env)
    variables.update(env)
    for path in options.env_files:
        variables.update(_env_file(provider, machine_key, path))
    for item in options.env:
        name, has_value, value = item.partition("=")
        if has_value:
            variables[name] = value
        elif name in env:
            variables[name] = env[name]
    entrypoint = list(image.entrypoint) if options.entrypoint is None else \
        ([options.entrypoint] if options.entrypoint else [])
    command = shlex.split(spec["commandLine"]) if spec.get("commandLine", "").strip() else list(image.cmd)
    argv = entrypoint + command
    if not argv:
        raise ContainerFailure(INVALID_SETTINGS, "The task has no command line and its image no command.")
    if options.workdir:
        cwd = options.workdir
    elif settings.get("workingDirectory") == "containerImageDefault":
        cwd = image.working_dir or "/"
    else:
        cwd = f"{task_dir}/wd"
    binds = _binds(settings.get("containerHostBatchBindMounts"), task_dir, job_prep_dir)
    return Launch(argv, variables, cwd, ContainerRun(image, binds, options.read_only,
                                                    options.user or image.user or "0"))


def _binds(mounts: list | None, task_dir: str, job_prep_dir: str | None) -> tuple[tuple[str, bool], ...]:
    if mounts is None:
        return ((NODE_ROOT, False),)
    where = {"Task": task_dir, "JobPrep": job_prep_dir}
    out = []
    for entry in mounts:
        sub = container_spec.HOST_DATA_PATHS[entry["source"]]
        path = f"{NODE_ROOT}/{sub}" if sub else where[entry["source"]]
        if path:
            out.append((path, bool(entry.get("isReadOnly"))))
    return tuple(out)


def _env_file(provider: MachineProvider, machine_key: str, path: str) -> dict[str, str]:
    """`--env-file`: a file of the node's (under AZ_BATCH_NODE_ROOT_DIR, where Batch puts a
    task's files), KEY=VALUE lines; `#` comments and blank lines skipped, as Docker reads it."""
    if not path.startswith(NODE_ROOT + "/") or "/../" in path + "/":
        raise ContainerFailure(INVALID_SETTINGS, f"--env-file {path}: the file must be under {NODE_ROOT}")
    try:
        data = b""
        for chunk in provider.files(machine_key).read(path.removeprefix("/mnt/")):
            data += chunk
            if len(data) > MAX_ENV_FILE_BYTES:
                raise ValueError(f"the file is larger than {MAX_ENV_FILE_BYTES} bytes")
        text = data.decode()
    except (OSError, MachineError, UnicodeDecodeError, ValueError) as exc:
        raise ContainerFailure(INVALID_SETTINGS, f"--env-file {path}: {exc}") from None
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value
    return out
