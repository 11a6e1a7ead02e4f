"""The event bus: fan-out, bounded queues, a slow listener never slows the publisher."""

from __future__ import annotations

from mcpguard.events import EventBus, EventsDropped, UpstreamState


async def test_every_subscriber_gets_every_event_in_order():
    bus = EventBus()
    a, b = bus.subscribe(), bus.subscribe()
    for i in range(5):
        bus.publish(UpstreamState(server="s", state="up", detail=str(i)))
    for sub in (a, b):
        got = [(await sub.get()).detail for _ in range(5)]
        assert got == ["0", "1", "2", "3", "4"]


async def test_a_full_subscriber_loses_events_and_is_told_how_many():
    bus = EventBus()
    slow = bus.subscribe(maxsize=3)
    fast = bus.subscribe(maxsize=100)
    for i in range(10):
        bus.publish(UpstreamState(server="s", state="up", detail=str(i)))  # never blocks
    first = await slow.get()
    assert isinstance(first, EventsDropped) and first.count == 7
    assert [(await slow.get()).detail for _ in range(3)] == ["0", "1", "2"]
    assert slow.get_nowait() is None
    assert len([fast.get_nowait() for _ in range(10)]) == 10


async def test_a_listener_that_raises_does_not_reach_the_publisher():
    bus = EventBus()
    seen = []
    bus.add_listener(lambda e: 1 / 0)
    remove = bus.add_listener(seen.append)
    bus.publish(UpstreamState(server="s", state="down"))
    assert len(seen) == 1 and bus.listener_errors == 1
    remove()
    bus.publish(UpstreamState(server="s", state="up"))
    assert len(seen) == 1


async def test_closed_subscription_gets_nothing_more():
    bus = EventBus()
    with bus.subscribe() as sub:
        pass
    bus.publish(UpstreamState(server="s", state="up"))
    assert sub.get_nowait() is None
