"""InMemorySessionStore: get/put/append, expiry, the size cap, isolation and thread safety."""

from __future__ import annotations

import threading

import pytest

from serving.dialogue import DialogueState
from serving.session_store import InMemorySessionStore, TurnRecord


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_put_get_append_history():
    store = InMemorySessionStore()
    assert store.get("s1") is None and store.history("s1") == []
    store.put("s1", DialogueState(liked=[1]))
    store.append("s1", TurnRecord(user="hi", reply="hello", recommended=[2, 3]))
    store.append("s1", TurnRecord(user="more", reply="ok", recommended=[4]))
    assert store.get("s1").liked == [1]
    assert [t.user for t in store.history("s1")] == ["hi", "more"]
    assert store.history("s1")[0].recommended == [2, 3]


def test_returned_state_is_a_copy():
    store = InMemorySessionStore()
    state = DialogueState(liked=[1])
    store.put("s", state)
    state.liked.append(99)
    store.get("s").liked.append(98)
    assert store.get("s").liked == [1]


def test_sessions_expire_after_ttl_since_last_write():
    clock = FakeClock()
    store = InMemorySessionStore(ttl_s=10, clock=clock)
    store.put("a", DialogueState())
    clock.now = 8
    store.append("a", TurnRecord(user="u", reply="r"))
    store.put("b", DialogueState())
    clock.now = 17
    assert store.get("a") is not None  # refreshed at t=8
    clock.now = 19
    assert store.get("a") is None and store.history("a") == []
    assert len(store) == 0


def test_least_recently_written_session_is_evicted():
    store = InMemorySessionStore(max_sessions=2)
    store.put("a", DialogueState())
    store.put("b", DialogueState())
    store.put("a", DialogueState(turn=1))
    store.put("c", DialogueState())
    assert store.get("b") is None
    assert store.get("a").turn == 1 and store.get("c") is not None
    assert len(store) == 2


def test_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        InMemorySessionStore(ttl_s=0)
    with pytest.raises(ValueError):
        InMemorySessionStore(max_sessions=0)


def test_concurrent_appends_are_all_kept():
    store = InMemorySessionStore()

    def work(n: int) -> None:
        for i in range(200):
            store.append(f"s{n % 2}", TurnRecord(user=str(i), reply=""))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.history("s0")) == len(store.history("s1")) == 400
