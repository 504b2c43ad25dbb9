# workerlib/python/gwfast.mk - the _gwfast CPython extension: the GWP codec
# (proto/gwp.c) and the WSGI environ builder for the Python worker runtime.
# Included from the top Makefile, after its variables (BUILD, CC, WARN,
# CFLAGS, PYTHON). Built for the interpreter that runs the workers, $(PYTHON)
# (Debian's /usr/bin/python3, with python3-dev's headers).
#   make pyext      build $(BUILD)/python/_gwfast<EXT_SUFFIX>
# The runtime imports it from build/python when it is there and falls back
# to the pure-Python codec otherwise (gateway_runtime/_proto.py).

PYTHON           ?= /usr/bin/python3
PYEXT_SUFFIX     := $(shell $(PYTHON) -c "import sysconfig;print(sysconfig.get_config_var('EXT_SUFFIX'))")
PYEXT_INCLUDE    := $(shell $(PYTHON) -c "import sysconfig;print(sysconfig.get_paths()['include'])")
PYEXT            := $(BUILD)/python/_gwfast$(PYEXT_SUFFIX)
# -isystem: warnings for our code only, not for Python.h. Hidden visibility:
# the module exports PyInit__gwfast and nothing else (no gwp_* symbols).
PYEXT_CFLAGS      = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden \
                    -Iproto -isystem $(PYEXT_INCLUDE)

# Keep the includer's default goal (this file defines the first rule if it
# is included before any other).
_gwfast_goal     := $(.DEFAULT_GOAL)

$(PYEXT): workerlib/python/_gwfast.c proto/gwp.c proto/gwp.h
	@mkdir -p $(dir $@)
	$(CC) $(PYEXT_CFLAGS) -shared -o $@ workerlib/python/_gwfast.c proto/gwp.c

.PHONY: pyext
pyext: $(PYEXT)

.DEFAULT_GOAL    := $(_gwfast_goal)
