"""The list readers: pages of tasks, nodes, jobs and pools, the lists that grow to thousands
and that clients poll, read and rendered in processes of their own at a lower CPU priority than the
service.

Why: a page of 100 tasks costs milliseconds of decoding and rendering. In the service's
interpreter, sixteen clients polling pages keep its lock busy, and the scheduler's threads
(which record exits and start tasks) wait their turn for it among the page renderers; on a
host whose cores the tasks keep busy, the pages also take CPU from the tasks themselves.
In a reader, a page waits for nothing of the scheduler's (each reader has a read-only
connection of its own, and WAL gives it the last commit while the service writes), and the
scheduler waits for no page: readers run at a lower priority (`Settings.list_nice`), so on
a busy host running work goes first and pages come later. On an idle host a page costs
what it did, plus handing the bytes over.

The handler checks everything a client can get wrong first (the job or pool exists and
the caller may read it; $filter, $select and maxresults parse): a reader only reads and
renders. Readers are started with the first page asked for, and end with the service (or
with its process: they are killed if it dies).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import orjson

from ...services.batch.jobs import JOB_TYPE
from ...services.batch.odata import Narrowing, ordered_page
from ...services.batch.pools import POOL_TYPE
from ...store.batch_nodes import NodeStore
from ...store.batch_tasks import TaskStore
from ...store.resources import ResourceStore
from ...store.db import ReadOnlyDatabase
from .views import Urls, job_view, listing_body, node_view, pool_view, sort_key, task_view

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class PageRequest:
    """A checked request for one page (everything a reader needs: it sees no HTTP)."""
    collection: str  # "tasks", "nodes", "jobs" or "pools"
    owner_key: str  # tasks: the job's key; nodes: the pool's; jobs and pools: the prefix of their keys
    owner_id: str  # tasks and nodes: the job's or pool's id as the URLs show it
    endpoint: str  # the account's Batch endpoint as the client reached it
    link_base: str  # the URL the request reached, without its query
    query: dict = field(default_factory=dict)  # $filter, $select, maxresults, $skiptoken, api-version
    rows: int = 101  # read from the store at a time: the page and one more
    narrowing: Narrowing = Narrowing()  # what $filter asks that the store's query can ask too


# in a reader process ------------------------------------------------------------------------

_stores: tuple[TaskStore, NodeStore, ResourceStore] | None = None


def _start_reader(db_path: str, nice: int) -> None:
    """A reader's start: killed with the service's process, at the readers' priority, with
    a read-only connection of its own."""
    global _stores
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    db = ReadOnlyDatabase(Path(db_path))
    _stores = (TaskStore(db), NodeStore(db), ResourceStore(db))


def _views(request: PageRequest) -> Iterator[dict]:
    """The collection's items as the wire shows them, in key order from just after the
    $skiptoken, read from the store `request.rows` at a time."""
    tasks, nodes, resources = _stores
    urls, state, ids = Urls(request.endpoint), request.narrowing.state, request.narrowing.ids
    key, after, rows = request.owner_key, request.query.get("$skiptoken"), request.rows
    if request.collection == "tasks":
        return (task_view(urls, request.owner_id, t) for t in tasks.in_key_order(key, after, rows, state, ids))
    if request.collection == "nodes":
        return (node_view(urls, request.owner_id, n) for n in nodes.in_id_order(key, after, rows, state, ids))
    if request.collection == "jobs":
        return (job_view(urls, j) for j in resources.in_key_order(key, JOB_TYPE, after, rows, state, ids))
    return (pool_view(urls, p) for p in resources.in_key_order(key, POOL_TYPE, after, rows, state, ids))


def read_page(request: PageRequest) -> bytes:
    """The page's JSON, as the handler would have rendered it."""
    views = _views(request)
    found, next_token = ordered_page(views, request.query, sort_key)
    body = listing_body(request.endpoint, request.collection, found, next_token, request.query, request.link_base)
    try:
        return orjson.dumps(body)  # compact UTF-8, as Starlette's JSONResponse, in a fifth of the time
    except TypeError:  # an integer past 64 bits, kept as a client gave it (see store/codec.py)
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


# in the service ---------------------------------------------------------------------------------

class PageReaders:
    def __init__(self, db_path: Path, readers: int, nice: int):
        self._db_path, self._readers, self._nice = db_path, max(1, readers), nice
        self._pool: ProcessPoolExecutor | None = None

    async def page(self, request: PageRequest) -> bytes:
        pool = self._executor()
        try:
            return await asyncio.wrap_future(pool.submit(read_page, request))
        except BrokenProcessPool:
            # a reader died (killed, or out of memory): the pool is unusable from then on,
            # so a new one takes over and the page is read again, once
            self._replace(pool)
            return await asyncio.wrap_future(self._executor().submit(read_page, request))

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            self._pool = None
            broken.shutdown(wait=False, cancel_futures=True)

    def _executor(self) -> ProcessPoolExecutor:
        """Made on the event loop's thread (the only caller), which lives as long as the
        service: a reader's parent-death signal follows the thread that started it. Spawned,
        not forked: a fork of this many-threaded process could copy a lock some other
        thread holds."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self._readers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_reader, initargs=(str(self._db_path), self._nice))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
