"""Entry point of the Python runtime (see gateway/pyrt.c for how the master
starts it). GATEWAY_MODE selects what this process is:

  worker  the channel is on fd 3: handshake, load the app, run hooks, READY,
          serve (WSGI or ASGI) until QUIT/TERM.
  check   load the app and pick the interface, print one line on failure,
          exit 0/1. Run by the master before it forks anything.
  zygote  --preload: load the app once, freeze the collector, then fork
          workers on the master's request (see _zygote.py).
"""

import asyncio
import inspect
import os
import signal
import socket
import sys
import traceback

from . import _app, _hooks, _proto
import gateway_runtime


class Boot(object):
    """What a worker knows once it has its channel: the socket, the HELLO
    settings, the config hooks, and how to fail cleanly."""

    def __init__(self, fd, config, app=None):
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self.rbuf = bytearray()
        self.enc = _proto.Encoder()
        self.config = config
        self.app = app
        self.slot = int(os.environ.get("GATEWAY_WORKER_SLOT", "0") or 0)
        self.window = 262144
        self.heartbeat_s = 0.0
        self.winfo = _hooks.WorkerInfo(self.slot)
        self.master = _hooks.MasterInfo(os.getppid())

    # -- failing -----------------------------------------------------------------
    def fatal(self, message, code=_proto.EXIT_STARTUP):
        """ERROR frame with one line, the same line on stderr, exit(code)."""
        line = _proto.one_line(message)
        try:
            self.enc.frame(_proto.ERROR, 0, {"message": line, "code": code})
            self.sock.setblocking(True)
            self.sock.sendall(self.enc.take())
        except Exception:
            pass
        sys.stderr.write("gateway_worker: %s\n" % line)
        self.exit_now(code)

    exit_now = staticmethod(_proto.exit_now)

    # -- handshake -----------------------------------------------------------------
    def handshake(self):
        while True:
            got = _proto.parse_hello(self.rbuf)
            if got is not None:
                m, rest = got
                self.rbuf = bytearray(rest)
                break
            data = self.sock.recv(65536)
            if not data:
                raise _proto.ChannelClosed()
            self.rbuf += data
        if m.get("version") != _proto.VERSION:
            self.fatal("protocol version %s not supported" % m.get("version"),
                       _proto.EXIT_CONFIG)
        self.slot = m.get("slot", self.slot)
        self.winfo.slot = self.slot
        self.winfo.age = m.get("age", self.slot)
        self.window = m.get("window", 262144) or 262144
        mp = m.get("max_payload", _proto.CAP)
        self.enc.max_payload = _proto.CAP if (mp == 0 or mp > _proto.CAP) \
            else mp
        self.heartbeat_s = (m.get("heartbeat_ms", 0) or 0) / 1000.0

    def ready(self, loop_id, capacity):
        self.winfo.booted = True
        self.enc.frame(_proto.READY, 0, {"version": _proto.VERSION,
                                         "pid": os.getpid(),
                                         "runtime": "python",
                                         "loop": loop_id,
                                         "capacity": capacity})
        self.sock.sendall(self.enc.take()) if self.sock.getblocking() \
            else _send_all_nonblocking(self.sock, self.enc.take())

    # -- hooks -----------------------------------------------------------------------
    # The registry's hooks and post_worker_init, in order. A WSGI worker
    # runs them directly (an async hook gets its own asyncio.run); an ASGI
    # worker awaits them on its loop. Startup stops at the first failure
    # and returns its one line; shutdown logs failures and goes on.
    def _startup_steps(self):
        for fn in list(_hooks.startup_hooks):
            yield "startup hook %s" % getattr(fn, "__qualname__", fn), fn
        yield "post_worker_init", lambda: self.config.call_fatal(
            "post_worker_init", self.winfo)

    def _shutdown_steps(self):
        for fn in list(_hooks.shutdown_hooks):
            yield "shutdown hook %s" % getattr(fn, "__qualname__", fn), fn

    def run_startup_hooks_sync(self):
        return _run_steps_sync(self._startup_steps(), True)

    def run_shutdown_hooks_sync(self):
        _run_steps_sync(self._shutdown_steps(), False)

    async def run_startup_hooks(self):
        return await _run_steps(self._startup_steps(), True)

    async def run_shutdown_hooks(self):
        await _run_steps(self._shutdown_steps(), False)


def _step_failed(what, e, fatal):
    if fatal:
        traceback.print_exc()
        return "%s raised %s: %s" % (what, type(e).__name__, e)
    sys.stderr.write("gateway_worker: %s raised:\n" % what)
    traceback.print_exc()
    return None


def _run_steps_sync(steps, fatal):
    for what, fn in steps:
        try:
            r = fn()
            if inspect.isawaitable(r):
                asyncio.run(_hooks.await_it(r))
        except Exception as e:
            err = _step_failed(what, e, fatal)
            if fatal:
                return err
    return None


async def _run_steps(steps, fatal):
    for what, fn in steps:
        try:
            r = fn()
            if inspect.isawaitable(r):
                await r
        except Exception as e:
            err = _step_failed(what, e, fatal)
            if fatal:
                return err
    return None


def _send_all_nonblocking(sock, data):
    sock.setblocking(True)
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)


def load_config():
    cfg = _hooks.Config()
    try:
        cfg.load()
    except Exception as e:
        traceback.print_exc()
        raise _app.AppError("config module %s raised %s: %s"
                            % (cfg.path, type(e).__name__, e))
    return cfg


def load(spec):
    """(app, interface) or raise AppError."""
    app = _app.load_app(spec)
    iface = _app.pick_interface(app, os.environ.get("GATEWAY_INTERFACE",
                                                    "auto"))
    return app, iface


