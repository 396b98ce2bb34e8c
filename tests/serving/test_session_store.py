"""Session stores: one contract suite run against InMemorySessionStore and RedisSessionStore (a real
redis-server from the fixture), then what is particular to each."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from serving.config import SessionStoreConfig
from serving.dialogue import DialogueState
from serving.errors import CorruptSessionError, SessionStoreUnavailableError
from serving.session_store import InMemorySessionStore, Session, SessionStore, TurnRecord, open_session_store

MakeStore = Callable[..., SessionStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[MakeStore]:
    """Builds stores of the parametrised kind; Redis ones share the (emptied) test server."""
    from serving.redis_store import RedisSessionStore

    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    made: list[SessionStore] = []

    def make(ttl_s: float = 3600.0) -> SessionStore:
        store = InMemorySessionStore(ttl_s) if url is None else RedisSessionStore(url, ttl_s=ttl_s)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def _add_turn(user: str) -> Callable[[Session | None], Session]:
    """A read-modify-write: one more turn in the log and in the state's counter."""

    def change(session: Session | None) -> Session:
        session = session or Session()
        state = session.state.model_copy(update={"turn": session.state.turn + 1})
        return session.model_copy(update={"state": state, "turns": [*session.turns, TurnRecord(user=user, reply="")]})

    return change


# ---- the contract: every store ---------------------------------------------------------------------------


def test_put_get_append_history(make_store):
    store = make_store()
    assert store.get("s1") is None and store.history("s1") == [] and store.load("s1") is None
    store.put("s1", DialogueState(liked=[1], mood="darker"))
    store.append("s1", TurnRecord(user="hi", reply="hello", recommended=[2, 3]))
    store.append("s1", TurnRecord(user="more", reply="ok", recommended=[4]))
    assert store.get("s1") == DialogueState(liked=[1], mood="darker")
    assert [(t.user, t.reply, t.recommended) for t in store.history("s1")] == [
        ("hi", "hello", [2, 3]), ("more", "ok", [4])
    ]
    assert store.load("s1").revision == 3 and store.load("s1").schema_version == 1
    assert store.get("s2") is None


def test_update_returns_what_it_stored(make_store):
    store = make_store()
    first = store.update("s", lambda s: Session(owner="key-a", state=DialogueState(liked=[7])))
    assert first.revision == 1 and first.owner == "key-a"
    second = store.update("s", lambda s: s.model_copy(update={"state": DialogueState(liked=[*s.state.liked, 8])}))
    assert second.revision == 2 and second.owner == "key-a" and second.state.liked == [7, 8]
    assert store.load("s") == second


def test_a_failing_change_stores_nothing(make_store):
    store = make_store()
    store.put("s", DialogueState(liked=[1]))

    def broken(session: Session | None) -> Session:
        raise RuntimeError("change failed")

    with pytest.raises(RuntimeError, match="change failed"):
        store.update("s", broken)
    assert store.load("s").revision == 1 and store.get("s").liked == [1]


def test_returned_state_is_a_copy(make_store):
    store = make_store()
    state = DialogueState(liked=[1])
    store.put("s", state)
    state.liked.append(99)
    store.get("s").liked.append(98)
    store.history("s").append(TurnRecord(user="x", reply="y"))
    assert store.get("s").liked == [1] and store.history("s") == []


def test_sessions_expire(make_store):
    store = make_store(ttl_s=0.3)
    store.put("short", DialogueState(turn=1))
    store.append("short", TurnRecord(user="u", reply="r"))
    deadline = time.monotonic() + 10
    while store.load("short") is not None:
        assert time.monotonic() < deadline, "the session never expired"
        time.sleep(0.1)
    assert store.get("short") is None and store.history("short") == []
    assert store.update("short", _add_turn("again")).revision == 1, "an expired session starts over"


