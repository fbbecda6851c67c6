"""Rendering Batch responses: lists with $filter, $select, maxresults and paging, and
single resources with their conditional headers and $select."""

from __future__ import annotations

from typing import Callable

from starlette.responses import Response

from ...services.batch.odata import apply_select, compile_filter, narrowing, page, parse_max_results
from ...services.batch.pools import check_conditions
from ...services.errors import Unavailable
from .page_readers import PageRequest
from .router import ODATA_JSON, BatchContext, BatchJSON, entity_response
from .views import listing_body, sort_key

# How often a page is asked for while its reader finds no job or pool and the service's check
# finds one: it was made in between, and each further turn needs it deleted and made again.
OWNER_TURNS = 3


def listing(ctx: BatchContext, collection: str, items: list[dict], key=None) -> Response:
    """A list held in memory, listed in the order of `key` (default: the lower-cased id),
    which the skiptoken continues from."""
    key = key or sort_key
    return _rendered(ctx, collection, *page(items, ctx.query, key))


async def read_listing(ctx: BatchContext, collection: str, owner_key: str, owner_id: str = "",
                       owner_check: Callable[[], object] | None = None) -> Response:
    """A page of tasks, nodes, jobs or pools, read and rendered by a list reader
    (page_readers.py) once everything a client can get wrong in its query has been checked
    here; what its $filter says of state and ids narrows the reader's query.
    owner_check: for tasks and nodes, the service's check that their job or pool exists,
    which raises its 404; asked only when the reader finds none."""
    compile_filter(ctx.query.get("$filter"))
    apply_select({}, ctx.query.get("$select"))
    request = PageRequest(collection, owner_key, owner_id, ctx.endpoint, link_base(ctx), dict(ctx.query),
                          page_rows(ctx), narrowing(ctx.query.get("$filter")))
    readers = ctx.request.app.state.page_readers
    for _ in range(OWNER_TURNS):
        body = await readers.page(request)
        if body is not None:
            return Response(body, media_type=ODATA_JSON)
        await ctx.call(owner_check)  # raises, unless the job or pool was made in between
    raise Unavailable("ServerBusy", "The job or pool was made and deleted again while its list was read; "
                      "retry the request.")


def page_rows(ctx: BatchContext) -> int:
    """Rows to read from the store at a time for a page: the page and one more (which says
    whether a next page exists). A page of 100 tasks decodes 101, not a chunk of 500."""
    return parse_max_results(ctx.query.get("maxresults")) + 1


def _rendered(ctx: BatchContext, collection: str, found: list[dict], next_token: str | None) -> Response:
    return BatchJSON(listing_body(ctx.endpoint, collection, found, next_token, ctx.query, link_base(ctx)),
                     media_type=ODATA_JSON)


def link_base(ctx: BatchContext) -> str:
    """The URL the request reached, without its query: where the next page is asked for."""
    url = ctx.request.url
    return f"{url.scheme}://{url.netloc}{url.path}"


def single(ctx: BatchContext, collection: str, view: dict, body: dict) -> Response:
    """One pool, job or task: If-* conditions against its eTag and lastModified, $select."""
    check_conditions(body, ctx.conditions())
    selected = apply_select(view, ctx.query.get("$select"))
    return entity_response({"odata.metadata": f"{ctx.endpoint}/$metadata#{collection}/@Element", **selected},
                           etag=body["eTag"], last_modified=body["lastModified"])