def serve(boot, app, iface):
    """Run one worker until it exits; returns the exit status."""
    on_abort = lambda signum, frame: _abort(boot)   # noqa: E731
    signal.signal(signal.SIGABRT, on_abort)
    signal.signal(signal.SIGUSR1, _reopen_log)
    gateway_runtime._info.update(slot=boot.slot, pid=os.getpid(),
                                 interface=iface)
    boot.winfo.interface = iface
    if iface == "asgi":
        from ._asgi import AsgiWorker
        w = AsgiWorker(boot, app)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

        def ready():
            gateway_runtime._info["loop"] = w.loop_id
            boot.ready(w.loop_id, w.limit)
        code = w.run(ready)
    else:
        from ._wsgi import WsgiWorker, ThreadedWsgiWorker, Quit
        threads = int(os.environ.get("GATEWAY_THREADS", "1") or 1)
        kind = os.environ.get("GATEWAY_WORKER_CLASS", "sync")
        if kind == "gevent":
            # monkey-patched (gateway_worker.py): the "threads" are greenlets
            conns = int(os.environ.get("GATEWAY_WORKER_CONNECTIONS", "1000"))
            w = ThreadedWsgiWorker(boot, app, conns, "gevent")
        elif threads > 1 or kind == "gthread":
            w = ThreadedWsgiWorker(boot, app, threads)
        else:
            w = WsgiWorker(boot, app)

        def on_term(signum, frame):
            w.quitting = True
            if w.idle:
                raise Quit()
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        err = boot.run_startup_hooks_sync()
        if err is not None:
            boot.fatal(err)
        gateway_runtime._info["loop"] = w.loop_id
        boot.ready(w.loop_id, getattr(w, "nthreads", 1))
        try:
            code = w.run()
        except _proto.Malformed as e:
            sys.stderr.write("gateway_worker: malformed frame: %s\n" % e)
            code = 1
        if code == 0:
            boot.run_shutdown_hooks_sync()
    boot.config.call("worker_exit", boot.master, boot.winfo)
    return code


def _reopen_log(signum, frame):
    # USR1 from the master (log rotation): stderr is the error log; open
    # the file again by name so lines go to the new file.
    path = os.environ.get("GATEWAY_ERROR_LOG")
    if not path or path == "-":
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except OSError:
        return
    try:
        sys.stderr.flush()
    except Exception:
        pass
    os.dup2(fd, 2)
    os.close(fd)


def _abort(boot):
    # SIGABRT from the master's watchdog (WORKER TIMEOUT): Gunicorn's
    # worker_abort hook, then die of the signal.
    boot.config.call("worker_abort", boot.winfo)
    try:
        sys.stderr.flush()
    except Exception:
        pass
    signal.signal(signal.SIGABRT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGABRT)


def worker_main(fd, config, app=None, iface=None):
    """A worker: channel on fd. app/iface are given when preloaded."""
    boot = Boot(fd, config, app)
    # HELLO (sent by the master right after the fork) first, so post_fork
    # sees the worker's slot and age as Gunicorn's does.
    try:
        boot.handshake()
    except (_proto.ChannelClosed, ConnectionResetError):
        boot.exit_now(0)
    except _proto.Malformed as e:
        sys.stderr.write("gateway_worker: malformed HELLO: %s\n" % e)
        boot.exit_now(1)
    config.call("post_fork", boot.master, boot.winfo)
    if app is None:
        try:
            app, iface = load(os.environ.get("GATEWAY_APP", ""))
        except _app.AppError as e:
            boot.fatal(str(e))
        except BaseException as e:
            traceback.print_exc()
            boot.fatal("cannot load app %r: %s: %s"
                       % (os.environ.get("GATEWAY_APP", ""),
                          type(e).__name__, e))
    prof_path = os.environ.get("GATEWAY_PY_PROFILE")
    prof = None
    if prof_path:
        # Profiling aid (tools/bench): cProfile the worker, dump at exit to
        # PATH.PID for pstats.
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    try:
        code = serve(boot, app, iface)
    except _proto.ChannelClosed:
        code = 0
    if prof is not None:
        prof.disable()
        prof.dump_stats("%s.%d" % (prof_path, os.getpid()))
    try:
        boot.sock.setblocking(False)
        while boot.sock.recv(65536):
            pass
    except OSError:
        pass
    boot.exit_now(code)


def main():
    mode = os.environ.get("GATEWAY_MODE", "worker")
    _app.setup_path()
    try:
        config = load_config()
    except _app.AppError as e:
        if mode == "zygote":
            # reported once, by the master, from the zygote channel
            from ._zygote import fail_early
            fail_early(int(os.environ.get("GATEWAY_CHANNEL_FD", "3")), str(e))
        sys.stderr.write("%s" % _proto.one_line(e) if mode == "check"
                         else "gateway_worker: %s\n" % e)
        os._exit(1 if mode == "check" else _proto.EXIT_STARTUP)
    if mode == "check":
        try:
            load(os.environ.get("GATEWAY_APP", ""))
        except _app.AppError as e:
            sys.stderr.write("%s" % _proto.one_line(e))
            os._exit(1)
        except BaseException as e:
            sys.stderr.write("cannot load app: %s: %s"
                             % (type(e).__name__, _proto.one_line(e)))
            os._exit(1)
        os._exit(0)
    fd = int(os.environ.get("GATEWAY_CHANNEL_FD", "3"))
    if mode == "zygote":
        from ._zygote import zygote_main
        zygote_main(fd, config)
        os._exit(0)
    worker_main(fd, config)
