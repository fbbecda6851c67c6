"""Application packages installed on a node, as Azure's node agent installs them: the zip
is fetched from the auto-storage account and unpacked into
`AZ_BATCH_NODE_ROOT_DIR/applications/{application}{version}`, and tasks see
`AZ_BATCH_APP_PACKAGE_{application}_{version}` (and, when the reference named no version so
the default was used, `AZ_BATCH_APP_PACKAGE_{application}`) pointing there. On Linux the
names are lower-cased and `.`, `-` and `#` become `_` (Azure's example: application
`Agent-linux-x64` version `1.1.46.0` is `AZ_BATCH_APP_PACKAGE_agent_linux_x64_1_1_46_0`).

Pool packages are installed when a node joins (before its start task) and are seen by every
task on it; task packages before the task runs. A package stays installed until its zip
changes (its blob's ETag, kept in a marker file). Unpacking goes through the node's file
service (runtime/machine_files.py, which follows no link): entries that climb out (`..`,
absolute names) are refused and symbolic links in the zip are not unpacked.
"""

from __future__ import annotations

import re
import stat
import tempfile
import zipfile
from pathlib import Path

from azure.core.exceptions import AzureError

from ...runtime.machine_files import MachineFiles
from ..errors import Conflict, NotFound
from .applications import Applications, Package
from .auto_storage import AutoStorage
from .storage_files import TransferFailed

NODE_ROOT = "/mnt/batch/tasks"
APPS_REL = "batch/tasks/applications"  # below the temporary disk
MARKER = ".batchyard-package"
MARKER_BYTES = 1024  # far more than an etag


def variable_part(text: str) -> str:
    return re.sub(r"[.\-#]", "_", text).lower()


def directory_name(package: Package) -> str:
    return f"{package.application.lower()}{package.version}"


def variables(package: Package) -> dict[str, str]:
    path = f"{NODE_ROOT}/applications/{directory_name(package)}"
    env = {f"AZ_BATCH_APP_PACKAGE_{variable_part(package.application)}_{variable_part(package.version)}": path}
    if package.default:
        env[f"AZ_BATCH_APP_PACKAGE_{variable_part(package.application)}"] = path
    return env


class PackageInstaller:
    def __init__(self, applications: Applications, auto_storage: AutoStorage, scratch: Path):
        self.applications = applications
        self.auto_storage = auto_storage
        self.scratch = scratch

    def _resolve(self, account: str, reference: dict) -> Package:
        try:
            return self.applications.resolve(account, reference["applicationId"], reference.get("version"))
        except (NotFound, Conflict) as exc:
            raise TransferFailed("ApplicationPackageError", "A required application package could not be deployed.",
                                 {"ApplicationId": reference["applicationId"], "Version": reference.get("version"),
                                  "Reason": exc.message}) from None

    def environment(self, account: str, references: list[dict]) -> dict[str, str]:
        """The variables of the packages the references name now (those still resolvable)."""
        env: dict[str, str] = {}
        for reference in references:
            try:
                env.update(variables(self._resolve(account, reference)))
            except TransferFailed:
                continue
        return env

    def install(self, account: str, references: list[dict], node: MachineFiles) -> dict[str, str]:
        """Installs what is missing; the variables of them all. Raises TransferFailed."""
        env: dict[str, str] = {}
        for reference in references:
            package = self._resolve(account, reference)
            rel = f"{APPS_REL}/{directory_name(package)}"
            if self._installed_etag(node, rel) != package.etag:
                self._unpack(account, package, node, rel)
            env.update(variables(package))
        return env

    @staticmethod
    def _installed_etag(node: MachineFiles, rel: str) -> str | None:
        """The etag the marker holds; a task may have replaced it with anything (a terabyte's
        sparse file, say), so no more than an etag's worth is read."""
        try:
            _, handle = node.open_file(f"{rel}/{MARKER}")
            with handle:
                return handle.read(MARKER_BYTES).decode("utf-8", "replace").strip()
        except OSError:
            return None

    def _unpack(self, account: str, package: Package, node: MachineFiles, rel: str) -> None:
        failure = {"ApplicationId": package.application, "Version": package.version}
        try:
            storage = self.auto_storage.of(account)
        except Conflict as exc:
            raise TransferFailed("ApplicationPackageError", "A required application package could not be deployed.",
                                 {**failure, "Reason": exc.message}) from None
        blob = storage.container(package.container).get_blob_client(package.blob)
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.scratch) as scratch:
            try:
                blob.download_blob(max_concurrency=1).readinto(scratch)
                scratch.seek(0)
                node.remove_tree(rel)
                node.make_dirs(rel)
                with zipfile.ZipFile(scratch) as archive:
                    for info in archive.infolist():
                        _extract(archive, info, node, rel)
                node.write(f"{rel}/{MARKER}", [package.etag.encode()])
            except (AzureError, OSError, zipfile.BadZipFile, ValueError) as exc:
                raise TransferFailed("ApplicationPackageError", "A required application package could not be "
                                     "deployed.", {**failure, "Reason": str(exc).splitlines()[0][:300]}) from None


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, node: MachineFiles, rel: str) -> None:
    name = info.filename.replace("\\", "/")
    unix_mode = info.external_attr >> 16
    if stat.S_ISLNK(unix_mode):
        return  # links could point anywhere on the node: not unpacked
    if name.startswith("/"):
        raise ValueError(f"the zip entry '{name}' is an absolute path")
    if info.is_dir():
        node.make_dirs(f"{rel}/{name}")
        return
    # Every task user reads the package (it is installed by root); zips made on Windows carry
    # no Unix mode, and the programs in them must still run.
    mode = (unix_mode & 0o777 | 0o444) if unix_mode & 0o777 else 0o755
    with archive.open(info) as source:
        node.write(f"{rel}/{name}", iter(lambda: source.read(1024 * 1024), b""), mode=mode)
