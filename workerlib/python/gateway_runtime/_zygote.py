"""The zygote (--preload for Python apps; gateway/zygote.c is the master's
side, proto/PROTOCOL.md "The zygote channel" the spec).

One process imports the app once, runs gc.collect() + gc.freeze() so the
collector never writes to the preloaded objects' pages again, and then
forks a worker each time the master sends SPAWN with the worker's channel
(SCM_RIGHTS). Each spawn is a double fork: the middle process exits at
once, so the worker is re-parented to the master (a child subreaper) and the
master waits for and signals it like any other worker. The zygote answers
SPAWNED with the worker's pid only after the middle process is gone.

The zygote runs no request and no thread of its own; it ignores SIGINT
(the master decides about stops) and SIGUSR1 (its stderr, the error log,
comes as a LOGFD message), and exits on QUIT, on EOF, or on SIGTERM.
"""

import ctypes
import gc
import os
import signal
import socket
import struct
import sys
import time

import msgpack

from . import _app, _main, _proto

Z_READY, SPAWN, SPAWNED, Z_ERROR, Z_QUIT, LOGFD = 64, 65, 66, 67, 68, 69
FROM_MASTER = frozenset((SPAWN, Z_QUIT, LOGFD))
PACKET_MAX = 64 * 1024
PR_SET_NAME = 15
PR_SET_MEMORY_MERGE = 67
KSM_RUN = "/sys/kernel/mm/ksm/run"

_libc = None


