"""A duplicate-key Registry as local pubsub, plus a unique Registry with Via names.

Subscribers are supervised GenServers that register themselves under the topics
they follow; a publisher looks the topic up and sends to every entry. Entries
leave the registry the moment their process ends, and a listener is told of
every register and unregister.

Run it with ``python examples/pubsub_registry.py``.
"""

import logging

import trio

import foundation_trio as ft

logging.getLogger("foundation_trio").addHandler(logging.NullHandler())


class Subscriber(ft.GenServer):
    async def init(self, topics, follows):
        self.inbox = []
        for topic in follows:
            topics.register(topic, {"subscriber": self.pid})

    async def handle_info(self, message):
        match message:
            case ("news", topic, text):
                self.inbox.append(f"{topic}: {text}")

    async def handle_call(self, request, caller):
        if request == "inbox":
            return list(self.inbox)

    async def handle_cast(self, request):
        if request == "crash":
            raise RuntimeError("subscriber crashed on purpose")


async def publish(topics, topic, text):
    """Send ``text`` to every subscriber of ``topic``; return how many got it."""
    entries = topics.lookup(topic)
    for pid, _value in entries:
        await ft.send(pid, ("news", topic, text))
    return len(entries)


async def drain_registry_events():
    """Take every RegistryEvent waiting in the calling process's mailbox."""
    events = []
    while True:
        try:
            # timeout=0 only looks: ReceiveTimeout when nothing matching is waiting.
            events.append(await ft.receive(lambda m: isinstance(m, ft.RegistryEvent), 0))
        except ft.ReceiveTimeout:
            return events


async def main():
    async with ft.open_node("pubsub") as node:
        # The body of the open_node block is a process, so it can be a listener.
        topics = ft.Registry(keys="duplicate", name="topics", listeners=[ft.self_pid()])
        sup = await node.start_supervisor(
            [
                topics.child_spec(),  # the registry lives while this child runs
                ft.ChildSpec("ann", Subscriber, args=(topics, ["weather", "sport"]), name="ann"),
                ft.ChildSpec("bob", Subscriber, args=(topics, ["weather"]), name="bob"),
            ]
        )
        print("weather subscribers:", topics.count("weather"), "sport:", topics.count("sport"))
        print("published weather to", await publish(topics, "weather", "sunny"))
        print("published sport to", await publish(topics, "sport", "3-1"))

        # dispatch() runs a function in the caller with the entries of a key.
        def send_all(entries):
            for pid, _ in entries:
                ft.send_nowait(pid, ("news", "weather", "rain later"))
            return len(entries)

        print("dispatched weather to", topics.dispatch("weather", send_all))
        print("ann's inbox:", await ft.call("ann", "inbox"))
        print("bob's inbox:", await ft.call("bob", "inbox"))

        # A crashed subscriber's entries are gone at once; its restarted successor
        # registers again in its init. The listener (this process) hears of both.
        await drain_registry_events()  # the registrations made at start-up
        old_bob = ft.whereis("bob")
        ref = ft.monitor("bob")
        await ft.cast("bob", "crash")
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref, timeout=2)
        await ft.which_children(sup)  # the restart is done once the supervisor answers
        print(f"bob restarted: {old_bob} -> {ft.whereis('bob')}")
        for event in await drain_registry_events():
            print(f"listener got: {event.kind} {event.key!r} by {event.pid}")
        print("weather subscribers now:", [pid for pid, _ in topics.lookup("weather")])
        print("bob's keys:", topics.keys(ft.whereis("bob")))

        # A unique registry gives processes names that are not node-wide, via Via.
        rooms = ft.Registry(keys="unique", name="rooms")
        await ft.start_child(
            sup,
            ft.ChildSpec("lobby", Subscriber, args=(topics, []), name=ft.Via(rooms, "lobby")),
        )
        lobby = ft.Via(rooms, "lobby")
        await ft.send(lobby, ("news", "rooms", "welcome"))
        print("lobby via Via:", rooms.whereis("lobby"), await ft.call(lobby, "inbox"))
    print("done")


if __name__ == "__main__":
    trio.run(main)
