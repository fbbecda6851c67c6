"""Azure RBAC: role assignments at subscription, resource-group and resource scope, and the
check of a caller's effective permissions at a scope, evaluated as Azure does:

- an assignment applies at its scope and everything below it;
- a permission block allows an operation when one of its `actions` (or `dataActions`)
  matches and none of its `notActions` (`notDataActions`) does; `*` matches any run of
  characters, `/` included, without regard to case;
- management actions and data actions are separate: `*` in actions grants no data action.

Callers are bearer-token principals (their object id) or, on the Batch data plane, the
account itself through its shared key, which may do anything in the account (as in Azure).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from .. import defaults
from ..store.db import Database
from .errors import Conflict, Forbidden, InvalidInput, NotFound
from .role_definitions import BATCH_ACCOUNT_CONTRIBUTOR, BUILT_IN, BY_ID, OWNER, RoleDefinition

ASSIGNMENTS = "Microsoft.Authorization/roleAssignments"
MANAGED_IMAGE_ACTION = "Microsoft.Compute/images/read"
# what Azure Batch needs on a gallery image (definition or version) to make nodes from it
GALLERY_IMAGE_ACTION = "Microsoft.Compute/disks/beginGetAccess/action"
_BOOTSTRAPPED = "development_principal_roles"


@dataclass(frozen=True)
class Caller:
    """Who makes a request: `mode` is "AAD" (a bearer token) or "SharedKey"."""
    mode: str
    object_id: str | None = None
    client_id: str | None = None

    @classmethod
    def bearer(cls, claims: dict) -> "Caller":
        return cls("AAD", str(claims.get("oid", "")).lower(), str(claims.get("appid") or claims.get("azp") or ""))

    @classmethod
    def shared_key(cls) -> "Caller":
        return cls("SharedKey")

    def record(self) -> dict:
        """As kept with what acts later on the caller's behalf (a job schedule, a pool's growth)."""
        return {"mode": self.mode, "object_id": self.object_id, "client_id": self.client_id}

    @classmethod
    def from_record(cls, record: dict | None) -> "Caller":
        """A recorded caller; none recorded is the account itself (its shared key)."""
        if not isinstance(record, dict):
            return cls.shared_key()
        return cls(record["mode"], record.get("object_id"), record.get("client_id"))


@lru_cache(maxsize=1024)
def _pattern(permission: str) -> re.Pattern:
    return re.compile("^" + ".*".join(re.escape(p) for p in permission.split("*")) + "$", re.IGNORECASE)


def permits(patterns: tuple[str, ...], operation: str) -> bool:
    return any(_pattern(p).match(operation) for p in patterns)


def role_allows(role: RoleDefinition, operation: str, data: bool) -> bool:
    allow, deny = (role.data_actions, role.not_data_actions) if data else (role.actions, role.not_actions)
    return permits(allow, operation) and not permits(deny, operation)


def normalize_scope(scope: str) -> str:
    scope = "/" + "/".join(p for p in scope.split("/") if p)
    return scope


def covers(assignment_scope: str, target: str) -> bool:
    """An assignment at `assignment_scope` applies at `target` (the same or below it)."""
    a, t = assignment_scope.lower().rstrip("/"), target.lower().rstrip("/")
    return a == "" or t == a or t.startswith(a + "/")


class Authorization:
    def __init__(self, db: Database, identity, groups):
        self.db = db
        self.identity = identity  # principals, to refuse assignments to unknown ones
        self.groups = groups  # subscriptions and resource groups named by scopes

    # the check -----------------------------------------------------------------------------

    def allowed(self, object_id: str | None, operation: str, scope: str, data: bool = False) -> bool:
        if not object_id:
            return False
        for row in self.db.query("SELECT scope, role_definition FROM role_assignments WHERE principal_id = ?",
                                 (object_id.lower(),)):
            role = BY_ID.get(row["role_definition"])
            if role and covers(row["scope"], scope) and role_allows(role, operation, data):
                return True
        return False

    def has_role_within(self, object_id: str | None, scope: str) -> bool:
        """Whether any of the principal's assignments applies at or below `scope` (ARM lists a
        subscription to whoever has a role anywhere in it)."""
        rows = self.db.query("SELECT scope FROM role_assignments WHERE principal_id = ?", ((object_id or "").lower(),))
        return any(covers(r["scope"], scope) or covers(scope, r["scope"]) for r in rows)

    def require(self, caller: Caller, action: str, scope: str) -> None:
        """ARM's 403 for a management action the caller may not perform."""
        if caller.mode == "SharedKey" or self.allowed(caller.object_id, action, scope):
            return
        raise Forbidden(
            "AuthorizationFailed",
            f"The client '{caller.client_id}' with object id '{caller.object_id}' does not have authorization to "
            f"perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently "
            "granted, please refresh your credentials.")

    def require_principal_admin(self, caller: Caller, tenant_id: str, verb: str) -> None:
        """Managing service principals. Entra ID keeps this for directory roles; here it is
        for whoever may manage role assignments (`roleAssignments/{verb}`) on a subscription
        of the tenant: Owner and User Access Administrator, not Contributor."""
        action = f"{ASSIGNMENTS}/{verb}"
        scopes = [f"/subscriptions/{s['subscriptionId']}" for s in self.groups.subscriptions(tenant_id)]
        for scope in scopes:
            if self.allowed(caller.object_id, action, scope):
                return
        self.require(caller, action, scopes[0] if scopes else "/")

    def may_use_image(self, caller: Caller, image_id: str, gallery: bool = False) -> bool:
        """Whether a pool may be made from the image for the caller: a managed image needs
        its read permission; a gallery image the right to read its disks (Azure Batch's
        documented requirement; Reader's */read does not carry it)."""
        action = GALLERY_IMAGE_ACTION if gallery else MANAGED_IMAGE_ACTION
        return caller.mode == "SharedKey" or self.allowed(caller.object_id, action, image_id)

    # role definitions ----------------------------------------------------------------------

    def definitions(self, scope: str, odata_filter: str | None = None) -> list[dict]:
        roles = list(BUILT_IN)
        if odata_filter:
            match = re.fullmatch(r"\s*roleName\s+eq\s+'([^']*)'\s*", odata_filter, re.IGNORECASE)
            kind = re.fullmatch(r"\s*type\s+eq\s+'([^']*)'\s*", odata_filter, re.IGNORECASE)
            if match:
                roles = [r for r in roles if r.name.lower() == match[1].lower()]
            elif kind:
                roles = roles if kind[1].lower() == "builtinrole" else []
            else:
                raise _bad_filter(odata_filter, "roleName eq '{name}'", "type eq 'BuiltInRole'")
        return [r.wire(_scope_prefix(scope)) for r in roles]

    def definition(self, scope: str, role_id: str) -> dict:
        role = BY_ID.get(role_id.lower())
        if role is None:
            raise NotFound("RoleDefinitionDoesNotExist", f"The specified role definition with ID '{role_id}' does "
                                                         "not exist.")
        return role.wire(_scope_prefix(scope))

    # role assignments ----------------------------------------------------------------------

    def create_assignment(self, scope: str, name: str, body, caller: Caller) -> tuple[dict, bool]:
        scope = self._check_scope(scope)
        name = _assignment_name(name)
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict):
            raise InvalidInput("InvalidRequestContent", "The request content must have 'properties' with "
                                                        "'roleDefinitionId' and 'principalId'.")
        role_id = str(properties.get("roleDefinitionId") or "").rstrip("/").split("/")[-1].lower()
        if role_id not in BY_ID:
            raise InvalidInput("RoleDefinitionDoesNotExist", f"The specified role definition with ID '{role_id}' "
                                                             "does not exist.")
        principal_id = str(properties.get("principalId") or "").lower()
        if self.identity.by_object_id(principal_id) is None:
            raise InvalidInput("PrincipalNotFound", f"Principal {principal_id.replace('-', '')} does not exist in "
                                                    f"the directory {defaults.TENANT_ID}. Check that you have the "
                                                    "correct principal ID.")
        principal_type = str(properties.get("principalType") or "ServicePrincipal")
        with self.db.transaction():
            existing = self._row(name)
            if existing is not None:
                same = (existing["scope_key"] == scope.lower() and existing["principal_id"] == principal_id
                        and existing["role_definition"] == role_id)
                if not same:
                    raise Conflict("RoleAssignmentUpdateNotPermitted", "Tenant ID, application ID, principal ID, "
                                                                       "and scope are not allowed to be updated.")
                return self._wire(existing), False
            duplicate = self.db.query(
                "SELECT name FROM role_assignments WHERE scope_key = ? AND principal_id = ? AND role_definition = ?",
                (scope.lower(), principal_id, role_id))
            if duplicate:
                raise Conflict("RoleAssignmentExists", "The role assignment already exists.",
                               details=[{"code": "RoleAssignmentExists", "message": duplicate[0]["name"]}])
            self.db.execute(
                "INSERT INTO role_assignments (name, scope, scope_key, role_definition, principal_id, principal_type, "
                "description, created_on, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, scope, scope.lower(), role_id, principal_id, principal_type,
                 properties.get("description") if isinstance(properties.get("description"), str) else None,
                 datetime.now(UTC).isoformat().replace("+00:00", "Z"), caller.object_id))
            return self._wire(self._row(name)), True

    def get_assignment(self, scope: str, name: str) -> dict:
        row = self._row(str(name).lower())
        if row is None or row["scope_key"] != normalize_scope(scope).lower():
            raise NotFound("RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")
        return self._wire(row)

    def delete_assignment(self, scope: str, name: str) -> dict | None:
        """The deleted assignment, or None when there was none (ARM answers 204)."""
        row = self._row(str(name).lower())
        if row is None or row["scope_key"] != normalize_scope(scope).lower():
            return None
        self.db.execute("DELETE FROM role_assignments WHERE name = ?", (row["name"],))
        return self._wire(row)

    def list_assignments(self, scope: str, odata_filter: str | None = None) -> list[dict]:
        """Azure's semantics: assignments at, above and below the scope; `atScope()` keeps
        those at or above it; `principalId eq '{id}'` (or `assignedTo('{id}')`) one principal's."""
        scope = normalize_scope(scope)
        at_scope, principal = _parse_assignment_filter(odata_filter)
        out = []
        for row in self.db.query("SELECT * FROM role_assignments ORDER BY created_on, name"):
            above = covers(row["scope"], scope)
            below = covers(scope, row["scope"])
            if not (above or (below and not at_scope)):
                continue
            if principal and row["principal_id"] != principal:
                continue
            out.append(self._wire(row))
        return out

    def delete_below(self, scope: str) -> None:
        """A deleted resource group takes its role assignments with it, as in Azure."""
        key = normalize_scope(scope).lower()
        self.db.execute("DELETE FROM role_assignments WHERE scope_key = ? OR scope_key LIKE ? ESCAPE '\\'",
                        (key, key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"))

    def delete_for_principal(self, object_id: str) -> None:
        self.db.execute("DELETE FROM role_assignments WHERE principal_id = ?", (object_id.lower(),))

    def ensure_development_roles(self) -> None:
        """Once per data directory (so that an operator may later remove them): the
        development principal is Owner of the default subscription, and, since Owner carries
        no data actions, Azure Batch Account Contributor there too (jobs and tasks on the
        Batch data plane are data actions)."""
        if self.db.get_setting(_BOOTSTRAPPED):
            return
        scope = f"/subscriptions/{defaults.SUBSCRIPTION_ID}"
        caller = Caller("AAD", defaults.PRINCIPAL_OBJECT_ID, defaults.CLIENT_ID)
        for role in (OWNER, BATCH_ACCOUNT_CONTRIBUTOR):
            if not self.db.query("SELECT 1 FROM role_assignments WHERE scope_key = ? AND principal_id = ? AND "
                                 "role_definition = ?", (scope.lower(), defaults.PRINCIPAL_OBJECT_ID, role)):
                self.create_assignment(scope, str(uuid.uuid4()), {"properties": {
                    "roleDefinitionId": role, "principalId": defaults.PRINCIPAL_OBJECT_ID}}, caller)
        self.db.set_setting(_BOOTSTRAPPED, True)

    # helpers -------------------------------------------------------------------------------

    def _check_scope(self, scope: str) -> str:
        scope = normalize_scope(scope)
        parts = scope.strip("/").split("/")
        if len(parts) < 2 or parts[0].lower() != "subscriptions":
            raise InvalidInput("InvalidScope", f"The scope '{scope}' is not valid: role assignments are made at a "
                                               "subscription, a resource group or a resource.")
        self.groups.check_subscription(parts[1])
        if len(parts) >= 4 and parts[2].lower() == "resourcegroups":
            self.groups.get(parts[1], parts[3])
        return scope

    def _row(self, name: str):
        rows = self.db.query("SELECT * FROM role_assignments WHERE name = ?", (name,))
        return rows[0] if rows else None

    @staticmethod
    def _wire(row) -> dict:
        subscription = row["scope"].split("/")[2] if row["scope"].count("/") >= 2 else ""
        return {
            "id": f"{row['scope']}/providers/{ASSIGNMENTS}/{row['name']}",
            "name": row["name"],
            "type": ASSIGNMENTS,
            "properties": {
                "roleDefinitionId": f"/subscriptions/{subscription}/providers/Microsoft.Authorization/"
                                    f"roleDefinitions/{row['role_definition']}",
                "principalId": row["principal_id"],
                "principalType": row["principal_type"],
                "scope": row["scope"],
                "condition": None,
                "conditionVersion": None,
                "description": row["description"],
                "createdOn": row["created_on"],
                "updatedOn": row["created_on"],
                "createdBy": row["created_by"],
                "updatedBy": row["created_by"],
                "delegatedManagedIdentityResourceId": None,
            },
        }


def _scope_prefix(scope: str) -> str:
    scope = normalize_scope(scope)
    return "" if scope == "/" else scope


def _assignment_name(name: str) -> str:
    try:
        return str(uuid.UUID(str(name)))
    except ValueError:
        raise InvalidInput("InvalidRoleAssignmentId", f"The role assignment ID '{name}' is not valid. The role "
                                                      "assignment ID must be a GUID.") from None


_FILTER_TERMS = (
    (re.compile(r"atScope\(\)", re.IGNORECASE), "at_scope"),
    (re.compile(r"principalId\s+eq\s+'([0-9a-fA-F-]{32,36})'", re.IGNORECASE), "principal"),
    (re.compile(r"assignedTo\('([0-9a-fA-F-]{32,36})'\)", re.IGNORECASE), "principal"),
)


def _parse_assignment_filter(odata_filter: str | None) -> tuple[bool, str | None]:
    if not odata_filter or not odata_filter.strip():
        return False, None
    at_scope, principal = False, None
    for term in re.split(r"\s+and\s+", odata_filter.strip(), flags=re.IGNORECASE):
        for pattern, kind in _FILTER_TERMS:
            match = pattern.fullmatch(term.strip())
            if match and kind == "at_scope":
                at_scope = True
                break
            if match:
                principal = match[1].lower()
                break
        else:
            raise _bad_filter(odata_filter, "atScope()", "principalId eq '{id}'", "assignedTo('{id}')")
    return at_scope, principal


def _bad_filter(odata_filter: str, *supported: str) -> InvalidInput:
    return InvalidInput("InvalidFilterInQueryString", f"The filter '{odata_filter}' is not supported. Supported: "
                                                      + ", ".join(supported) + " (joined with 'and').")
