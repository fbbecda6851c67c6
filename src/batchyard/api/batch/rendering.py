"""Rendering Batch responses: lists with $filter, $select, maxresults and paging, and
single resources with their conditional headers and $select."""

from __future__ import annotations

from typing import Iterable
from urllib.parse import quote

from starlette.responses import JSONResponse, Response

from ...services.batch.odata import apply_select, ordered_page, page, parse_max_results
from ...services.batch.pools import check_conditions
from .router import ODATA_JSON, BatchContext, entity_response


def listing(ctx: BatchContext, collection: str, items: list[dict], key=None) -> Response:
    """A list held in memory, listed in the order of `key` (default: the lower-cased id),
    which the skiptoken continues from."""
    key = key or _sort_key
    return _rendered(ctx, collection, *page(items, ctx.query, key))


def ordered_listing(ctx: BatchContext, collection: str, ordered: Iterable[dict], key=None) -> Response:
    """Items that already come in `key` order from just after the request's $skiptoken,
    read lazily: only as far as the page goes."""
    key = key or _sort_key
    return _rendered(ctx, collection, *ordered_page(ordered, ctx.query, key))


def page_rows(ctx: BatchContext) -> int:
    """Rows to read from the store at a time for a page: the page and one more (which says
    whether a next page exists). A page of 100 tasks decodes 101, not a chunk of 500."""
    return parse_max_results(ctx.query.get("maxresults")) + 1


def _rendered(ctx: BatchContext, collection: str, found: list[dict], next_token: str | None) -> Response:
    """$select, and paging: everything the next page needs is in its odata.nextLink, since
    the SDK does not send the first request's query again."""
    query = ctx.query
    body = {"odata.metadata": f"{ctx.endpoint}/$metadata#{collection}",
            "value": [apply_select(item, query.get("$select")) for item in found]}
    if next_token is not None:
        carried = {k: v for k, v in query.items() if k in ("$filter", "$select", "$expand", "maxresults",
                                                           "recursive")}
        carried["$skiptoken"] = next_token
        link_query = "&".join(f"{k}={quote(v, safe='')}" for k, v in
                              [("api-version", query["api-version"]), *sorted(carried.items())])
        body["odata.nextLink"] = f"{ctx.request.url.scheme}://{ctx.request.url.netloc}{ctx.request.url.path}?" \
                                 f"{link_query}"
    return JSONResponse(body, media_type=ODATA_JSON)


def _sort_key(item: dict) -> str:
    return str(item.get("id", item.get("poolId", ""))).lower()


def single(ctx: BatchContext, collection: str, view: dict, body: dict) -> Response:
    """One pool, job or task: If-* conditions against its eTag and lastModified, $select."""
    check_conditions(body, ctx.conditions())
    selected = apply_select(view, ctx.query.get("$select"))
    return entity_response({"odata.metadata": f"{ctx.endpoint}/$metadata#{collection}/@Element", **selected},
                           etag=body["eTag"], last_modified=body["lastModified"])
