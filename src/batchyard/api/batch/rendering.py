"""Rendering Batch responses: lists with $filter, $select, maxresults and paging, and
single resources with their conditional headers and $select."""

from __future__ import annotations

from itertools import islice
from typing import Iterable
from urllib.parse import quote

from starlette.responses import JSONResponse, Response

from ...services.batch.odata import apply_select, compile_filter, parse_max_results
from ...services.batch.pools import check_conditions
from .router import ODATA_JSON, BatchContext, entity_response


def listing(ctx: BatchContext, collection: str, items: list[dict], key=None) -> Response:
    """A list held in memory: ordered by `key` (default: the lower-cased id), which the
    skiptoken continues from, then paged by `ordered_listing`."""
    key = key or _sort_key
    after = ctx.query.get("$skiptoken")
    ordered = sorted(items, key=key)
    return ordered_listing(ctx, collection, (item for item in ordered if not after or key(item) > after), key)


def ordered_listing(ctx: BatchContext, collection: str, ordered: Iterable[dict], key=None) -> Response:
    """$filter, $select, maxresults and paging over items that already come in `key` order
    from just after the request's $skiptoken. It stops reading at the first item past the
    page, so a lazy source costs what the page costs. Everything the next page needs is in
    its odata.nextLink, since the SDK does not send the first request's query again."""
    key = key or _sort_key
    query = ctx.query
    predicate = compile_filter(query.get("$filter"))
    page_size = parse_max_results(query.get("maxresults"))
    select = query.get("$select")
    chosen = list(islice((item for item in ordered if predicate(item)), page_size + 1))
    page, more = chosen[:page_size], len(chosen) > page_size
    body = {"odata.metadata": f"{ctx.endpoint}/$metadata#{collection}",
            "value": [apply_select(item, select) for item in page]}
    if more:
        carried = {k: v for k, v in query.items() if k in ("$filter", "$select", "$expand", "maxresults",
                                                           "recursive")}
        carried["$skiptoken"] = key(page[-1])
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
