"""Started by the master (gateway/pyrt.c) as
   /usr/bin/python3 -u workerlib/python/gateway_worker.py
with GATEWAY_MODE and the settings in the environment. The runtime itself
is the gateway_runtime package beside this file."""

import os

if os.environ.get("GATEWAY_WORKER_CLASS") == "gevent" and \
        os.environ.get("GATEWAY_MODE") in ("worker", "zygote"):
    # --worker-class gevent: patch before anything (the runtime, the app)
    # imports socket, select, threading or time.
    from gevent import monkey
    monkey.patch_all()

from gateway_runtime._main import main  # noqa: E402

if __name__ == "__main__":
    main()
