"""An unmodified FastAPI app (Debian's python3-fastapi 0.92, pydantic 1.10)
for tests/e2e/test_fastapi.py.

Side channel: the directory in $GW_TEST_DIR.

    startup/shutdown events   "startup PID" / "shutdown PID" in events.log; the
                              startup handler keeps the running loop in LOOP
    GET  /items/{item_id}     int path param, q and limit query params
    POST /items               pydantic body validation (422 with detail)
    GET  /secure              Depends: X-Token checked by a dependency (401),
                              a second dependency yielding a value
    GET  /async, /sync        async def / def endpoints: pid, thread name
    GET  /stream              StreamingResponse of an async generator; after
                              the first part waits for the file stream-go
    POST /bg?name=N           BackgroundTasks: a task that waits for the file
                              bg-go-N, then writes bg-N
    GET  /teapot              raises TeapotError -> custom handler, 418 JSON
    GET  /loop                a sync endpoint that runs a coroutine on LOOP
                              with run_coroutine_threadsafe().result()
"""
import asyncio
import os
import threading
import time
from typing import List, Optional

from fastapi import BackgroundTasks, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

app = FastAPI()
LOOP = None


def _dir():
    return os.environ["GW_TEST_DIR"]


def _append(name, line):
    with open(os.path.join(_dir(), name), "a") as f:
        f.write(line + "\n")


@app.on_event("startup")
async def on_startup():
    global LOOP
    LOOP = asyncio.get_running_loop()
    _append("events.log", "startup %d" % os.getpid())


@app.on_event("shutdown")
async def on_shutdown():
    _append("events.log", "shutdown %d" % os.getpid())


class Item(BaseModel):
    name: str = Field(..., min_length=1)
    price: float = Field(..., gt=0)
    tags: List[str] = []


class TeapotError(Exception):
    def __init__(self, what):
        self.what = what


@app.exception_handler(TeapotError)
async def teapot_handler(request: Request, exc: TeapotError):
    return JSONResponse(status_code=418, content={"error": "teapot", "what": exc.what,
                                                  "path": request.url.path})


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: Optional[str] = None, limit: int = 10):
    return {"item_id": item_id, "q": q, "limit": limit}


@app.post("/items", status_code=201)
async def create_item(item: Item):
    return {"name": item.name, "price": item.price, "tags": item.tags,
            "total": round(item.price * 1.2, 2)}


def verify_token(x_token: str = Header(...)):
    if x_token != "secret":
        raise HTTPException(status_code=401, detail="bad token")
    return x_token


def get_db():
    db = {"name": "db-%d" % os.getpid()}
    try:
        yield db
    finally:
        db["closed"] = True


@app.get("/secure")
async def secure(token: str = Depends(verify_token), db: dict = Depends(get_db)):
    return {"token": token, "db": db["name"]}


@app.get("/async")
async def async_endpoint():
    return {"pid": os.getpid(), "thread": threading.current_thread().name}


@app.get("/sync")
def sync_endpoint():
    return {"pid": os.getpid(), "thread": threading.current_thread().name}


@app.get("/stream")
async def stream():
    flag = os.path.join(_dir(), "stream-go")

    async def gen():
        yield b"part 0\n"
        deadline = time.monotonic() + 10
        while not os.path.exists(flag) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        _append("stream.log", "go seen %s" % os.path.exists(flag))
        for i in (1, 2):
            yield b"part %d\n" % i
    return StreamingResponse(gen(), media_type="text/plain")


def write_bg(name: str, pid: int):
    # runs after the response: waits (up to 10 s) for the client to say it has it
    flag = os.path.join(_dir(), "bg-go-" + name)
    deadline = time.monotonic() + 10
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.01)
    _append("bg-" + name, "done %d go %s" % (pid, os.path.exists(flag)))


@app.post("/bg")
async def bg(name: str, tasks: BackgroundTasks):
    tasks.add_task(write_bg, name, os.getpid())
    return {"queued": name, "exists": os.path.exists(os.path.join(_dir(), "bg-" + name))}


@app.get("/teapot")
async def teapot():
    raise TeapotError("earl grey")


async def _on_loop():
    await asyncio.sleep(0.01)
    return {"pid": os.getpid(), "loop": id(asyncio.get_running_loop()),
            "thread": threading.current_thread().name}


@app.get("/loop")
def loop_endpoint():
    fut = asyncio.run_coroutine_threadsafe(_on_loop(), LOOP)
    res = fut.result(timeout=5)
    res["endpoint_thread"] = threading.current_thread().name
    res["global_loop"] = id(LOOP)
    res["loop_running"] = LOOP.is_running()
    return res
