"""The updater's inbox: newest offer wins; duplicates of the update in progress are dropped."""

from __future__ import annotations

import threading

from agent.mailbox import Mailbox


def test_the_newest_offer_wins() -> None:
    box = Mailbox()
    box.offer(b"one")
    box.offer(b"two")
    assert box.pending
    assert box.take() == b"two"
    assert box.take() is None


def test_discard_if_drops_only_a_matching_offer() -> None:
    box = Mailbox()
    assert box.discard_if(lambda _: True) is False  # nothing waiting
    box.offer(b"same")
    assert box.discard_if(lambda doc: doc == b"same") is False
    assert not box.pending
    box.offer(b"newer")
    assert box.discard_if(lambda doc: doc == b"same") is True
    assert box.take() == b"newer"


def test_take_waits_for_an_offer() -> None:
    box = Mailbox()
    timer = threading.Timer(0.1, box.offer, args=(b"late",))
    timer.start()
    assert box.take(timeout_s=5) == b"late"
    timer.join()
