"""The web portal at /portal: another HTTP adapter over the same services, behind sign-in
with a service principal (signin.py, sessions.py), every action checked as the API checks
it (access.py). Static files (styles, scripts) are public; every page is not."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import compute, jobs, pools, signin
from .web import PREFIX

A = PREFIX + "/accounts/{account}"
POOL = A + "/pools/{pool}"


async def _home(request):
    return RedirectResponse(PREFIX + "/accounts", status_code=303)


# (method, path, endpoint): the list the tests walk, every one needing a signed-in session
PAGES = [
    ("GET", PREFIX + "/accounts", pools.accounts),
    ("GET", A, pools.account),
    ("GET", A + "/pools", pools.pools),
    ("GET", A + "/pools-add", pools.add_form),
    ("POST", A + "/pools-add", pools.add),
    ("GET", POOL, pools.pool),
    ("GET", POOL + "/live.json", pools.pool_live),
    ("POST", POOL + "/resize", pools.resize),
    ("POST", POOL + "/stopresize", pools.stop_resize),
    ("GET", POOL + "/nodes/{node}", pools.node),
    ("GET", POOL + "/nodes/{node}/files/{path:path}", pools.node_file),
    ("GET", A + "/jobs", jobs.jobs),
    ("GET", A + "/jobs/{job}", jobs.job),
    ("GET", A + "/jobs/{job}/tasks/{task}", jobs.task),
    ("GET", A + "/jobs/{job}/tasks/{task}/files/{path:path}", jobs.task_file),
    ("GET", PREFIX + "/images", compute.images),
    ("GET", PREFIX + "/snapshots", compute.snapshots),
    ("GET", PREFIX + "/vms", compute.vms),
    ("POST", PREFIX + "/signout", signin.sign_out),
]

routes = [
    Route("/", _home, methods=["GET"]),
    Route(PREFIX, _home, methods=["GET"]),
    Route(PREFIX + "/", _home, methods=["GET"]),
    Route(PREFIX + "/signin", signin.sign_in_form, methods=["GET"]),
    Route(PREFIX + "/signin", signin.sign_in, methods=["POST"]),
    *(Route(path, endpoint, methods=[method]) for method, path, endpoint in PAGES),
    Mount(PREFIX + "/static", app=StaticFiles(directory=Path(__file__).parent / "static"), name="portal-static"),
]
