"""Resource files downloaded into a node and output files uploaded from it, as Azure Batch's
node agent moves them. Nodes live in private networks that reach only the service, so the
service's host process does the transfers, writing and reading the node's tree through its
file service (runtime/machine_files.py: no link is followed, so a task cannot steer them).

Sources of resource files (exactly one per entry, as Azure requires):
- `httpUrl`: one file, saved as `filePath` (required);
- `storageContainerUrl` (a container SAS URL, or a container of a storage account this
  service knows, for `identityReference`) and `autoStorageContainerName` (a container of
  the Batch account's auto-storage account): every blob, or those starting with
  `blobPrefix`, saved under the directory `filePath` (default: the working directory) with
  their blob names as paths.
`fileMode` (octal, default 0770 as on Azure's Linux nodes) is given to every file.

Everything streams: a download writes each block (4 MiB) as it comes, an upload reads a
block at a time (larger files go as a block list), so no file is ever held in memory.
Transient failures (connection errors, timeouts, 408, 429, 5xx) are retried with backoff by
azure-core's retry policies. Failures carry Azure's TaskFailureInformation codes
(BlobNotFound, BlobAccessDenied, BlobDownloadTimedOut, BlobDownloadMiscError,
ResourceContainerAccessDenied, ResourceContainerListMiscError, FileUploadAccessDenied,
FileUploadContainerNotFound, FileUploadMiscError) with the
blob's URL (never its SAS) and the HTTP status in the details.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.blob import BlobClient, ContainerClient, ContentSettings, ExponentialRetry

from ...private_files import private_dir, private_opener
from ...runtime.machine_files import MachineFiles
from ..storage_accounts import TRANSFER_OPTIONS, StorageAccount, StorageAccounts
from . import file_patterns

log = logging.getLogger("batchyard.batch")

DEFAULT_FILE_MODE = 0o770  # Azure's default for resource files on Linux nodes
HTTP_RETRIES = 4
BLOCK = 1024 * 1024
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
CLIENT_OPTIONS = {**TRANSFER_OPTIONS, "connection_timeout": 20, "read_timeout": 120,
                  "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=HTTP_RETRIES)}
CONTENT_HEADERS = {"content-type": "content_type", "x-ms-blob-content-type": "content_type",
                   "content-encoding": "content_encoding", "x-ms-blob-content-encoding": "content_encoding",
                   "content-language": "content_language", "x-ms-blob-content-language": "content_language",
                   "content-disposition": "content_disposition",
                   "x-ms-blob-content-disposition": "content_disposition",
                   "cache-control": "cache_control", "x-ms-blob-cache-control": "cache_control"}


class TransferFailed(Exception):
    """A failed transfer, as the task's failureInfo will tell it."""

    def __init__(self, code: str, message: str, details: dict[str, str]):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details

    def failure_info(self) -> dict:
        return {"category": "usererror", "code": self.code, "message": self.message,
                "details": [{"name": k, "value": v} for k, v in self.details.items() if v is not None]}


def without_sas(url: str) -> str:
    return url.split("?", 1)[0]


@dataclass(frozen=True)
class NodePlace:
    """Where files go on a node: its file service (runtime/machine_files.py, which never
    follows a link the task made) and a directory below its temporary disk (e.g.
    batch/tasks/workitems/job/job-1/task/wd), with the owner new files get."""
    files: MachineFiles
    directory: str
    uid: int | None = None
    gid: int | None = None

    def fill(self, rel: str, mode: int, source: Iterable[bytes]) -> None:
        """The file rel made and written from `source` a block at a time. The source's own
        errors come out as _SourceFailed; OSError is the node's: _NotCreated before the
        first block was asked for, the OSError itself after."""
        started = False

        def blocks() -> Iterator[bytes]:
            nonlocal started
            started = True
            try:
                yield from source
            except Exception as exc:
                raise _SourceFailed(exc) from exc

        try:
            self.files.write(f"{self.directory}/{rel}", blocks(), self.uid, self.gid, mode)
        except OSError as exc:
            if not started:
                raise _NotCreated(exc) from exc
            raise


