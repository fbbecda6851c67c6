"""The user a command on a node runs as: its `userIdentity.autoUser`, named the way Azure's
Linux nodes name their auto-users.

- scope `pool` (the default): every such command of the pool runs as the one auto-user,
  `_azbatch`, uid 10001;
- scope `task`: Azure makes a new user for the task. Here each task-scope task gets a user
  no other task has: `_azbatchtask_{n}`, uid 1,000,000 + n, with n from a counter the
  database keeps (so not even a restart hands a number out twice), kept with the task so
  its retries, and a multi-instance task's every node, run as the same user. A task's
  files and processes are then its own: another task may not write its directories or
  signal its processes. A job's preparation and release tasks get one each, kept with the
  job. A start task's is `_azbatchtask_start` (the name Azure gives it), uid 10002: a node
  runs one start task;
- elevationLevel `admin`: root, whatever the scope.

Every one of them is in the auto-users' group, gid 10001 (Azure's `_azbatchgrp`).
`AZ_BATCH_TASK_USER_IDENTITY` says which of the four a command runs as: PoolNonAdmin,
PoolAdmin, TaskNonAdmin or TaskAdmin.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...store.db import Database

POOL_USER_UID = 10001
AUTO_USER_GID = 10001
START_TASK_UID = 10002
TASK_SCOPE_UID_BASE = 1_000_000  # far above the uids an image's own users take
COUNTER = "task_scope_users"


@dataclass(frozen=True)
class TaskUser:
    name: str  # AZ_BATCH_TASK_USER
    identity: str  # AZ_BATCH_TASK_USER_IDENTITY
    uid: int | None  # None: root
    gid: int | None

    @property
    def owner(self) -> tuple[int | None, int | None]:
        """(uid, gid): the owner of the command's directories and of the files fetched for it."""
        return self.uid, self.gid

    def environment(self) -> dict[str, str]:
        return {"AZ_BATCH_TASK_USER": self.name, "AZ_BATCH_TASK_USER_IDENTITY": self.identity,
                "USER": self.name if self.uid is not None else "root"}


# the pool's auto-user, as every task of pool scope (the default) runs: made once
POOL_USERS = {False: TaskUser("_azbatch", "PoolNonAdmin", POOL_USER_UID, AUTO_USER_GID),
              True: TaskUser("_azbatch", "PoolAdmin", None, None)}


class TaskUsers:
    def __init__(self, db: Database):
        self.db = db

    def for_task(self, user_identity: dict, kept: dict, key: str = "task_user") -> TaskUser:
        """The user a task (or a job's preparation or release task) with this checked
        userIdentity runs as. A task-scope user's number is taken from the database's
        counter the first time and kept in `kept` (the task's or job's `internal`) under
        `key`, for the caller to save with the record."""
        auto = user_identity["autoUser"]
        admin = auto["elevationLevel"] == "admin"
        if auto["scope"] != "task":
            return POOL_USERS[admin]
        if key not in kept:
            kept[key] = self.db.next_number(COUNTER)
        return _task_scope_user(f"_azbatchtask_{kept[key]}", TASK_SCOPE_UID_BASE + kept[key], admin)

    @staticmethod
    def for_start_task(user_identity: dict) -> TaskUser:
        auto = user_identity["autoUser"]
        admin = auto["elevationLevel"] == "admin"
        if auto["scope"] != "task":
            return POOL_USERS[admin]
        return _task_scope_user("_azbatchtask_start", START_TASK_UID, admin)


def _task_scope_user(name: str, uid: int, admin: bool) -> TaskUser:
    return TaskUser(name, "TaskAdmin", None, None) if admin else TaskUser(name, "TaskNonAdmin", uid, AUTO_USER_GID)
