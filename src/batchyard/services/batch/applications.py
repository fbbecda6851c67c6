"""Batch applications and application packages (Microsoft.Batch/batchAccounts/applications
and .../applications/{app}/versions), kept as Azure keeps them: a package's zip lives in the
Batch account's auto-storage account. Creating a package answers a write SAS for its blob
(`storageUrl`), the client uploads the zip there, and `activate` checks it is a zip and
makes the version usable. The data plane lists the applications with their active versions.

`applicationPackageReferences` on pools and tasks name an application (on pools Azure wants
its full ARM id; its name alone is accepted too, as tasks use it) and optionally a version;
without one the application's `defaultVersion` is used. A reference that cannot be
satisfied is refused as Azure refuses it: 409 InvalidApplicationPackageReferences, with one
detail per bad reference.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import threading
import uuid
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from ...store.resources import Resource, ResourceStore
from ..arm_ids import ResourceId, parse
from ..arm_resources import now_iso, optional_object, require_object
from ..errors import Conflict, InvalidInput, NotFound
from ..storage_accounts import StorageAccount
from . import batch_input as bi
from .accounts import ACCOUNT_TYPE, BatchAccounts
from .auto_storage import AutoStorage
from .pools import new_etag

APPLICATION_TYPE = ACCOUNT_TYPE + "/applications"
PACKAGE_TYPE = APPLICATION_TYPE + "/versions"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
VERSION = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_REFERENCES = 10
UPLOAD_SAS_LIFETIME = timedelta(hours=4)  # Azure's storageUrl is valid for a few hours too


@dataclass(frozen=True)
class Package:
    """An active package a node can install."""
    application: str  # as the application's name is written
    version: str
    container: str
    blob: str
    etag: str  # of the activated blob: a node keeps an installed package until this changes
    default: bool  # chosen as the application's default version (the reference named none)


def _check_name(name: str, pattern: re.Pattern, what: str) -> None:
    if not pattern.fullmatch(name):
        raise InvalidInput("InvalidParameter", f"The {what} name '{name}' is invalid: it may hold letters, digits, "
                           "hyphens and underscores" + (" and periods" if pattern is VERSION else "") +
                           ", at most 64 characters.", target=what)


def package_container(account: str, application: str) -> str:
    """The auto-storage container of an application's packages (3-63 lower-case letters,
    digits and single hyphens, as container names must be)."""
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", application.lower())).strip("-")[:40] or "app"
    digest = hashlib.sha256(f"{account.lower()}/{application.lower()}".encode()).hexdigest()[:12]
    return f"app-{slug}-{digest}"


class Applications:
    def __init__(self, store: ResourceStore, accounts: BatchAccounts, auto_storage: AutoStorage, scratch: Path):
        self.store = store
        self.accounts = accounts
        self.auto_storage = auto_storage
        self.scratch = scratch  # where a zip is checked at activation
        self._lock = threading.RLock()

    # ARM: applications ------------------------------------------------------------------------

    def _account(self, rid: ResourceId) -> Resource:
        return self.accounts.get(rid.parent if rid.type.lower() == APPLICATION_TYPE.lower() else rid.parent.parent)

    def get(self, rid: ResourceId) -> Resource:
        self._account(rid)
        found = self.store.get(str(rid))
        if found is None:
            raise NotFound("ApplicationNotFound", f"The specified application '{rid.name}' does not exist.")
        return found

    def list(self, account_rid: ResourceId) -> list[Resource]:
        self.accounts.get(account_rid)
        prefix = str(account_rid).lower() + "/applications/"
        return [r for r in self.store.list(type=APPLICATION_TYPE, subscription=account_rid.subscription,
                                           resource_group=account_rid.resource_group)
                if r.id.lower().startswith(prefix)]

    def create(self, rid: ResourceId, body: Any) -> Resource:
        """PUT: a new application, or the existing one's settings replaced."""
        _check_name(rid.name, NAME, "application")
        props = optional_object(optional_object(body, "body").get("properties"), "properties")
        with self.accounts.writing(self.accounts.get(rid.parent)), self._lock:
            existing = self.store.get(str(rid))
            settings = self._settings(rid, props, {}, patch=False)
            if existing is not None:
                existing.properties.clear()
                existing.properties.update(settings)
                existing.body["etag"] = new_etag()
                return self.store.put(existing)
            resource = Resource(id=str(rid), type=rid.type, subscription=rid.subscription,
                                resource_group=rid.resource_group, name=rid.name,
                                body={"id": str(rid), "name": rid.name, "type": rid.type, "etag": new_etag(),
                                      "properties": settings})
            return self.store.put(resource)

    def update(self, rid: ResourceId, body: Any) -> Resource:
        props = optional_object(require_object(body, "body").get("properties"), "properties")
        with self._lock:
            app = self.get(rid)
            app.properties.update(self._settings(rid, props, app.properties, patch=True))
            app.body["etag"] = new_etag()
            return self.store.put(app)

    def _settings(self, rid: ResourceId, props: dict, current: dict, patch: bool) -> dict:
        out = {} if patch else {"allowUpdates": True}
        if "displayName" in props:
            out["displayName"] = bi.string(props, "displayName", "properties.displayName")
        if props.get("allowUpdates") is not None:
            out["allowUpdates"] = bi.boolean(props, "allowUpdates", "properties.allowUpdates")
        if props.get("defaultVersion") is not None:
            version = bi.string(props, "defaultVersion", "properties.defaultVersion")
            package = self.store.get(str(rid.child("versions", version)))
            if package is None:
                raise Conflict("ApplicationPackageNotFound", f"The default version '{version}' is not a package of "
                               f"application '{rid.name}'.", target="properties.defaultVersion")
            out["defaultVersion"] = package.name
        return out

    def delete(self, rid: ResourceId) -> bool:
        with self._lock:
            self._account(rid)
            app = self.store.get(str(rid))
            if app is None:
                return False
            for package in self.packages(rid):
                self._delete_package(package)
            self.store.delete(app.id)
            return True

    def delete_all(self, account: Resource) -> None:
        """The account is going: so are its applications, with their packages."""
        for app in self.list(parse(account.id)):
            self.delete(parse(app.id))

    # ARM: packages ----------------------------------------------------------------------------

    def packages(self, app_rid: ResourceId) -> list[Resource]:
        self.get(app_rid)
        prefix = str(app_rid).lower() + "/versions/"
        return [r for r in self.store.list(type=PACKAGE_TYPE, subscription=app_rid.subscription,
                                           resource_group=app_rid.resource_group)
                if r.id.lower().startswith(prefix)]

    def get_package(self, rid: ResourceId) -> Resource:
        self.get(rid.parent)
        found = self.store.get(str(rid))
        if found is None:
            raise NotFound("ApplicationPackageNotFound", f"The specified application package '{rid.parent.name}' "
                           f"version '{rid.name}' does not exist.")
        return found

    def create_package(self, rid: ResourceId, body: Any) -> Resource:
        """A version awaiting its zip: state Pending, until activated."""
        _check_name(rid.name, VERSION, "version")
        account = self.accounts.get(rid.parent.parent)
        with self.accounts.writing(account), self._lock:
            app = self.get(rid.parent)
            storage = self.auto_storage.of(account)
            existing = self.store.get(str(rid))
            if existing is not None and not app.properties.get("allowUpdates", True):
                raise Conflict("ApplicationPackageAlreadyExists", f"The application '{app.name}' does not allow "
                               f"updates, and version '{rid.name}' already exists.")
            container = package_container(account.name, app.name)
            try:
                storage.container(container).create_container()
            except ResourceExistsError:
                pass
            except AzureError as exc:
                raise Conflict("AutoStorageUnavailable", "The auto-storage account could not be reached: "
                               f"{str(exc).splitlines()[0][:200]}") from None
            if existing is not None:
                self._delete_blob(storage, existing)
            blob = f"{app.name.lower()}-{rid.name}-{uuid.uuid4()}.zip"
            resource = existing or Resource(id=str(rid), type=rid.type, subscription=rid.subscription,
                                            resource_group=rid.resource_group, name=rid.name, body={})
            resource.body = {"id": str(rid), "name": rid.name, "type": rid.type, "etag": new_etag(),
                             "properties": {"state": "Pending"}}
            resource.internal = {"container": container, "blob": blob}
            return self.store.put(resource)

    def package_view(self, package: Resource) -> dict:
        """The wire body: a fresh SAS for the package's blob (read and write, as Azure's)."""
        view = dict(package.body)
        props = dict(package.properties)
        try:
            storage = self.auto_storage.of(self.accounts.get(parse(package.id).parent.parent))
            url, expiry = storage.blob_sas(package.internal["container"], package.internal["blob"], "rw",
                                           UPLOAD_SAS_LIFETIME)
            props.update({"storageUrl": url, "storageUrlExpiry": expiry.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
        except Conflict:
            pass  # the account lost its auto-storage: the package is listed without a URL
        view["properties"] = props
        return view

    def activate(self, rid: ResourceId, body: Any) -> Resource:
        fmt = bi.string(require_object(body, "body"), "format", "format", required_=True)
        if fmt.lower() != "zip":
            raise InvalidInput("InvalidParameter", "The only package format is 'zip'.", target="format")
        with self._lock:
            package = self.get_package(rid)
            storage = self.auto_storage.of(self.accounts.get(rid.parent.parent))
            etag = self._check_zip(storage, package)
            package.properties.update({"state": "Active", "format": "zip", "lastActivationTime": now_iso()})
            package.internal["blob_etag"] = etag
            package.body["etag"] = new_etag()
            return self.store.put(package)

    def _check_zip(self, storage: StorageAccount, package: Resource) -> str:
        """The blob's ETag once its content reads as a zip archive (streamed to a scratch file)."""
        blob = storage.container(package.internal["container"]).get_blob_client(package.internal["blob"])
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.scratch) as scratch:
            try:
                downloader = blob.download_blob(max_concurrency=1)
                downloader.readinto(scratch)
            except ResourceNotFoundError:
                raise Conflict("ApplicationPackageBlobNotFound", "The application package's zip has not been "
                               "uploaded to its storageUrl.") from None
            except AzureError as exc:
                raise Conflict("AutoStorageUnavailable", "The application package's zip could not be read: "
                               f"{str(exc).splitlines()[0][:200]}") from None
            scratch.seek(0)
            try:
                with zipfile.ZipFile(scratch) as archive:
                    broken = archive.testzip()
            except zipfile.BadZipFile:
                broken = "(not a zip archive)"
            if broken is not None:
                raise Conflict("InvalidApplicationPackageFormat", "The uploaded application package is not a valid "
                               f"zip archive: {broken}.")
            return downloader.properties.etag

    def delete_package(self, rid: ResourceId) -> bool:
        with self._lock:
            self.get(rid.parent)
            package = self.store.get(str(rid))
            if package is None:
                return False
            app = self.get(rid.parent)
            if (app.properties.get("defaultVersion") or "").lower() == rid.name.lower():
                app.properties.pop("defaultVersion")
                self.store.put(app)
            self._delete_package(package)
            return True

    def _delete_package(self, package: Resource) -> None:
        try:
            self._delete_blob(self.auto_storage.of(self.accounts.get(parse(package.id).parent.parent)), package)
        except Conflict:
            pass
        self.store.delete(package.id)

    @staticmethod
    def _delete_blob(storage: StorageAccount, package: Resource) -> None:
        try:
            storage.container(package.internal["container"]).delete_blob(package.internal["blob"])
        except AzureError:
            pass  # never uploaded, or already gone

    # data plane ---------------------------------------------------------------------------------

    def data_plane_list(self, account_name: str) -> list[dict]:
        apps = self.list(parse(self.accounts.by_name(account_name).id))
        return [self._data_plane_view(app) for app in apps]

    def _account_app(self, account_name: str, name: str) -> tuple[Resource, Resource | None]:
        """The account, and its application of that name in any case (None if it has none),
        read by its id: one row, whatever the number of applications. A name holding a /
        would name another resource (a package's id is its application's and more)."""
        account = self.accounts.by_name(account_name)
        if not name or "/" in name:
            return account, None
        app = self.store.get(str(parse(account.id).child("applications", name)))
        return account, app if app is not None and app.type.lower() == APPLICATION_TYPE.lower() else None

    def data_plane_get(self, account_name: str, application_id: str) -> dict:
        _, app = self._account_app(account_name, application_id)
        if app is None:
            raise NotFound("ApplicationNotFound", "The specified application does not exist.")
        return self._data_plane_view(app)

    def _data_plane_view(self, app: Resource) -> dict:
        versions = [p.name for p in self.packages(parse(app.id)) if p.properties.get("state") == "Active"]
        return {"id": app.name, "displayName": app.properties.get("displayName") or app.name, "versions": versions}

    # references -------------------------------------------------------------------------------

    def check_references(self, account_name: str, body: dict, field: str = "applicationPackageReferences") -> list:
        """applicationPackageReferences, each resolvable now; the wire form as given."""
        given = bi.array(body, "applicationPackageReferences", field, max_items=MAX_REFERENCES)
        out, bad = [], []
        for index, item in enumerate(given):
            where = f"{field}[{index}]"
            if not isinstance(item, dict):
                raise bi.invalid(where, item, "An object with applicationId is required.")
            app_id = bi.string(item, "applicationId", f"{where}.applicationId", required_=True)
            version = bi.string(item, "version", f"{where}.version")
            try:
                self.resolve(account_name, app_id, version)
            except NotFound as exc:
                bad.append({"key": app_id + (f":{version}" if version else ""), "value": exc.message})
            out.append({"applicationId": app_id, **({"version": version} if version else {})})
        if bad:
            raise Conflict("InvalidApplicationPackageReferences", "One or more of the specified application package "
                           "references are invalid.", details=bad)
        return out

    def resolve(self, account_name: str, app_id: str, version: str | None) -> Package:
        """The active package a reference names now (NotFound saying why otherwise)."""
        name = app_id.rsplit("/applications/", 1)[-1] if "/applications/" in app_id.lower() else app_id
        account, app = self._account_app(account_name, name)
        if "/" in app_id and not app_id.lower().startswith(account.id.lower() + "/applications/"):
            raise NotFound("ApplicationNotFound", f"The application '{app_id}' is not in this Batch account.")
        if app is None:
            raise NotFound("ApplicationNotFound", f"The application '{name}' does not exist.")
        chosen = version or app.properties.get("defaultVersion")
        if not chosen:
            raise NotFound("ApplicationPackageNotFound", f"No version was given and the application '{app.name}' "
                           "has no default version.")
        package = self.store.get(str(parse(app.id).child("versions", chosen)))
        if package is None or package.properties.get("state") != "Active":
            raise NotFound("ApplicationPackageNotFound", f"The application '{app.name}' has no active version "
                           f"'{chosen}'.")
        return Package(app.name, package.name, package.internal["container"], package.internal["blob"],
                       package.internal.get("blob_etag", ""), default=version is None)
