"""The WSGI worker (PEP 3333): one request at a time, in arrival order, on
the process's main thread, with the channel read by select().

Batching: every whole frame read from the channel is decoded at once, the
requests run back to back and the responses leave in one write when no
request is waiting. The request body streams: wsgi.input pulls BODY frames
from the channel as the app reads, and returns window credit as it goes.
"""

import os
import select
import sys
import time
import traceback

from ._proto import (F_END, MAX_DATA, REQUEST, RESP_BODY, ChannelClosed,
                     Malformed, StreamFrames, codec, read_rss)


class Quit(Exception):
    pass


class Stream(object):
    __slots__ = ("sid", "req", "body", "buffered", "req_ended", "cancelled",
                 "credit", "unreturned", "done")

    def __init__(self, sid, req, credit, ended):
        self.sid = sid
        self.req = req
        self.body = []          # BODY data not yet read by the app
        self.buffered = 0
        self.req_ended = ended
        self.cancelled = False
        self.credit = credit    # our send window for the response
        self.unreturned = 0     # body bytes the app consumed, credit not yet returned
        self.done = False       # response direction ended


class FileWrapper(object):
    """wsgi.file_wrapper: iterates a file-like object in blocks."""

    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        n = self.blksize
        while True:
            data = read(n)
            if not data:
                return
            yield data


class Input(object):
    """wsgi.input: the request body as it arrives (read, readline,
    readlines, iteration). Reads block on the channel; meanwhile other
    frames (new requests, window updates, cancels) are handled."""

    __slots__ = ("w", "st", "buf", "pos", "left")

    def __init__(self, worker, st, length):
        self.w = worker
        self.st = st
        self.buf = b""
        self.pos = 0
        self.left = length      # -1: until the end (chunked)

    def _fill(self):
        """Move the next piece of body into self.buf; False at the end."""
        data = self.w.take_body(self.st)
        if data is None:
            return False
        self.buf = self.buf[self.pos:] + data if self.pos < len(self.buf) \
            else data
        self.pos = 0
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            parts = [self.buf[self.pos:]]
            self.buf, self.pos = b"", 0
            while self._fill():
                parts.append(self.buf)
                self.buf = b""
            return b"".join(parts)
        while len(self.buf) - self.pos < size and self._fill():
            pass
        out = self.buf[self.pos:self.pos + size]
        self.pos += len(out)
        return out

    def readline(self, size=-1):
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                end = i + 1
                break
            if size is not None and 0 <= size <= len(self.buf) - self.pos:
                end = self.pos + size
                break
            if not self._fill():
                end = len(self.buf)
                break
        if size is not None and size >= 0:
            end = min(end, self.pos + size)
        out = self.buf[self.pos:end]
        self.pos = end
        return out

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self):
        pass


class Errors(object):
    """wsgi.errors: lines into the worker's stderr, which is the gateway's
    error log."""

    def write(self, s):
        sys.stderr.write(s)

    def writelines(self, seq):
        for s in seq:
            sys.stderr.write(s)

    def flush(self):
        sys.stderr.flush()


_ERRORS = Errors()


class Call(object):
    """One request's start_response / write state (PEP 3333)."""

    __slots__ = ("w", "st", "out", "status", "sent_bytes")

    def __init__(self, w, st, out):
        self.w = w
        self.st = st
        self.out = out
        self.status = [None, None, False]   # code, headers, head sent
        self.sent_bytes = [0]

    def start_response(self, st_line, headers, exc_info=None):
        status = self.status
        if exc_info:
            try:
                if status[2]:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif status[0] is not None:
            raise AssertionError("start_response called twice without "
                                 "exc_info")
        try:
            code = int(st_line[:3])
        except (TypeError, ValueError):
            code = 0
        if not 100 <= code <= 999:
            raise ValueError("bad status %r" % (st_line,))
        status[0] = code
        status[1] = headers     # the codec encodes str as latin-1
        return self.write

    def send_head(self, end, body=None):
        status = self.status
        if status[0] is None:
            raise AssertionError("start_response was not called")
        st = self.st
        if body:
            st.credit -= len(body)
            self.sent_bytes[0] += len(body)
        self.out.append(codec.response(st.sid, status[0], status[1], body,
                                       end))
        status[2] = True

    def write(self, data):
        st = self.st
        if st.cancelled:
            return
        if not self.status[2]:
            self.send_head(False)
        self.sent_bytes[0] += len(data)
        self.w.send_data(st, bytes(data), False, self.out)


