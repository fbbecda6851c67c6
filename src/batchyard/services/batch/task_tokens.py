"""Authentication tokens for tasks (`authenticationTokenSettings.access: ["job"]`): the token
a task finds in AZ_BATCH_AUTHENTICATION_TOKEN and sends back as `Authorization: Bearer`
to AZ_BATCH_ACCOUNT_URL, as Azure's job manager tasks do to add tasks to their job.

The token is an RS256 JWT signed with the service's token key, for an audience of its own
(so it is never an account-wide bearer token), naming the account and the job. It allows
the operations on that job (`/jobs/{jobId}` and below) and nothing else; it expires after
`LIFETIME` and is refused once its job is gone.
"""

from __future__ import annotations

import time
import uuid

import jwt

from ..errors import Forbidden, Unauthenticated

AUDIENCE = "batchyard:task-authentication-token"
LIFETIME = 7 * 24 * 3600  # Azure's tokens last as long as their task may: its maxWallClockTime is the user's


class TaskTokens:
    def __init__(self, identity, jobs):
        self.identity = identity
        self.jobs = jobs

    def issue(self, account: str, job_id: str) -> str:
        moment = int(time.time())
        claims = {"aud": AUDIENCE, "iss": "batchyard", "iat": moment, "nbf": moment, "exp": moment + LIFETIME,
                  "account": account.lower(), "job": job_id, "uti": uuid.uuid4().hex}
        return self.identity.sign(claims)

    @staticmethod
    def is_task_token(token: str) -> bool:
        try:
            return jwt.decode(token, options={"verify_signature": False}).get("aud") == AUDIENCE
        except jwt.PyJWTError:
            return False

    def verify(self, token: str, account) -> str:
        """The job the token allows, after its signature, expiry and account are checked."""
        try:
            claims = self.identity.decode(token, AUDIENCE, ["exp", "aud", "account", "job"])
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("ExpiredAuthenticationToken", "The task's authentication token has expired.")
        except jwt.PyJWTError:
            raise Unauthenticated("InvalidAuthenticationToken", "The task's authentication token is invalid.")
        if claims["account"] != account.name.lower():
            raise Unauthenticated("InvalidAuthenticationToken", "The task's authentication token is for another "
                                                                "account.")
        job = self.jobs.store.get(self.jobs.key(account, claims["job"]))
        if job is None:
            raise Unauthenticated("InvalidAuthenticationToken", "The job the token was issued for no longer exists.")
        return claims["job"]

    @staticmethod
    def check_scope(job_id: str, params: dict) -> None:
        """A task token reaches its own job only."""
        named = params.get("jobId")
        if named is None or named.lower() != job_id.lower():
            raise Forbidden("AuthorizationFailure", "This request is not authorized to perform this operation: a "
                                                    "task's authentication token allows only the operations on its "
                                                    "own job.")