class _SourceFailed(Exception):
    """The download (not the node) failed while a file was being written."""

    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


class _NotCreated(Exception):
    """The node could not make the file (Azure's ResourceFileCreateFailed)."""

    def __init__(self, cause: OSError):
        super().__init__(str(cause))
        self.reason = cause.strerror or str(cause)


class Transfers:
    def __init__(self, storage: StorageAccounts, auto_storage: Callable[[str], StorageAccount]):
        self.storage = storage
        self.auto_storage = auto_storage  # Batch account name -> its auto-storage account

    # resource files ---------------------------------------------------------------------------

    def download_all(self, account: str, resource_files: list[dict], place: NodePlace) -> None:
        """Every resource file into place; raises TransferFailed at the first that fails."""
        for item in resource_files:
            mode = int(item["fileMode"], 8) if item.get("fileMode") else DEFAULT_FILE_MODE
            if item.get("httpUrl"):
                owner = self.storage.owner_of(item["httpUrl"])
                if owner is not None and "?" not in item["httpUrl"]:  # identityReference: the account's key
                    blob = BlobClient.from_blob_url(item["httpUrl"], credential=owner.credential, **CLIENT_OPTIONS)
                    self._download_blob(blob, item["filePath"], mode, place)
                else:
                    self._download_url(item["httpUrl"], item["filePath"], mode, place)
                continue
            container = self._source_container(account, item)
            for blob in self._list(container, item.get("blobPrefix")):
                target = posixpath.join(item["filePath"], blob) if item.get("filePath") else blob
                self._download_blob(container.get_blob_client(blob), target, mode, place)

    def _source_container(self, account: str, item: dict) -> ContainerClient:
        if item.get("autoStorageContainerName"):
            try:
                storage = self.auto_storage(account)
            except Exception as exc:  # the account's auto-storage went away since the task was added
                raise TransferFailed("ResourceContainerAccessDenied", str(exc),
                                     {"ContainerName": item["autoStorageContainerName"]}) from None
            return storage.container(item["autoStorageContainerName"], **CLIENT_OPTIONS)
        return self.container_client(item["storageContainerUrl"])

    def container_client(self, url: str) -> ContainerClient:
        """A container by URL: with its SAS, or (no SAS: an identityReference, which here is
        honoured for the storage accounts this service knows) with that account's key."""
        owner = self.storage.owner_of(url)
        credential = owner.credential if owner is not None and "?" not in url else None
        return ContainerClient.from_container_url(url, credential=credential, **CLIENT_OPTIONS)

    @staticmethod
    def _list(container: ContainerClient, prefix: str | None) -> Iterator[str]:
        try:
            names = [b.name for b in container.list_blobs(name_starts_with=prefix or None)]
        except HttpResponseError as exc:
            code = "ResourceContainerAccessDenied" if exc.status_code in (401, 403) else \
                "ResourceContainerListMiscError"
            raise TransferFailed(code, "The blobs of the resource files' container could not be listed.",
                                 _http_details(without_sas(container.url), exc)) from None
        except AzureError as exc:
            raise TransferFailed("ResourceContainerListMiscError", "The blobs of the resource files' container "
                                 "could not be listed.", {"ContainerUrl": without_sas(container.url),
                                                          "Reason": _reason(exc)}) from None
        yield from (n for n in names if not n.endswith("/"))  # directory markers are not files

    def _download_blob(self, blob: BlobClient, target: str, mode: int, place: NodePlace) -> None:
        shown = without_sas(blob.url)
        try:
            place.fill(target, mode, _blob_blocks(blob))
        except _SourceFailed as failed:
            exc = failed.cause
            if isinstance(exc, HttpResponseError):
                raise TransferFailed(*_download_code(exc.status_code), _http_details(shown, exc, target)) from None
            if isinstance(exc, AzureError):
                raise TransferFailed("BlobDownloadTimedOut" if "timed out" in str(exc).lower()
                                     else "BlobDownloadMiscError", "A resource file could not be downloaded.",
                                     {"BlobUrl": shown, "FilePath": target, "Reason": _reason(exc)}) from None
            raise exc from None
        except _NotCreated as exc:
            raise _not_created(shown, target, exc) from None
        except OSError as exc:
            raise _not_written(shown, target, exc) from None

    def _download_url(self, url: str, target: str, mode: int, place: NodePlace) -> None:
        """Any http(s) URL, streamed; transient failures are retried from the start."""
        shown = without_sas(url)
        for attempt in range(HTTP_RETRIES + 1):
            try:
                place.fill(target, mode, url_blocks(url))
                return
            except _SourceFailed as failed:
                exc = failed.cause
                if isinstance(exc, urllib.error.HTTPError):
                    if exc.code not in TRANSIENT_STATUS or attempt == HTTP_RETRIES:
                        raise TransferFailed(*_download_code(exc.code), {"BlobUrl": shown, "FilePath": target,
                                                                         "HttpStatusCode": str(exc.code),
                                                                         "Reason": str(exc.reason)}) from None
                elif isinstance(exc, (urllib.error.URLError, TimeoutError, ConnectionError)):
                    if attempt == HTTP_RETRIES:
                        code = "BlobDownloadTimedOut" if "timed out" in str(exc).lower() else "BlobDownloadMiscError"
                        raise TransferFailed(code, "A resource file could not be downloaded.",
                                             {"BlobUrl": shown, "FilePath": target, "Reason": _reason(exc)}) from None
                elif isinstance(exc, OSError):
                    raise _not_written(shown, target, exc) from None
                else:
                    raise exc from None
            except _NotCreated as exc:
                raise _not_created(shown, target, exc) from None
            except OSError as exc:
                raise _not_written(shown, target, exc) from None
            time.sleep(min(8.0, 0.5 * 2 ** attempt))

    # output files -----------------------------------------------------------------------------

    def upload(self, spec: dict, node: MachineFiles, node_root: str, working_dir: str, env: dict[str, str],
               own_store: Callable[[str], Path | None]) -> None:
        """One outputFiles entry. `own_store(containerUrl)` gives the directory of this
        service's own output container the URL names, or None for Azure Storage."""
        container = spec["destination"]["container"]
        selection = file_patterns.select(spec["filePattern"], working_dir, node_root, env)
        if selection is None:
            return
        base_rel = selection.base.removeprefix("/mnt/")
        if selection.regex is None:
            files = [(base_rel, None)]
        else:
            try:
                found = file_patterns.walk(node, base_rel, selection.regex)
            except OSError:
                return  # no such directory: nothing matches
            files = [(f"{base_rel}/{rel}", rel) for rel in found]
        local = own_store(container["containerUrl"])
        client = None if local is not None else self._destination(container["containerUrl"])
        for source, relative in files:
            name = file_patterns.blob_name(selection, relative, container.get("path"))
            try:
                status, handle = node.open_file(source)
            except FileNotFoundError:
                continue  # a single file that the task did not make: nothing to upload
            except OSError as exc:
                raise TransferFailed("FileUploadMiscError", "An output file could not be read on the node.",
                                     {"FilePath": "/mnt/" + source, "Reason": exc.strerror or str(exc)}) from None
            with handle:
                if local is not None:
                    _copy_to_own_store(handle, local, name)
                else:
                    self._upload_blob(client, handle, status.size, name, container.get("uploadHeaders", []),
                                      "/mnt/" + source)

    def _destination(self, url: str) -> ContainerClient:
        try:
            return self.container_client(url)
        except (ValueError, AzureError) as exc:
            raise TransferFailed("FileUploadMiscError", "The output container URL is not usable.",
                                 {"ContainerUrl": without_sas(url), "Reason": _reason(exc)}) from None

    @staticmethod
    def _upload_blob(container: ContainerClient, handle, size: int, name: str, headers: list[dict],
                     source: str) -> None:
        settings, metadata, extra = upload_headers(headers)
        blob = container.get_blob_client(name)
        try:
            blob.upload_blob(handle, length=size, overwrite=True, max_concurrency=1,
                             content_settings=settings, metadata=metadata or None,
                             **({"headers": extra} if extra else {}))
        except HttpResponseError as exc:
            raise TransferFailed(_upload_failure_code(exc), "An output file could not be uploaded.",
                                 _http_details(without_sas(blob.url), exc, source)) from None
        except AzureError as exc:
            raise TransferFailed("FileUploadMiscError", "An output file could not be uploaded.",
                                 {"BlobUrl": without_sas(blob.url), "FilePath": source,
                                  "Reason": _reason(exc)}) from None