class WsgiWorker(StreamFrames):
    def __init__(self, boot, app):
        StreamFrames.__init__(self, boot, app)
        self.next_hb = None
        self.queue = []
        self.idle = False
        self.loop_id = "python-wsgi:%d" % os.getpid()
        self.base_env = {
            "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.errors": _ERRORS,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "gateway.slot": self.slot,
        }

    # -- channel ---------------------------------------------------------------
    def flush(self):
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                raise ChannelClosed()

    def read_some(self, timeout):
        """Flush, wait up to timeout (None = forever) for input, dispatch
        every whole frame. Sends heartbeats when due."""
        self.flush()
        if self.next_hb is not None:
            now = time.monotonic()
            if now >= self.next_hb:
                self.heartbeat()
                self.flush()
                now = time.monotonic()
            left = max(0.0, self.next_hb - now)
            timeout = left if timeout is None else min(timeout, left)
        if timeout != 0:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                return
        if not self.read_input():
            raise ChannelClosed()

    def heartbeat(self):
        self.out.append(codec.heartbeat(self.served, len(self.streams), 0,
                                        read_rss(), self.loop_id))
        self.next_hb = time.monotonic() + self.heartbeat_s

    def on_request(self, sid, fr):
        st = Stream(sid, fr, self.window, fr[1] & F_END)
        self.streams[sid] = st
        self.queue.append(st)

    def quit(self):
        self.quitting = True

    # -- main loop ---------------------------------------------------------------
    quit_poll = None            # read timeout while quitting (threads: poll)

    def run(self):
        if self.heartbeat_s > 0:
            self.next_hb = time.monotonic() + self.heartbeat_s
        self.take_input()           # frames that came with HELLO
        queue = self.queue
        try:
            while True:
                while queue:
                    st = queue.pop(0)
                    if not st.cancelled:
                        self.start(st)
                if self.quitting and self.all_done():
                    self.flush()
                    break
                self.idle = True
                try:
                    self.read_some(self.quit_poll if self.quitting else None)
                finally:
                    self.idle = False
        except Quit:
            self.finish_after_term()
        self.close()
        return 0

    def start(self, st):
        self.handle(st)

    def all_done(self):
        return not self.streams

    def finish_after_term(self):
        """TERM while idle: the current requests are done (sync)."""
        try:
            self.flush()
        except Exception:
            pass

    def close(self):
        pass

    # -- one request -------------------------------------------------------------
    def take_body(self, st):
        """The next piece of st's request body for wsgi.input (None at the
        end), returning window credit as it goes."""
        while not st.body:
            if st.req_ended or st.cancelled:
                return None
            self.read_some(None)
        data = st.body.pop(0)
        st.buffered -= len(data)
        st.unreturned += len(data)
        if st.unreturned >= (self.window >> 1) or (st.req_ended
                                                   and not st.body):
            if not st.done and not st.cancelled:
                self.emit([codec.window(st.sid, st.unreturned)])
            st.unreturned = 0
        return data

    def wait_credit(self, st):
        while st.credit <= 0 and not st.cancelled:
            self.read_some(None)

    def new_out(self):
        return self.out

    def emit(self, out):
        """Frames a request produced: queued for the next write (the
        threaded worker sends them at once)."""
        if out is not self.out:
            self.out.extend(out)
            out.clear()
        self.flush()

    def request_done(self, st):
        st.done = True
        self.streams.pop(st.sid, None)
        self.served += 1

    def send_data(self, st, data, end, out):
        """RESP_BODY frames for data (after RESPONSE), within the window."""
        n = len(data)
        off = 0
        mv = memoryview(data)
        data_frame = codec.data_frame
        while off < n:
            if st.credit <= 0:
                self.wait_credit(st)
            if st.cancelled:
                return
            k = min(n - off, MAX_DATA, st.credit)
            st.credit -= k
            last = end and off + k >= n
            out.append(data_frame(RESP_BODY, st.sid,
                                  data if k == n else bytes(mv[off:off + k]),
                                  last))
            off += k
            if len(out) > 64:
                self.emit(out)
        if end and n == 0:
            out.append(data_frame(RESP_BODY, st.sid, b"", True))

    def handle(self, st):
        environ = self.environ(st)
        out = self.new_out()
        c = Call(self, st, out)
        req_obj = None
        if self.hooks.has_request_hooks:
            from ._hooks import Request
            r = st.req
            req_obj = Request(st.sid, r[3], r[4], r[5], r[6], r[7], r[8],
                              r[9])
            self.hooks.call("pre_request", self.winfo, req_obj)
        try:
            result = self.app(environ, c.start_response)
        except (ChannelClosed, Malformed, Quit):
            raise
        except Exception:
            self.app_error(st)
            self.finish(st, c, None, False, environ, req_obj, out)
            return
        status = c.status           # [code, headers, head sent]
        if result.__class__ is list and len(result) == 1 \
                and status[0] is not None and not status[2]:
            # the common case: one body that fits, one complete frame
            body = result[0]
            if body.__class__ is bytes and len(body) <= st.credit \
                    and len(body) <= self.max_body:
                try:
                    frame = codec.response(st.sid, status[0], status[1], body,
                                           True)
                except Exception:
                    frame = None    # finish() raises it again, as an app error
                if frame is not None:
                    n = len(body)
                    st.credit -= n
                    c.sent_bytes[0] = n
                    status[2] = True
                    out.append(frame)
                    self.ended(st, c, environ, req_obj, out)
                    return
        self.finish(st, c, result, True, environ, req_obj, out)

    def app_error(self, st):
        r = st.req
        sys.stderr.write("gateway_worker: error handling %s %s\n"
                         % (r[3], r[4].decode("latin-1")))
        traceback.print_exc()
        sys.stderr.flush()

    def finish(self, st, c, result, ok, environ, req_obj, out):
        """The rest of a request after the app returned result (ok) or
        raised (not ok): the response body in any form PEP 3333 allows,
        close(), the 500 or cancel on an error, the hooks."""
        status = c.status
        sent_bytes = c.sent_bytes
        send_head = c.send_head
        if ok:
            ok = False
            try:
                fits = min(st.credit, self.max_body)
                if isinstance(result, (list, tuple)) and not status[2]:
                    body = b"".join(result)
                    if len(body) <= fits:
                        send_head(True, body)
                    else:
                        send_head(False)
                        sent_bytes[0] += len(body)
                        self.send_data(st, body, True, out)
                else:
                    # PEP 3333 "Buffering and Streaming": each block leaves
                    # before the next one is asked for (the app may be
                    # waiting for something before producing it).
                    for chunk in result:
                        if st.cancelled:
                            break
                        if not chunk:
                            continue
                        if not status[2]:
                            send_head(False)
                        sent_bytes[0] += len(chunk)
                        self.send_data(st, bytes(chunk), False, out)
                        self.emit(out)
                    if not st.cancelled:
                        if not status[2]:
                            send_head(True)
                        else:
                            self.send_data(st, b"", True, out)
                ok = True
            except (ChannelClosed, Malformed, Quit):
                raise
            except Exception:
                self.app_error(st)
            finally:
                if hasattr(result, "close"):
                    try:
                        result.close()
                    except Exception:
                        traceback.print_exc()
                        ok = False
        if not ok and not st.cancelled:
            if not status[2]:
                status[0] = 500
                status[1] = _H500
                out.append(codec.response(st.sid, 500, _H500, _B500, True))
            else:
                out.append(codec.cancel(st.sid, "app-error"))
        self.ended(st, c, environ, req_obj, out)

    def ended(self, st, c, environ, req_obj, out):
        """The response is complete: the stream is done, post_request."""
        self.request_done(st)
        if req_obj is not None:
            self.winfo.nr = self.served
            self.hooks.post_request(self.winfo, req_obj, environ, c.status[0],
                                    c.status[1], c.sent_bytes[0])
        self.request_end(out)

    def request_end(self, out):
        if self.next_hb is not None and time.monotonic() >= self.next_hb:
            self.heartbeat()
        if not self.queue:
            self.flush()

    def environ(self, st):
        env = codec.environ(st.req, self.base_env)
        if st.req_ended and not st.body:
            env["wsgi.input"] = _EMPTY_INPUT
        else:
            env["wsgi.input"] = Input(self, st, st.req[12])
        return env


