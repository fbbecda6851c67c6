"""How pools, nodes, jobs and tasks, and pages of them, look on the Batch wire. Used by the
handlers and by the list readers (page_readers.py), which run in processes of their own:
nothing here needs a request, only the account's endpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable
from urllib.parse import quote

import orjson

from ...services.batch.container_spec import withheld
from ...services.batch.odata import apply_select


@dataclass(frozen=True)
class Urls:
    endpoint: str  # the account's Batch endpoint as the client reached it

    def url(self, *segments: str) -> str:
        return _url(self.endpoint, segments)

    def url_of_each(self, *segments: str) -> Callable[[str], str]:
        """The URL of each resource under segments, by its id. For ids seen once (the tasks
        a collection adds: the URLs of its results were most of its cost to the event loop),
        so the parent's URL is made once and none is remembered, which would push out those
        the pages ask again and again (see _url)."""
        parent = self.url(*segments)
        return lambda name: parent + _segment(name)


@lru_cache(maxsize=8192)
def _url(endpoint: str, segments: tuple[str, ...]) -> str:
    """The URL of a resource, its path segments percent-encoded. Remembered whole: a page of
    100 tasks makes 200 URLs (each task's, each task's node's), the same ones every time a
    client polls that page, and making them was the largest cost of rendering it."""
    return endpoint + "".join(_segment(s) for s in segments)


def _segment(name: str) -> str:
    return "/" + quote(name, safe="")


def json_bytes(body: Any) -> bytes:
    """body as Starlette's JSONResponse writes it (compact UTF-8), by orjson in a fifth of
    the time: every Batch response and page goes through here."""
    try:
        return orjson.dumps(body)
    except TypeError:  # an integer past 64 bits, kept as a client gave it (see store/codec.py)
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def pool_view(urls, pool) -> dict:
    return {"url": urls.url("pools", pool.name), **withheld(pool.body)}


def node_view(urls, pool_id: str, node) -> dict:
    return {"url": urls.url("pools", pool_id, "nodes", node.id), **node.body}


def job_view(urls, job) -> dict:
    return {"url": urls.url("jobs", job.name), **withheld(job.body)}


def task_view(urls, job_id: str, task) -> dict:
    body = {"url": urls.url("jobs", job_id, "tasks", task.id),
            **(withheld(task.body) if "containerSettings" in task.body else task.body)}
    node = body.get("nodeInfo")
    if node:
        node_url = urls.url("pools", node["poolId"], "nodes", node["nodeId"])
        body["nodeInfo"] = {**node, "nodeUrl": node_url,
                            "taskRootDirectoryUrl": f"{node_url}/files/{node['taskRootDirectory']}"}
    return body


def sort_key(item: dict) -> str:
    """The order lists are paged in, which a $skiptoken continues from: the lower-cased id
    (a pool's usage metrics, which have none, by their pool)."""
    return str(item.get("id", item.get("poolId", ""))).lower()


def listing_body(endpoint: str, collection: str, found: list[dict], next_token: str | None, query: dict,
                 link_base: str) -> dict:
    """A page: $select applied, and everything the next page needs in its odata.nextLink
    (`link_base` is the URL the request reached, without its query), since the SDK does not
    send the first request's query again."""
    body = {"odata.metadata": f"{endpoint}/$metadata#{collection}",
            "value": [apply_select(item, query.get("$select")) for item in found]}
    if next_token is not None:
        carried = {k: v for k, v in query.items() if k in ("$filter", "$select", "$expand", "maxresults",
                                                           "recursive")}
        carried["$skiptoken"] = next_token
        link_query = "&".join(f"{k}={quote(v, safe='')}" for k, v in
                              [("api-version", query["api-version"]), *sorted(carried.items())])
        body["odata.nextLink"] = f"{link_base}?{link_query}"
    return body
