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

The handler checks everything a client can get wrong in the query first ($filter, $select
and maxresults parse; the caller may read the account): a reader only reads and renders.
Whether the job or pool whose tasks or nodes are listed exists is the reader's to see too
(one indexed read): asking the service's own store from the event loop would mean a hop to
a worker thread and back for every page. When the reader finds no such job or pool, the
service's check answers, with its own 404.

How a page travels: each reader holds one end of a socket pair, the event loop the other,
and the loop writes the request and reads the page itself. A process pool would put two
threads of its own between them (its feeder and its result thread), each waking and taking
the interpreter's lock for every page: under sixteen listing clients those hops, with the
worker thread's, were a third of the service's CPU for a page. Readers are started with the
first page asked for, and end with the service (or with its process: they are killed if it
dies).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ...services.batch.jobs import JOB_TYPE
from ...services.batch.odata import Narrowing, ordered_page
from ...services.batch.pools import POOL_TYPE
from ...store.batch_nodes import NodeStore
from ...store.batch_tasks import TaskStore
from ...store.resources import ResourceStore
from ...store.db import ReadOnlyDatabase
from .views import Urls, job_view, json_bytes, listing_body, node_view, pool_view, sort_key, task_view

PR_SET_PDEATHSIG = 1

# A message either way: its length, then its bytes. An answer's first byte says what it is.
FRAME = struct.Struct(">I")
PAGE, NO_OWNER, FAILED = b"P", b"N", b"E"

# What must exist for a collection to be listed: tasks are a job's, nodes a pool's.
OWNER_TYPES = {"tasks": JOB_TYPE, "nodes": POOL_TYPE}


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


def reader_main(sock_fd: int, db_path: str, nice: int, service_pid: int) -> None:
    """A reader's life: killed with the service's process, at the readers' priority, with a
    read-only connection of its own, answering the service's requests one at a time until
    the service closes its end."""
    global _stores
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != service_pid:  # it died before the line above: nobody would kill this one
        return
    # Ctrl-C reaches the whole process group: the service ends its readers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    db = ReadOnlyDatabase(Path(db_path))
    _stores = (TaskStore(db), NodeStore(db), ResourceStore(db))
    with socket.socket(fileno=sock_fd) as sock:
        while (message := _received(sock)) is not None:
            sock.sendall(_framed(_answer(message)))


def _answer(message: bytes) -> bytes:
    try:
        page = read_page(pickle.loads(message))
    except Exception as exc:  # noqa: BLE001 - raised again in the service, which answers it
        return FAILED + _pickled(exc)
    return NO_OWNER if page is None else PAGE + page


def _pickled(exc: Exception) -> bytes:
    """The exception as the service can raise it again: itself when it comes back whole
    (a ServiceError does), or else a RuntimeError that carries its traceback."""
    try:
        pickled = pickle.dumps(exc)
        pickle.loads(pickled)
        return pickled
    except Exception:  # noqa: BLE001 - one that holds something that does not pickle, or does not come back
        return pickle.dumps(RuntimeError(f"list reader: {''.join(traceback.format_exception(exc))}"))


def _received(sock: socket.socket) -> bytes | None:
    """The next message, or None once the service has closed its end."""
    head = _exactly(sock, FRAME.size)
    return None if head is None else _exactly(sock, FRAME.unpack(head)[0])


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        count = sock.recv_into(view[got:])
        if count == 0:
            return None
        got += count
    return bytes(buffer)


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


def read_page(request: PageRequest) -> bytes | None:
    """The page's JSON, as the handler would have rendered it; None when the job or pool
    whose tasks or nodes it lists does not exist."""
    owner_type = OWNER_TYPES.get(request.collection)
    if owner_type is not None and (_stores[2].type_of(request.owner_key) or "").lower() != owner_type.lower():
        return None
    found, next_token = ordered_page(_views(request), request.query, sort_key)
    return json_bytes(listing_body(request.endpoint, request.collection, found, next_token, request.query,
                                   request.link_base))


def _framed(message: bytes) -> bytes:
    return FRAME.pack(len(message)) + message


# in the service ---------------------------------------------------------------------------------