_H500 = [(b"Content-Type", b"text/plain")]
_B500 = b"Internal Server Error\n"


class _EmptyInput(object):
    def read(self, size=-1):
        return b""

    def readline(self, size=-1):
        return b""

    def readlines(self, hint=-1):
        return []

    def __iter__(self):
        return iter(())

    def close(self):
        pass


_EMPTY_INPUT = _EmptyInput()


class ThreadedWsgiWorker(WsgiWorker):
    """--threads N > 1 (Gunicorn's gthread): the main thread reads the
    channel, sends heartbeats and hands each request to one of N threads.
    Threads wait for body data and window credit on one condition variable
    and write their frames to the channel themselves, under a lock.

    Heartbeats come from the main thread, so (as with gthread) a thread
    stuck in the app is not a stuck worker: the front's --timeout answers
    504 for that request and the thread finishes when the app returns."""

    def __init__(self, boot, app, nthreads, kind="gthread"):
        WsgiWorker.__init__(self, boot, app)
        import threading
        from concurrent.futures import ThreadPoolExecutor
        self.nthreads = nthreads
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        self.wlock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=nthreads,
                                       thread_name_prefix="gw-wsgi")
        self.loop_id = "python-%s:%d" % (kind, os.getpid())
        self.base_env["wsgi.multithread"] = True

    # frames from request threads go straight out
    def new_out(self):
        return []

    def emit(self, out):
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        with self.wlock:
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass        # the main thread sees EOF and exits

    def flush(self):
        out = self.out
        if out:
            frames = list(out)
            out.clear()
            self.emit(frames)

    def request_end(self, out):
        self.emit(out)

    def request_done(self, st):
        with self.cv:
            st.done = True
            self.streams.pop(st.sid, None)
            self.served += 1
            self.cv.notify_all()

    def take_body(self, st):
        with self.cv:
            while not st.body:
                if st.req_ended or st.cancelled:
                    return None
                self.cv.wait()
            data = st.body.pop(0)
            st.buffered -= len(data)
            st.unreturned += len(data)
            frame = None
            if st.unreturned >= (self.window >> 1) or (st.req_ended
                                                       and not st.body):
                if not st.done and not st.cancelled:
                    frame = codec.window(st.sid, st.unreturned)
                st.unreturned = 0
        if frame is not None:
            self.emit([frame])
        return data

    def wait_credit(self, st):
        with self.cv:
            while st.credit <= 0 and not st.cancelled:
                self.cv.wait()

    def on_frame(self, fr):
        with self.cv:
            StreamFrames.on_frame(self, fr)
            if fr[0] != REQUEST:
                self.cv.notify_all()

    def heartbeat(self):
        self.out.append(codec.heartbeat(self.served, len(self.streams), 0,
                                        read_rss(), self.loop_id))
        self.next_hb = time.monotonic() + self.heartbeat_s

    def run_one(self, st):
        try:
            self.handle(st)
        except Exception:
            traceback.print_exc()

    quit_poll = 0.05

    def start(self, st):
        self.pool.submit(self.run_one, st)

    def all_done(self):
        with self.lock:
            return not self.streams

    def finish_after_term(self):
        """TERM while idle: finish what the threads are running."""
        self.quitting = True
        with self.cv:
            while self.streams:
                self.cv.wait(0.1)
        self.flush()

    def close(self):
        self.pool.shutdown(wait=True)
