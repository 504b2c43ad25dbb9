"""gateway_runtime: the Python side of the gateway.

App code may use the per-worker startup-hook registry:

    import gateway_runtime

    @gateway_runtime.startup
    def open_pool():          # runs once in every worker, before it is READY
        ...

    @gateway_runtime.shutdown
    async def close_pool():   # on the worker's way out (async allowed)
        ...

Hooks run in registration order. With --preload they are registered once,
at import in the zygote, and still run in each worker after it forks. A
startup hook that raises stops the worker before READY; the master logs the
message and does not count the worker as ready.
"""

from . import _hooks

__all__ = ["startup", "shutdown", "worker_info"]

_info = {}   # filled by the worker at start-up (see worker_info)


def startup(fn):
    """Register fn (sync or async, no arguments) to run in each worker
    before it reports READY."""
    _hooks.startup_hooks.append(fn)
    return fn


def shutdown(fn):
    """Register fn (sync or async, no arguments) to run in each worker on a
    graceful exit, after the last request."""
    _hooks.shutdown_hooks.append(fn)
    return fn


def worker_info():
    """{'slot', 'pid', 'interface', 'loop'} of the current worker (empty in
    the master-side import check and the zygote)."""
    return dict(_info)
