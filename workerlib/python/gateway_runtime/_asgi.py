"""The ASGI 3 worker: one asyncio event loop per worker process (uvloop
when installed), created after fork; every request is a task on it.

- http scope per the ASGI spec; `receive` streams the body as BODY frames
  arrive and returns http.disconnect once the response is complete or the
  master cancels the stream (client gone, --timeout);
- `send` streams the response within the stream's window;
- lifespan: startup before READY (a failure is an ERROR frame and exit 3),
  shutdown on a graceful exit after the last request;
- sync endpoints: Starlette/FastAPI run them in anyio's thread pool; its
  size is --threads when that is above 1 (default 40);
- the channel is read with add_reader and written once per loop iteration
  (every frame produced in one iteration leaves in one send);
- a request starts at once, inside the reader callback, and runs until it
  first waits (codec.step); most requests never wait and so never need a
  Task. A request that waits continues in a Runner: a long-lived task that
  was already the current task (asyncio.current_task()) while the request
  ran, so anyio's cancel scopes and sniffio see one task for the whole
  request. Runners are reused, one request at a time; each request still
  runs in its own copy of the context (contextvars), as in a Task of its
  own. Python 3.12's eager tasks do the same with a new Task per request.
"""

import asyncio
import collections
import contextvars
import os
import sys
import traceback

from ._proto import (F_END, MAX_DATA, RESP_BODY, Malformed, StreamFrames,
                     codec, read_rss)

step = codec.step
FINISHED = codec.FINISHED
asgi_scope = codec.asgi_scope

ASGI_INFO = {"version": "3.0", "spec_version": "2.3"}
HIGH_WATER = 4 << 20          # queued output bytes before send() waits


class Disconnected(Exception):
    pass


class AStream(codec.StreamBase):
    """One request. Its state, finish(), wake() and send()'s common case
    (start, then the whole body in one frame) are codec.StreamBase's, in C
    when the extension is built; the rest of ASGI is here."""
    __slots__ = ()

    async def _wait(self):
        f = self.w.loop.create_future()
        self.waiter = f
        await f

    async def receive(self):
        while True:
            if self.body:
                data = self.body.popleft()
                self.buffered -= len(data)
                self.consumed(len(data))
                more = bool(self.body) or not self.req_ended
                if not more:
                    self.body_done = True
                return {"type": "http.request", "body": data,
                        "more_body": more}
            if self.cancelled or self.done:
                return {"type": "http.disconnect"}
            if self.req_ended and not self.body_done:
                self.body_done = True
                return {"type": "http.request", "body": b"",
                        "more_body": False}
            await self._wait()

    def consumed(self, n):
        self.unreturned += n
        w = self.w
        if self.unreturned >= (w.window >> 1) or (self.req_ended
                                                  and not self.body):
            if not self.done and not self.cancelled:
                w.put(codec.window(self.sid, self.unreturned))
            self.unreturned = 0

    async def send_slow(self, message):
        t = message["type"]
        if t == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            status = int(message["status"])
            if not 100 <= status <= 999:
                raise ValueError("status %d out of range 100..999" % status)
            headers = message.get("headers") or []
            self.started = True
            self.status = status
            self.headers = headers
            return
        if t != "http.response.body":
            if t == "http.response.trailers":
                return
            raise RuntimeError("unexpected ASGI message %r" % (t,))
        if not self.started:
            raise RuntimeError("http.response.body before "
                               "http.response.start")
        if self.done:
            if self.cancelled:
                return      # the client is gone: dropped quietly
            raise RuntimeError("http.response.body after the response "
                               "was complete")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        w = self.w
        if not self.head_sent:
            n = len(body)
            if not more and n <= self.credit and n <= self.limit:
                # the whole response in one frame (encoded first: if the
                # headers do not encode, nothing changed and the app gets
                # the error)
                frame = codec.response(self.sid, self.status, self.headers,
                                       body, True)
                self.head_sent = True
                self.credit -= n
                self.sent_bytes = n
                self.finish()
                w.put(frame)
                return
            w.put(codec.response(self.sid, self.status, self.headers, None,
                                 False))
            self.head_sent = True
        await self.send_data(body, not more)
        if w.pending > HIGH_WATER:
            await w.drained()

    async def send_data(self, data, end):
        w = self.w
        n = len(data)
        off = 0
        mv = memoryview(data) if n > MAX_DATA else None
        while off < n:
            while self.credit <= 0 and not self.cancelled:
                await self._wait()
            if self.cancelled:
                return
            k = min(n - off, MAX_DATA, self.credit)
            self.credit -= k
            self.sent_bytes += k
            last = end and off + k >= n
            piece = data if (off == 0 and k == n) else bytes(mv[off:off + k])
            if last:
                self.finish()
            w.put(codec.data_frame(RESP_BODY, self.sid, piece, last))
            off += k
        if end and n == 0:
            self.finish()
            w.put(codec.data_frame(RESP_BODY, self.sid, b"", True))