class ReaderLost(Exception):
    """A reader has ended (killed, or out of memory): found so when asked, or while it answered."""


@dataclass(eq=False)
class _Reader:
    """One reader process and the service's end of its socket."""
    process: subprocess.Popen
    sock: socket.socket

    async def ask(self, request: PageRequest) -> tuple[bytes, bytes]:
        """The reader's answer: its kind (PAGE, NO_OWNER or FAILED) and its bytes."""
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(self.sock, _framed(pickle.dumps(request)))
            head = await self._exactly(loop, FRAME.size + 1)
            return head[FRAME.size:], await self._exactly(loop, FRAME.unpack(head[:FRAME.size])[0] - 1)
        except OSError as exc:
            raise ReaderLost(str(exc)) from None

    async def _exactly(self, loop: asyncio.AbstractEventLoop, size: int) -> bytes:
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            count = await loop.sock_recv_into(self.sock, view[got:])
            if count == 0:
                raise ReaderLost("the list reader ended")
            got += count
        return bytes(buffer)


class PageReaders:
    def __init__(self, db_path: Path, readers: int, nice: int):
        self._db_path, self._nice = db_path, nice
        self._turns = asyncio.Semaphore(max(1, readers))  # a page at a time per reader
        self._idle: list[_Reader] = []
        self._started: set[_Reader] = set()
        self._ending: list[subprocess.Popen] = []  # killed, not yet reaped

    async def page(self, request: PageRequest) -> bytes | None:
        """The page's JSON; None when the job or pool whose tasks or nodes it lists does
        not exist."""
        async with self._turns:
            try:
                kind, body = await self._ask(request)
            except ReaderLost:
                # a reader died (killed, or out of memory), perhaps with others: those that
                # have ended are let go, and the page is read again, once
                for reader in [r for r in self._idle if r.process.poll() is not None]:
                    self._end(reader)
                kind, body = await self._ask(request)
        if kind == FAILED:
            raise _unpickled(body)
        return body if kind == PAGE else None

    async def _ask(self, request: PageRequest) -> tuple[bytes, bytes]:
        reader = self._idle.pop() if self._idle else self._start()
        try:
            answer = await reader.ask(request)
        except BaseException:  # lost, or cancelled halfway: its socket holds half an exchange
            self._end(reader)
            raise
        self._idle.append(reader)
        return answer

    def _start(self) -> _Reader:
        """Started from the event loop's thread, which lives as long as the service: a
        reader's parent-death signal follows the thread that started it. A new interpreter,
        not a fork: a fork of this many-threaded process could copy a lock some other
        thread holds. It imports from the service's own sys.path, as multiprocessing's
        spawn would (-P: not from the working directory)."""
        self._reap()
        ours, theirs = socket.socketpair()
        try:
            with theirs:
                process = subprocess.Popen(
                    [sys.executable, "-P", "-c", _READER_MAIN, json.dumps(sys.path), str(theirs.fileno()),
                     str(self._db_path), str(self._nice), str(os.getpid())],
                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        ours.setblocking(False)
        reader = _Reader(process, ours)
        self._started.add(reader)
        return reader

    def _end(self, reader: _Reader) -> None:
        """Killed, and reaped later: waiting here would hold up the event loop."""
        if reader in self._idle:
            self._idle.remove(reader)
        self._started.discard(reader)
        reader.sock.close()
        reader.process.kill()
        self._ending.append(reader.process)
        self._reap()

    def _reap(self) -> None:
        self._ending = [process for process in self._ending if process.poll() is None]

    def close(self) -> None:
        for reader in list(self._started):
            self._end(reader)
        for process in self._ending:
            process.wait()
        self._ending = []


def _unpickled(body: bytes) -> Exception:
    try:
        return pickle.loads(body)
    except Exception as exc:  # noqa: BLE001 - answered as the service's own failure
        return RuntimeError(f"a list reader's failure could not be read: {exc!r}")


# The reader's command: the service's sys.path, then reader_main with its arguments.
_READER_MAIN = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
                "from batchyard.api.batch.page_readers import reader_main; "
                "reader_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))")
