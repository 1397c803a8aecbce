"""TurnPool: at most its size in use, freed connections handed to the waiting customers in turns,
and no connection lost to a caller that gives up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from webhookd.store.sqlite.readers import TurnPool

pytestmark = pytest.mark.anyio


class Holders:
    """Callers that each take a connection under a turn key and keep it until told to let go."""

    def __init__(self, pool: TurnPool[str]) -> None:
        self.pool = pool
        self.served: list[tuple[str, str, int]] = []
        """(turn, connection, caller) of each caller, in the order they got a connection."""
        self._done: dict[int, asyncio.Event] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, turn: str) -> int:
        index = len(self.tasks)
        self._done[index] = asyncio.Event()
        self.tasks.append(asyncio.create_task(self._hold(turn, index)))
        return index

    async def _hold(self, turn: str, index: int) -> None:
        async with self.pool.connection(turn) as conn:
            self.served.append((turn, conn, index))
            await self._done[index].wait()

    def let_go(self, index: int) -> None:
        self._done[index].set()

    async def hand_on(self) -> None:
        """The caller served last lets go; wait until another caller is served."""
        count = len(self.served)
        self.let_go(self.served[-1][2])
        await until(lambda: len(self.served) > count)


async def until(check: Callable[[], bool]) -> None:
    """Let the other tasks run until ``check()`` holds (everything here is on one loop)."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_no_more_than_size_are_in_use_and_a_freed_one_goes_to_a_waiter() -> None:
    holders = Holders(TurnPool(["c1", "c2"]))
    first, _, _ = holders.start("a"), holders.start("b"), holders.start("c")
    await until(lambda: len(holders.served) == 2)
    await settle()
    assert len(holders.served) == 2
    holders.let_go(first)
    await until(lambda: len(holders.served) == 3)
    assert holders.served[2][:2] == ("c", holders.served[0][1])


async def test_customers_take_turns_however_many_reads_one_has_queued() -> None:
    holders = Holders(TurnPool(["only"]))
    holders.start("a")
    await until(lambda: len(holders.served) == 1)
    for _ in range(4):
        holders.start("a")
    holders.start("b")
    holders.start("c")
    await settle()
    for _ in range(6):
        await holders.hand_on()
    assert [turn for turn, _, _ in holders.served] == ["a", "a", "b", "c", "a", "a", "a"]


async def test_a_waiter_that_gives_up_loses_no_connection() -> None:
    pool = TurnPool(["only"])
    holders = Holders(pool)
    holder = holders.start("a")
    await until(lambda: len(holders.served) == 1)
    quitter = holders.start("b")
    holders.start("c")
    await settle()
    holders.tasks[quitter].cancel()
    holders.let_go(holder)
    await until(lambda: len(holders.served) == 2)
    assert holders.served[1][:2] == ("c", "only")


async def test_a_connection_handed_over_as_its_caller_gives_up_goes_back() -> None:
    pool = TurnPool(["only"])
    async with pool.connection("a"):
        waiter = asyncio.create_task(pool._acquire("b"))  # private: to cancel it at that moment
        await settle()
    waiter.cancel()  # the connection was just handed to it; it gives up before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    holders = Holders(pool)
    holders.start("c")
    await until(lambda: holders.served == [("c", "only", 0)])