def _upload_failure_code(exc: HttpResponseError) -> str:
    """Azure's TaskFailureInformationCodes for an upload the storage service refused."""
    if exc.status_code == 403:
        return "FileUploadAccessDenied"  # e.g. a SAS without write permission
    if exc.status_code == 404 and exc.error_code == "ContainerNotFound":
        return "FileUploadContainerNotFound"
    return "FileUploadMiscError"


def upload_headers(pairs: list[dict]) -> tuple[ContentSettings | None, dict, dict]:
    """uploadHeaders -> (content settings, x-ms-meta-* metadata, other headers)."""
    content: dict[str, str] = {}
    metadata: dict[str, str] = {}
    extra: dict[str, str] = {}
    for pair in pairs:
        name, value = pair["name"], pair.get("value", "")
        lower = name.lower()
        if lower in CONTENT_HEADERS:
            content[CONTENT_HEADERS[lower]] = value
        elif lower.startswith("x-ms-meta-"):
            metadata[name[len("x-ms-meta-"):]] = value
        else:
            extra[name] = value
    return (ContentSettings(**content) if content else None), metadata, extra


def _copy_to_own_store(handle, directory: Path, name: str) -> None:
    destination = directory / name
    private_dir(destination.parent)
    with open(destination, "wb", opener=private_opener) as out:
        shutil.copyfileobj(handle, out, 1024 * 1024)