class Runner(object):
    """A task that runs, one at a time, the requests that waited."""
    __slots__ = ("task", "st", "handoff", "wakeup", "retired")

    def __init__(self):
        self.task = self.st = self.handoff = self.wakeup = None
        self.retired = False


class Resume(object):
    """Awaited by a Runner: continue coroutine coro, which yielded `first`
    while codec.step ran it, in its own context ctx, until it ends."""
    __slots__ = ("coro", "first", "ctx")

    def __init__(self, coro, first, ctx):
        self.coro = coro
        self.first = first
        self.ctx = ctx

    def __await__(self):
        coro, val, run = self.coro, self.first, self.ctx.run
        self.coro = self.first = self.ctx = None
        while True:
            try:
                sent = yield val
            except BaseException as e:      # thrown in by the task: cancel()
                try:
                    val = run(coro.throw, e)
                except StopIteration:
                    return
            else:
                try:
                    val = run(coro.send, sent)
                except StopIteration:
                    return


class AsgiWorker(StreamFrames):
    def __init__(self, boot, app):
        StreamFrames.__init__(self, boot, app)
        self.running = 0
        self.pending_reqs = collections.deque()
        self.idle = []              # Runners with no request
        self.runners = 0
        self.own_tasks = 0          # requests in a Task of their own
        self.base_ctx = contextvars.Context()
        self.limit = int(os.environ.get("GATEWAY_WORKER_CONNECTIONS", "1000")
                         or 1000)
        self.wbuf = b""
        self.flush_scheduled = False
        self.writer_on = False
        self.drain_waiters = []
        self.state = {}
        self.scope_base = {"type": "http", "asgi": ASGI_INFO, "root_path": ""}
        self.loop = None
        self.loop_id = ""
        self.done = None
        self.lifespan = None
        self.fd = self.sock.fileno() if self.sock is not None else -1

    @property
    def pending(self):
        return len(self.wbuf)

    # -- output ------------------------------------------------------------------
    def put(self, frame):
        self.out.append(frame)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self):
        self.flush_scheduled = False
        out = self.out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self.wbuf:
            self.wbuf += data
            return              # the writer callback is on
        if not data:
            return
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        except (BrokenPipeError, ConnectionResetError):
            self.channel_closed()
            return
        if n < len(data):
            self.wbuf = data[n:]
            self.loop.add_writer(self.fd, self.on_writable)
            self.writer_on = True

    def on_writable(self):
        try:
            n = self.sock.send(self.wbuf)
        except BlockingIOError:
            return
        except (BrokenPipeError, ConnectionResetError):
            self.channel_closed()
            return
        self.wbuf = self.wbuf[n:]
        if not self.wbuf:
            self.loop.remove_writer(self.fd)
            self.writer_on = False
            waiters, self.drain_waiters = self.drain_waiters, []
            for f in waiters:
                if not f.done():
                    f.set_result(None)

    async def drained(self):
        f = self.loop.create_future()
        self.drain_waiters.append(f)
        await f

    # -- input -------------------------------------------------------------------
    def on_readable(self):
        try:
            if not self.read_input():
                self.channel_closed()
        except Malformed as e:
            sys.stderr.write("gateway_worker: malformed frame: %s\n" % e)
            sys.stderr.flush()
            self.boot.exit_now(1)

    def channel_closed(self):
        # The master is gone: exit at once (PROTOCOL.md section 7).
        self.boot.exit_now(0)

    def on_request(self, sid, fr):
        st = AStream(self, sid, fr, fr[1] & F_END, self.window,
                     self.max_body)
        self.streams[sid] = st
        if self.running >= self.limit:
            self.pending_reqs.append(st)
            return
        self.running += 1
        self.start(st)

    def on_progress(self, st):
        st.wake()

    def on_cancel(self, st, reason):
        st.done = True
        st.wake()
        if reason == "timeout" and st.task is not None:
            # --timeout: the request's task is cancelled (the app sees
            # http.disconnect first if it is in receive()).
            self.loop.call_soon(self.cancel_run, st.task, st)
        elif st.task is None:
            try:
                self.pending_reqs.remove(st)
            except ValueError:
                pass

    # -- requests ------------------------------------------------------------------
    @staticmethod
    def cancel_run(r, st):
        if r.st is st:              # still running that request
            r.task.cancel()

    def start(self, st):
        """Run request st until it first waits, with a parked runner as the
        current task; if it waits, that runner continues it. Called from
        loop callbacks, never inside a task."""
        idle = self.idle
        coro = self.run_request(st)
        if not idle:
            # A runner can take requests once its task has started (a task
            # cancelled before its first step never runs its code); until
            # the new one has, this request gets a Task of its own.
            self.new_runner()
            r = Runner()
            r.st = st
            r.task = self.loop.create_task(coro, context=self.base_ctx.copy())
            r.task.add_done_callback(self.own_task_done)
            self.own_tasks += 1
            st.task = r
            return
        r = idle[-1]                # left in the list if it stays idle
        r.st = st
        st.task = r
        ctx = self.base_ctx.copy()
        y = step(coro, ctx, self.loop, r.task)
        w = r.wakeup
        if y is FINISHED and not w.done():
            r.st = None             # the common case: it never waited
            return
        idle.pop()
        if y is FINISHED:
            # It ended, but a cancel() reached r during the step and is
            # pending in r's task: r cannot be reused.
            r.st = None
            r.retired = True
        else:
            r.handoff = (coro, y, ctx)
            if not w.done():
                w.set_result(None)

    def own_task_done(self, task):
        self.own_tasks -= 1

    def new_runner(self):
        r = Runner()
        r.task = self.loop.create_task(self.run_runner(r), name="gw-runner")
        self.runners += 1
        return r

    def retire_runners(self):
        """End the idle runners (when no request is left)."""
        idle, self.idle = self.idle, []
        for r in idle:
            r.retired = True
            if not r.wakeup.done():
                r.wakeup.set_result(None)

    async def run_runner(self, r):
        """A runner's task: parked on r.wakeup while idle (a runner is in
        self.idle exactly while it is parked)."""
        try:
            while not r.retired:
                r.wakeup = self.loop.create_future()
                self.idle.append(r)
                cancelled = False
                try:
                    await r.wakeup
                except asyncio.CancelledError:
                    cancelled = True
                h = r.handoff
                if h is None:
                    continue            # retired
                r.handoff = None
                coro, y, ctx = h
                if cancelled and asyncio.isfuture(y):
                    y.cancel()          # cancel() during its step: deliver it
                await Resume(coro, y, ctx)
                r.st = None
                if r.task.cancelling():
                    break               # a cancel still pending: retire
        finally:
            self.runners -= 1

    async def run_request(self, st):
        hooks = self.hooks
        req_obj = None
        if hooks.has_request_hooks:
            from ._hooks import Request
            r = st.req
            req_obj = Request(st.sid, r[3], r[4], r[5], r[6], r[7], r[8],
                              r[9])
            hooks.call("pre_request", self.winfo, req_obj)
        scope = asgi_scope(st.req, self.scope_base, self.state)
        try:
            await self.app(scope, st.receive, st.send)
            if not st.done and not st.cancelled:
                if not st.head_sent:
                    raise RuntimeError("the app returned without sending a "
                                       "response")
                raise RuntimeError("the app returned before the response "
                                   "was complete")
        except asyncio.CancelledError:
            if not st.cancelled:
                self.fail(st)
        except Exception:
            if not st.cancelled:
                r = st.req
                sys.stderr.write("gateway_worker: error handling %s %s\n"
                                 % (r[3], r[4].decode("latin-1")))
                traceback.print_exc()
                sys.stderr.flush()
                self.fail(st)
        finally:
            self.running -= 1
            if not st.done:
                st.done = True
                self.streams.pop(st.sid, None)
            if req_obj is not None:
                self.winfo.nr = self.served
                hooks.post_request(self.winfo, req_obj, scope, st.status,
                                   st.headers, st.sent_bytes)
            if self.pending_reqs or self.quitting:
                self.after_request()

    def after_request(self):
        """A request ended: start queued ones (outside this task); on a
        graceful stop, finish once the last one is done."""
        while self.pending_reqs and self.running < self.limit:
            nxt = self.pending_reqs.popleft()
            if not nxt.cancelled:
                self.running += 1
                self.loop.call_soon(self.start, nxt)
        if self.quitting and not self.streams and self.done is not None \
                and not self.done.done():
            self.done.set_result(None)

    def fail(self, st):
        if st.done:
            return
        if not st.head_sent:
            st.head_sent = True
            st.status = 500
            st.finish()
            self.put(codec.response(st.sid, 500,
                                    [(b"content-type", b"text/plain")],
                                    b"Internal Server Error\n", True))
        else:
            st.finish()
            self.put(codec.cancel(st.sid, "app-error"))

    # -- lifespan ------------------------------------------------------------------
    async def lifespan_startup(self):
        inq = asyncio.Queue()
        outq = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": ASGI_INFO, "state": self.state}

        async def receive():
            return await inq.get()

        async def send(message):
            await outq.put(message)

        async def run():
            try:
                await self.app(scope, receive, send)
            except BaseException as e:
                await outq.put({"type": "gateway.lifespan.error", "exc": e})
                if not isinstance(e, Exception):
                    raise
            else:
                await outq.put({"type": "gateway.lifespan.returned"})

        task = self.loop.create_task(run())
        self.lifespan = (task, inq, outq, [False])
        await inq.put({"type": "lifespan.startup"})
        msg = await outq.get()
        t = msg["type"]
        if t == "lifespan.startup.complete":
            self.lifespan[3][0] = True
            return None
        if t == "lifespan.startup.failed":
            text = str(msg.get("message") or "").strip()
            if "\n" in text:
                # Starlette sends the whole traceback: it goes to the log,
                # its last line (the exception) into the one-line reason.
                sys.stderr.write("gateway_worker: lifespan startup failed:\n%s\n"
                                 % text)
                sys.stderr.flush()
                text = text.splitlines()[-1].strip()
            return "lifespan startup failed: %s" % (text or "(no message)")
        if t == "gateway.lifespan.error":
            e = msg["exc"]
            if inq.empty():
                # The app raised after taking lifespan.startup: its startup
                # handler failed.
                sys.stderr.write("gateway_worker: lifespan startup raised:\n")
                traceback.print_exception(type(e), e, e.__traceback__)
                sys.stderr.flush()
                return "lifespan startup raised %s: %s" % (type(e).__name__, e)
            self.lifespan = None        # lifespan not supported by the app
            return None
        self.lifespan = None            # returned without a word: no lifespan
        return None

    async def lifespan_shutdown(self, timeout):
        if self.lifespan is None or not self.lifespan[3][0]:
            return
        task, inq, outq, _ = self.lifespan
        await inq.put({"type": "lifespan.shutdown"})
        try:
            msg = await asyncio.wait_for(outq.get(), timeout)
        except asyncio.TimeoutError:
            sys.stderr.write("gateway_worker: lifespan shutdown did not "
                             "complete within %.0f s\n" % timeout)
            return
        if msg["type"] == "lifespan.shutdown.failed":
            sys.stderr.write("gateway_worker: lifespan shutdown failed: %s\n"
                             % msg.get("message", ""))
        elif msg["type"] == "gateway.lifespan.error":
            e = msg["exc"]
            sys.stderr.write("gateway_worker: lifespan shutdown raised:\n")
            traceback.print_exception(type(e), e, e.__traceback__)

    # -- running -------------------------------------------------------------------
    def heartbeat(self):
        # background tasks: all but the runners, requests in a Task of their
        # own, main() and the lifespan
        tasks = len(asyncio.all_tasks(self.loop)) - self.runners \
            - self.own_tasks - 1
        if self.lifespan is not None and not self.lifespan[0].done():
            tasks -= 1
        self.put(codec.heartbeat(self.served, len(self.streams),
                                 max(0, tasks), read_rss(), self.loop_id))
        self.loop.call_later(self.heartbeat_s, self.heartbeat)

    def quit(self):
        self.quitting = True
        if not self.streams and self.done is not None \
                and not self.done.done():
            self.done.set_result(None)

    async def main(self, ready):
        """Startup (registry hooks, lifespan, post_worker_init), READY, serve
        until a graceful QUIT/TERM, shutdown."""
        loop = self.loop
        threads = int(os.environ.get("GATEWAY_THREADS", "1") or 1)
        if threads > 1:
            import concurrent.futures
            loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
                max_workers=threads, thread_name_prefix="gw-asgi"))
            try:
                import anyio.to_thread
                anyio.to_thread.current_default_thread_limiter() \
                    .total_tokens = threads
            except Exception:
                pass
        self.done = loop.create_future()
        err = await self.boot.run_startup_hooks()
        if err is None:
            err = await self.lifespan_startup()
        if err is not None:
            self.boot.fatal(err)
        ready()
        # Every request starts in a copy of this context (as a Task made in
        # the reader callback would), never in the one of the request whose
        # end started it.
        self.base_ctx = contextvars.copy_context()
        loop.add_reader(self.fd, self.on_readable)
        if self.heartbeat_s > 0:
            loop.call_later(self.heartbeat_s, self.heartbeat)
        loop.call_soon(self.take_input)     # frames that came with HELLO
        await self.done
        loop.remove_reader(self.fd)
        self.retire_runners()
        await self.lifespan_shutdown(10.0)
        await self.boot.run_shutdown_hooks()
        self.flush()
        while self.wbuf:
            await self.drained()

    def run(self, ready):
        loop = None
        if os.environ.get("GATEWAY_LOOP", "auto") in ("auto", "uvloop"):
            try:
                import uvloop
                loop = uvloop.new_event_loop()
                kind = "uvloop"
            except ImportError:
                loop = None
        if loop is None:
            loop = asyncio.new_event_loop()
            kind = "asyncio"
        asyncio.set_event_loop(loop)
        self.loop = loop
        self.loop_id = "%s:%d:%x" % (kind, os.getpid(), id(loop))
        self.winfo.loop = loop
        self.sock.setblocking(False)
        import signal
        try:
            loop.add_signal_handler(signal.SIGTERM, self.quit)
        except (NotImplementedError, RuntimeError):
            pass
        try:
            loop.run_until_complete(self.main(ready))
        finally:
            pass
        return 0
