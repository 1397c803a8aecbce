"""SQLite's read connections: one for lookups, a small pool for lists shared in turns, one for checkpoints.

In WAL mode any number of connections read while the writer commits, each from the last commit
before its read began, so no read here waits on the writer, and the writer waits on none of them.
What reads can still wait on is each other: an aiosqlite connection runs one statement at a time,
so reads are kept apart by cost.

- Lookups (an API key, one subscription, one delivery: an index probe each) have a connection no
  list ever takes. A publish's only read, its API key when the cache has lost it, waits on no list.
- Lists share ``size`` connections. A freed connection goes to the customers waiting, in turns, one
  read each: a customer with a hundred listings queued delays another customer's listing by the
  reads already running, not by the hundred.
- The background WAL checkpoint copies pages on a connection of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import aiosqlite

T = TypeVar("T")


class TurnPool(Generic[T]):
    """Connections handed out in turns between the callers' ``turn`` keys (their customers).

    Waiting callers queue under their key; the keys take turns in the order they first waited,
    and a key served goes to the back of the round while it has more reads waiting.
    """

    def __init__(self, connections: Sequence[T]) -> None:
        self.connections = tuple(connections)
        self._idle = list(connections)
        self._waiting: dict[str, collections.deque[asyncio.Future[T]]] = {}

    @contextlib.asynccontextmanager
    async def connection(self, turn: str) -> AsyncIterator[T]:
        conn = await self._acquire(turn)
        try:
            yield conn
        finally:
            self._release(conn)

    async def _acquire(self, turn: str) -> T:
        if self._idle:
            return self._idle.pop()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(turn, collections.deque()).append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(future.result())  # handed over just as its caller gave up
            else:
                self._forget(turn, future)
            raise

    def _release(self, conn: T) -> None:
        while self._waiting:
            turn = next(iter(self._waiting))
            queue = self._waiting.pop(turn)
            future = queue.popleft()
            if queue:
                self._waiting[turn] = queue
            if not future.done():
                future.set_result(conn)
                return
        self._idle.append(conn)

    def _forget(self, turn: str, future: asyncio.Future[T]) -> None:
        queue = self._waiting.get(turn)
        if queue is not None and future in queue:
            queue.remove(future)
            if not queue:
                del self._waiting[turn]


@dataclass(frozen=True, slots=True)
class Readers:
    """Every read connection of one store; see the module docstring for which read goes where."""

    lookups: aiosqlite.Connection
    lists: TurnPool[aiosqlite.Connection]
    checkpoints: aiosqlite.Connection

    @classmethod
    async def open(cls, path: Path, pragmas: Sequence[str], lists: int) -> Readers:
        opened: list[aiosqlite.Connection] = []
        try:
            for _ in range(lists + 2):
                opened.append(await _connect(path, pragmas))
        except BaseException:
            await asyncio.gather(*(conn.close() for conn in opened), return_exceptions=True)
            raise
        return cls(opened[0], TurnPool(opened[2:]), opened[1])

    def all(self) -> tuple[aiosqlite.Connection, ...]:
        return (self.lookups, self.checkpoints, *self.lists.connections)

    async def close(self) -> None:
        for conn in self.all():
            await conn.close()


async def _connect(path: Path, pragmas: Sequence[str]) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        for pragma in pragmas:
            await conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        await conn.close()
        raise
    return conn