def _blob_blocks(blob: BlobClient) -> Iterator[bytes]:
    """A blob's content, a block at a time (the request made when the first is asked for)."""
    yield from blob.download_blob(max_concurrency=1).chunks()


def url_blocks(url: str) -> Iterator[bytes]:
    """An http(s) URL's body, a block at a time."""
    with urllib.request.urlopen(url, timeout=60) as response:
        while block := response.read(BLOCK):
            yield block


def _not_created(shown: str, target: str, exc: _NotCreated) -> TransferFailed:
    return TransferFailed("ResourceFileCreateFailed", "The node could not create a local file for a resource file.",
                          {"BlobUrl": shown, "FilePath": target, "Reason": exc.reason})


def _not_written(shown: str, target: str, exc: OSError) -> TransferFailed:
    return TransferFailed("ResourceFileWriteFailed", "A resource file could not be written on the node.",
                          {"BlobUrl": shown, "FilePath": target, "Reason": exc.strerror or str(exc)})


def _download_code(status: int | None) -> tuple[str, str]:
    if status == 404:
        return "BlobNotFound", "A resource file required for the task does not exist."
    if status in (401, 403):
        return "BlobAccessDenied", "Access was denied when downloading a resource file required for the task."
    return "BlobDownloadMiscError", "A resource file required for the task could not be downloaded."


def _http_details(url: str, exc: HttpResponseError, path: str | None = None) -> dict[str, str | None]:
    return {"BlobUrl": url, "FilePath": path, "HttpStatusCode": str(exc.status_code),
            "StorageErrorCode": getattr(exc, "error_code", None), "Reason": exc.reason}


def _reason(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0][:300]
