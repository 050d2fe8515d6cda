"""The judge's call slots: a cap on calls in flight, retries first, cancellation that loses nothing else."""

from __future__ import annotations

import asyncio

import pytest

from rlaif.oracle.call_slots import CallSlots


def test_never_more_than_n_in_flight_and_retries_go_first():
    async def go():
        slots = CallSlots(2)
        started: list[str] = []
        gate = asyncio.Event()
        peak = 0

        def fn(name):
            async def call():
                nonlocal peak
                started.append(name)
                peak = max(peak, slots.in_flight)
                await gate.wait()
                return name
            return call

        tasks = [asyncio.ensure_future(slots.call(fn(f"new{i}"))) for i in range(4)]
        await asyncio.sleep(0.01)
        assert started == ["new0", "new1"]  # two slots busy, two calls queued
        tasks.append(asyncio.ensure_future(slots.call(fn("retry"), retry=True)))
        await asyncio.sleep(0.01)
        gate.set()
        assert await asyncio.gather(*tasks) == ["new0", "new1", "new2", "new3", "retry"]
        assert started[2] == "retry"  # ahead of the new calls queued before it
        assert peak == 2 and slots.in_flight == 0
        await slots.aclose()

    asyncio.run(go())


def test_a_cancelled_caller_takes_its_call_out_of_the_queue_or_stops_it_in_flight():
    async def go():
        slots = CallSlots(1)
        events: list[str] = []
        release = asyncio.Event()

        async def slow():
            events.append("slow sent")
            try:
                await release.wait()
            except asyncio.CancelledError:
                events.append("slow stopped")
                raise
            return "slow"

        async def queued():
            events.append("queued sent")  # must never happen: its caller gave up first
            return "queued"

        async def after():
            return "after"

        a = asyncio.ensure_future(slots.call(slow))
        b = asyncio.ensure_future(slots.call(queued))
        await asyncio.sleep(0.01)
        b.cancel()
        a.cancel()
        for t in (a, b):
            with pytest.raises(asyncio.CancelledError):
                await t
        # the slot lives on and makes the next call
        assert await asyncio.wait_for(slots.call(after), 1) == "after"
        assert events == ["slow sent", "slow stopped"]
        assert slots.in_flight == 0
        await slots.aclose()

    asyncio.run(go())


def test_errors_reach_the_caller_and_the_slot_goes_on():
    async def go():
        slots = CallSlots(1)

        async def bad():
            raise ValueError("no")

        async def good():
            return 1

        with pytest.raises(ValueError, match="no"):
            await slots.call(bad)
        assert await slots.call(good) == 1
        await slots.aclose()

    asyncio.run(go())


def test_slots_ended_by_an_interruption_are_restarted_and_close_cancels_the_queue():
    async def go():
        slots = CallSlots(2)
        hold = asyncio.Event()

        async def wait():
            await hold.wait()

        async def one():
            return 1

        calls = [asyncio.ensure_future(slots.call(wait)) for _ in range(3)]
        await asyncio.sleep(0.01)
        # an interrupted run cancels every task of its loop, the slots included
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)  # as Labeler._run lets them unwind
        assert all(t.done() for t in slots._tasks if t is not None)
        assert await asyncio.wait_for(slots.call(one), 1) == 1  # new slots took over

        waiting = [asyncio.ensure_future(slots.call(wait)) for _ in range(3)]  # two in flight, one queued
        await asyncio.sleep(0.01)
        await slots.aclose()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        with pytest.raises(RuntimeError, match="closed"):
            await slots.call(one)

    asyncio.run(go())
