"""
An unmodified FastAPI app (Debian's python3-fastapi 0.92 with pydantic 1.10)
under the Python runtime's ASGI worker (apps/fastapi_app.py): path and query
parameters, pydantic body validation, dependencies, async and sync
endpoints, StreamingResponse, BackgroundTasks, startup/shutdown events,
exception handlers, and a sync endpoint that runs a coroutine on its
worker's event loop with asyncio.run_coroutine_threadsafe (one loop per
worker, checked against `gatewayctl status --json`).

The app reports through files in $GW_TEST_DIR (the tmp_dir fixture).
"""
import json
import os
import threading

from gwharness import build_request, env_for, read_gated_stream, read_lines, wait_lines

APP = "py:fastapi_app:app"


def call(c, method, target, headers=(), body=None):
    c.send(build_request(method, target, headers=list(headers), body=body))
    r = c.read_response()
    return r, (json.loads(r.body) if r.body[:1] in (b"{", b"[") else None)


def test_fastapi_params_and_validation(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    c = gw.connect()
    r, j = call(c, "GET", "/items/42?q=foo&limit=3")
    assert r.status == 200 and j == {"item_id": 42, "q": "foo", "limit": 3}, r
    r, j = call(c, "GET", "/items/7")
    assert r.status == 200 and j == {"item_id": 7, "q": None, "limit": 10}, r
    r, j = call(c, "GET", "/items/abc")
    assert r.status == 422 and [d["loc"] for d in j["detail"]] == [["path", "item_id"]], r
    r, j = call(c, "GET", "/items/1?limit=many")
    assert r.status == 422 and [d["loc"] for d in j["detail"]] == [["query", "limit"]], r
    ok = json.dumps({"name": "pen", "price": 2.5, "tags": ["a", "b"]}).encode()
    r, j = call(c, "POST", "/items", [("Content-Type", "application/json")], ok)
    assert r.status == 201 and j == {"name": "pen", "price": 2.5, "tags": ["a", "b"],
                                     "total": 3.0}, r
    bad = json.dumps({"price": -1, "tags": "x"}).encode()
    r, j = call(c, "POST", "/items", [("Content-Type", "application/json")], bad)
    assert r.status == 422, r
    locs = sorted(tuple(d["loc"]) for d in j["detail"])
    assert locs == [("body", "name"), ("body", "price"), ("body", "tags")], j
    assert {d["type"] for d in j["detail"]} == {"value_error.missing",
                                               "value_error.number.not_gt",
                                               "type_error.list"}, j
    r, j = call(c, "POST", "/items", [("Content-Type", "application/json")], b"{not json")
    assert r.status == 422 and j["detail"][0]["type"] == "value_error.jsondecode", r
    r, j = call(c, "GET", "/no/such/route")
    assert r.status == 404 and j == {"detail": "Not Found"}, r
    c.close()


def test_fastapi_dependencies(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    pid = gw.wait_workers(1)[0]
    c = gw.connect()
    r, j = call(c, "GET", "/secure")
    assert r.status == 422 and j["detail"][0]["loc"] == ["header", "x-token"], r
    r, j = call(c, "GET", "/secure", [("X-Token", "wrong")])
    assert r.status == 401 and j == {"detail": "bad token"}, r
    r, j = call(c, "GET", "/secure", [("X-Token", "secret")])
    assert r.status == 200 and j == {"token": "secret", "db": "db-%d" % pid}, r
    c.close()


def test_fastapi_async_and_sync_endpoints(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    pid = gw.wait_workers(1)[0]
    c = gw.connect()
    r, j = call(c, "GET", "/async")
    assert r.status == 200 and j == {"pid": pid, "thread": "MainThread"}, r
    r, j = call(c, "GET", "/sync")
    assert r.status == 200 and j["pid"] == pid, r
    assert j["thread"] != "MainThread", "a def endpoint must run in the thread pool: %r" % j
    c.close()


def test_fastapi_streaming_response(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    r, seen = read_gated_stream(gw, "/stream", os.path.join(tmp_dir, "stream-go"))
    assert r.status == 200 and r.body == b"part 0\npart 1\npart 2\n", r
    assert r.header("Content-Type", "").startswith("text/plain"), r.headers
    assert seen[0] == b"part 0\n", seen
    assert read_lines(os.path.join(tmp_dir, "stream.log")) == ["go seen True"]


def test_fastapi_background_task_runs_after_response(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    pid = gw.wait_workers(1)[0]
    c = gw.connect(timeout=5)
    try:
        # the task waits for bg-go-job1, which exists only once the response is in
        r, j = call(c, "POST", "/bg?name=job1", body=b"")
    finally:
        open(os.path.join(tmp_dir, "bg-go-job1"), "w").close()
    assert r.status == 200 and j == {"queued": "job1", "exists": False}, r
    assert wait_lines(os.path.join(tmp_dir, "bg-job1")) == ["done %d go True" % pid]
    # the connection is still usable after the task ran
    r, j = call(c, "GET", "/items/1")
    assert r.status == 200, r
    c.close()


def test_fastapi_startup_shutdown_events(gateway, tmp_dir):
    gw = gateway(APP, workers=2, env=env_for(tmp_dir))
    pids = gw.wait_workers(2)
    log = os.path.join(tmp_dir, "events.log")
    assert sorted(read_lines(log)) == sorted("startup %d" % p for p in pids)
    assert gw.stop() == 0 and not gw.problems, gw.problems
    lines = read_lines(log)
    assert len(lines) == 4 and sorted(lines[2:]) == sorted("shutdown %d" % p for p in pids), \
        lines


def test_fastapi_exception_handler(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    r = gw.get("/teapot")
    assert r.status == 418, r
    assert r.header("Content-Type") == "application/json", r.headers
    assert json.loads(r.body) == {"error": "teapot", "what": "earl grey", "path": "/teapot"}


def test_fastapi_sync_endpoint_runs_coroutine_on_worker_loop(gateway, tmp_dir):
    """A startup handler keeps asyncio.get_running_loop(); a def endpoint (in
    the thread pool) runs a coroutine there with run_coroutine_threadsafe and
    waits for it. With -w 4 and concurrent clients, 4 workers answer with 4
    pids and 4 loops, each the loop its worker reports to the master."""
    gw = gateway(APP, workers=4, env=env_for(tmp_dir))
    pids = gw.wait_workers(4)
    results = []
    errors = []
    lock = threading.Lock()

    def client():
        try:
            c = gw.connect(timeout=10, track=False)
            try:
                for _ in range(6):
                    r, j = call(c, "GET", "/loop")
                    assert r.status == 200, r
                    with lock:
                        results.append(j)
            finally:
                c.close()
        except Exception as e:      # reported below
            with lock:
                errors.append(repr(e))
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(results) == 48
    for j in results:
        assert j["thread"] == "MainThread" and j["endpoint_thread"] != "MainThread", j
        assert j["loop"] == j["global_loop"] and j["loop_running"] is True, j
    loops = {}
    for j in results:
        loops.setdefault(j["pid"], set()).add(j["loop"])
    assert sorted(loops) == pids, "4 workers must answer: %r vs %r" % (sorted(loops), pids)
    assert all(len(v) == 1 for v in loops.values()), loops
    assert len({(p, next(iter(v))) for p, v in loops.items()}) == 4
    rows = gw.status()["workers"]
    reported = {w["pid"]: w["loop"] for w in rows}
    assert sorted(reported) == pids, rows
    for pid, ls in loops.items():
        kind, lpid, lid = reported[pid].split(":")
        assert int(lpid) == pid and int(lid, 16) == next(iter(ls)), (reported[pid], ls)
