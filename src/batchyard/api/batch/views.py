"""How pools, nodes, jobs and tasks, and pages of them, look on the Batch wire. Used by the
handlers and by the list readers (page_readers.py), which run in processes of their own:
nothing here needs a request, only the account's endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from ...services.batch.container_spec import withheld
from ...services.batch.odata import apply_select


@dataclass(frozen=True)
class Urls:
    endpoint: str  # the account's Batch endpoint as the client reached it

    def url(self, *segments: str) -> str:
        return _url(self.endpoint, segments)


@lru_cache(maxsize=8192)
def _url(endpoint: str, segments: tuple[str, ...]) -> str:
    """The URL of a resource, its path segments percent-encoded. Remembered whole: a page of
    100 tasks makes 200 URLs (each task's, each task's node's), the same ones every time a
    client polls that page, and making them was the largest cost of rendering it."""
    return endpoint + "".join("/" + quote(s, safe="") for s in segments)


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