def test_concurrent_read_modify_writes_lose_nothing(make_store):
    store = make_store()
    n_threads, n_updates = 6, 20
    start = threading.Barrier(n_threads)
    failures: list[BaseException] = []

    def work(n: int) -> None:
        start.wait()
        try:
            for i in range(n_updates):
                store.update("shared", _add_turn(f"{n}-{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    session = store.load("shared")
    total = n_threads * n_updates
    assert session.revision == total and session.state.turn == total
    assert sorted(t.user for t in session.turns) == sorted(f"{n}-{i}" for n in range(n_threads)
                                                          for i in range(n_updates))
    for n in range(n_threads):  # each thread's updates stay in its own order
        assert [t.user for t in session.turns if t.user.startswith(f"{n}-")] == [f"{n}-{i}" for i in range(n_updates)]


def test_health(make_store):
    assert make_store().health()


# ---- the in-memory store ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_memory_sessions_expire_after_ttl_since_last_write():
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


def test_memory_least_recently_written_session_is_evicted():
    store = InMemorySessionStore(max_sessions=2)
    store.put("a", DialogueState())
    store.put("b", DialogueState())
    store.put("a", DialogueState(turn=1))
    store.put("c", DialogueState())
    assert store.get("b") is None
    assert store.get("a").turn == 1 and store.get("c") is not None
    assert len(store) == 2


def test_memory_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        InMemorySessionStore(ttl_s=0)
    with pytest.raises(ValueError):
        InMemorySessionStore(max_sessions=0)


# ---- the Redis store --------------------------------------------------------------------------------------


def test_redis_record_layout_and_ttl(redis_url):
    import redis

    from serving.redis_store import RedisSessionStore

    store = RedisSessionStore(redis_url, ttl_s=120, key_prefix="test:")
    store.put("abc", DialogueState(liked=[5]))
    with redis.Redis.from_url(redis_url) as client:
        assert client.keys("*") == [b"test:abc"]
        assert 0 < client.pttl("test:abc") <= 120_000
        assert Session.model_validate_json(client.get("test:abc")).state.liked == [5]
    store.close()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not json at all", "Invalid JSON"),
        ('{"schema_version": 2, "state": {}}', "schema_version"),
        ('{"schema_version": 1, "state": {"liked": "many"}}', "state.liked"),
        ('{"hello": "world"}', "hello"),
    ],
)
def test_redis_unreadable_records_raise_a_clear_error(redis_url, value, problem):
    import redis

    from serving.redis_store import RedisSessionStore

    store = RedisSessionStore(redis_url)
    with redis.Redis.from_url(redis_url) as client:
        client.set("ilmrec:session:bad", value)
    with pytest.raises(CorruptSessionError, match=problem) as caught:
        store.get("bad")
    assert "start a new session" in caught.value.message and caught.value.status_code == 500
    with pytest.raises(CorruptSessionError):
        store.append("bad", TurnRecord(user="u", reply="r"))
    store.close()


def test_redis_value_of_another_type_is_a_clear_error(redis_url):
    import redis

    from serving.redis_store import RedisSessionStore

    with redis.Redis.from_url(redis_url) as client:
        client.rpush("ilmrec:session:list", "x")
    store = RedisSessionStore(redis_url)
    with pytest.raises(CorruptSessionError, match="another type"):
        store.load("list")
    with pytest.raises(CorruptSessionError, match="another type"):
        store.put("list", DialogueState())
    store.close()


def test_redis_unreachable_is_a_503_error(dead_redis_url):
    from serving.redis_store import RedisSessionStore

    store = RedisSessionStore(dead_redis_url, timeout_s=1)
    assert not store.health()
    assert "hunter2" not in store.where
    for call in (lambda: store.load("s"), lambda: store.put("s", DialogueState())):
        with pytest.raises(SessionStoreUnavailableError) as caught:
            call()
        assert caught.value.status_code == 503 and "hunter2" not in caught.value.message
    store.close()


# ---- choosing a store -------------------------------------------------------------------------------------


def test_open_session_store_picks_by_url(redis_url):
    from serving.redis_store import RedisSessionStore

    memory = open_session_store(SessionStoreConfig(ttl_s=5, max_sessions=3))
    assert isinstance(memory, InMemorySessionStore) and (memory.ttl_s, memory.max_sessions) == (5, 3)
    shared = open_session_store(SessionStoreConfig(url=redis_url, ttl_s=7, key_prefix="app:"))
    assert isinstance(shared, RedisSessionStore) and (shared.ttl_s, shared.key_prefix) == (7, "app:")
    shared.close()
    with pytest.raises(ValueError, match="memory"):
        SessionStoreConfig(url="postgres://db")