def _prctl(option, arg):
    """prctl(option, arg) via ctypes: (result, errno)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    r = _libc.prctl(option, ctypes.c_ulong(arg) if isinstance(arg, int) else arg,
                    ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return r, ctypes.get_errno()


def _set_name(name):
    try:
        _prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))
    except Exception:
        pass


def _warn(msg):
    sys.stderr.write("gateway_zygote: warning: %s\n" % msg)
    sys.stderr.flush()


def _send(sock, ftype, payload):
    body = msgpack.packb(payload, use_bin_type=True)
    sock.sendall(_proto.HDR.pack(1, ftype, 0, 0, len(body)) + body)


def _decode(data):
    """(type, map) of one packet from the master, or raise Malformed."""
    if len(data) < _proto.HDR_SIZE:
        raise _proto.Malformed("short frame")
    ver, ftype, flags, sid, length = _proto.HDR.unpack_from(data, 0)
    if ver != 1:
        raise _proto.Malformed("version %d" % ver)
    if ftype not in FROM_MASTER:
        raise _proto.Malformed("type %d on the zygote channel" % ftype)
    if flags or sid:
        raise _proto.Malformed("flags or stream set")
    if length == 0 or length != len(data) - _proto.HDR_SIZE:
        raise _proto.Malformed("length %d in a packet of %d" % (length, len(data)))
    try:
        m = msgpack.unpackb(bytes(data[_proto.HDR_SIZE:]), raw=False,
                            max_bin_len=PACKET_MAX, max_str_len=PACKET_MAX,
                            max_array_len=1024, max_map_len=1024)
    except Exception as e:
        raise _proto.Malformed("payload: %s" % e)
    if not isinstance(m, dict):
        raise _proto.Malformed("payload is not a map")
    return ftype, m


def _fail(sock, message, code=_proto.EXIT_STARTUP):
    """Report why the app cannot be loaded (the master prints or logs the
    one line) and exit."""
    try:
        _send(sock, Z_ERROR, {"message": _proto.one_line(message), "code": code})
    except OSError:
        pass
    os._exit(code)


def _preimport():
    """What every worker imports anyway, loaded once here (shared pages)."""
    import asyncio  # noqa: F401
    import concurrent.futures  # noqa: F401
    from . import _asgi, _wsgi  # noqa: F401
    try:
        import uvloop  # noqa: F401
    except ImportError:
        pass


def fail_early(fd, message):
    """The config module failed before the zygote started: report it on the
    zygote channel like an app load failure, then exit."""
    _fail(socket.socket(fileno=fd), message)


def _ksm():
    """--ksm: mark this process's memory mergeable (PR_SET_MEMORY_MERGE).
    The flag is inherited by fork (checked on Linux 6.x), so every worker
    forked from here has it too."""
    try:
        r, err = _prctl(PR_SET_MEMORY_MERGE, 1)
    except Exception as e:
        _warn("--ksm: prctl unavailable (%s); pages will not be merged" % e)
        return
    if r != 0:
        _warn("--ksm: prctl(PR_SET_MEMORY_MERGE) failed: %s; pages will not be "
              "merged" % os.strerror(err))
        return
    try:
        with open(KSM_RUN) as f:
            run = f.read().strip()
    except OSError:
        run = None
    if run == "0":
        _warn("--ksm: %s is 0, so the kernel merges nothing; enable KSM with "
              "`echo 1 > %s`" % (KSM_RUN, KSM_RUN))
    elif run is None:
        _warn("--ksm: %s not found; this kernel has no KSM" % KSM_RUN)


def zygote_main(fd, config):
    sock = socket.socket(fileno=fd)      # AF_UNIX, SOCK_SEQPACKET
    sock.setblocking(True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # USR1 (reopen logs) must not kill the zygote or, inherited, its workers
    # (the default action of SIGUSR1 is to terminate); log files come as
    # LOGFD messages here.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    _set_name("gw-zygote")
    spec = os.environ.get("GATEWAY_APP", "")
    try:
        if os.environ.get("GATEWAY_PRELOAD") == "1":
            app, iface = _main.load(spec)
        else:
            # Without --preload: only the runtime, shared by the workers;
            # each imports the app after the fork.
            app, iface = None, ""
            _preimport()
    except _app.AppError as e:
        _fail(sock, str(e))
    except BaseException as e:
        _fail(sock, "cannot load app %r: %s: %s" % (spec, type(e).__name__, e))
    # Everything imported so far (the app, its libraries, this runtime) goes
    # into the permanent generation: collections in the workers never
    # touch it, so its pages stay shared.
    gc.collect()
    gc.freeze()
    if os.environ.get("GATEWAY_KSM") == "1":
        _ksm()
    try:
        _send(sock, Z_READY, {"version": _proto.VERSION, "pid": os.getpid(),
                              "runtime": "python", "interface": iface})
    except OSError:
        os._exit(0)          # the master no longer wants this zygote
    _serve(sock, config, app, iface)


def _serve(sock, config, app, iface):
    fdsize = struct.calcsize("i")
    while True:
        try:
            data, anc, flags, _ = sock.recvmsg(PACKET_MAX,
                                               socket.CMSG_SPACE(4 * fdsize))
        except ConnectionResetError:
            data, anc, flags = b"", [], 0
        fds = []
        for level, ctype, cdata in anc:
            if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
                n = len(cdata) - len(cdata) % fdsize
                fds.extend(struct.unpack("%di" % (n // fdsize), cdata[:n]))
        if not data:
            os._exit(0)          # the master closed the channel: stop
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise _proto.Malformed("truncated packet")
            ftype, m = _decode(data)
        except _proto.Malformed as e:
            sys.stderr.write("gateway_zygote: malformed frame from the master: "
                             "%s\n" % e)
            os._exit(1)
        if ftype == Z_QUIT:
            os._exit(0)
        if ftype == LOGFD:
            # the master's error log (--error-logfile, reopened on USR1):
            # our stderr from now on, inherited by the workers forked later
            if len(fds) == 1:
                try:
                    sys.stderr.flush()
                except Exception:
                    pass
                os.dup2(fds[0], 2)
            for f in fds:
                os.close(f)
            continue
        slot, seq = m.get("slot"), m.get("seq")
        if not isinstance(slot, int) or not isinstance(seq, int) or \
                len(fds) != 1:
            for f in fds:
                os.close(f)
            sys.stderr.write("gateway_zygote: malformed SPAWN (slot %r, seq %r, "
                             "%d descriptors)\n" % (slot, seq, len(fds)))
            os._exit(1)
        try:
            pid = _spawn(sock, fds[0], slot, config, app, iface)
            reply = {"slot": slot, "seq": seq, "pid": pid}
        except OSError as e:
            reply = {"slot": slot, "seq": seq, "error": "fork: %s" % e.strerror}
        finally:
            os.close(fds[0])
        try:
            _send(sock, SPAWNED, reply)
        except OSError:
            os._exit(0)      # the master went away (or gave up on us)


def _spawn(sock, chan_fd, slot, config, app, iface):
    """Double fork; returns the worker's pid once the middle process has
    exited (so the worker is already the master's child)."""
    r, w = os.pipe()
    try:
        mid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if mid == 0:
        code = 1
        try:
            os.close(r)
            # The worker waits for EOF on this pipe: the middle process is
            # gone then and getppid() is the master's pid.
            br, bw = os.pipe()
            middle = os.getpid()
            pid = os.fork()
            if pid == 0:
                os.close(w)
                os.close(bw)
                _become_worker(sock, chan_fd, slot, br, middle, config, app,
                               iface)
            os.write(w, struct.pack("=i", pid))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    got = b""
    while True:
        chunk = os.read(r, 64)
        if not chunk:
            break
        got += chunk
    os.close(r)
    while True:
        try:
            os.waitpid(mid, 0)
            break
        except ChildProcessError:
            break
    if len(got) != 4:
        raise OSError(11, "the intermediate process could not fork the worker")
    return struct.unpack("=i", got)[0]


def _become_worker(sock, chan_fd, slot, barrier, middle, config, app, iface):
    """In the worker (the grandchild). Never returns."""
    code = 1
    try:
        try:
            os.read(barrier, 1)
        except OSError:
            pass
        os.close(barrier)
        # EOF comes when the middle process's files close, which the kernel
        # does before it re-parents us: wait until the master is our parent
        # (post_fork's server.pid, getppid() in the app).
        for _ in range(2000):
            if os.getppid() != middle:
                break
            time.sleep(0.0005)
        sock.close()                      # the zygote's channel (fd 3)
        os.dup2(chan_fd, 3)               # the worker's channel becomes fd 3
        os.close(chan_fd)
        os.environ["GATEWAY_MODE"] = "worker"
        os.environ["GATEWAY_CHANNEL_FD"] = "3"
        os.environ["GATEWAY_WORKER_SLOT"] = str(slot)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _set_name("gw-worker-%d" % slot)
        _main.worker_main(3, config, app, iface)   # exits the process
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        _proto.exit_now(code)
