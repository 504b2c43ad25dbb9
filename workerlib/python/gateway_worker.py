"""Started by the master (gateway/pyrt.c) as
   /usr/bin/python3 -u workerlib/python/gateway_worker.py
with GATEWAY_MODE and the settings in the environment. The runtime itself
is the gateway_runtime package beside this file."""

from gateway_runtime._main import main

if __name__ == "__main__":
    main()
