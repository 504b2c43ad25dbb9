"""Translate a Python config module (gunicorn.conf.py style) into the
gateway's 'key = value' config text. Run by the master for `-c FILE.py`:

    /usr/bin/python3 _confdump.py FILE.py

The module is executed once here (as Gunicorn does in its arbiter); its
module-level settings are printed, each on the line number where the .py
file assigns it, so config errors point at the right line. Gunicorn's names
are accepted (workers, bind, timeout, preload_app, accesslog, ...), and so
are the gateway's own option names with '_' for '-'. Other names (helper
variables, imports, hook functions) are ignored, as Gunicorn ignores them.
The hook functions (post_fork, pre_request, ...) are loaded again in every
worker from the same file (gateway_runtime/_hooks.py).
"""

import ast
import runpy
import sys

# Gunicorn setting -> gateway option.
ALIASES = {
    "bind": "bind", "workers": "workers", "threads": "threads",
    "worker_connections": "worker-connections", "timeout": "timeout",
    "graceful_timeout": "graceful-timeout", "keepalive": "keep-alive",
    "max_requests": "max-requests", "max_requests_jitter":
    "max-requests-jitter", "preload_app": "preload", "backlog": "backlog",
    "chdir": "chdir", "pythonpath": "pythonpath", "loglevel": "log-level",
    "accesslog": "access-logfile", "access_log_format": "access-logformat",
    "errorlog": "error-logfile", "pidfile": "pid", "user": "user",
    "group": "group", "umask": "umask", "reuse_port": "reuse-port",
    "limit_request_line": "limit-request-line",
    "limit_request_fields": "limit-request-fields",
    "limit_request_field_size": "limit-request-field-size",
    "wsgi_app": "app", "worker_class": "worker-class",
}


def text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def quoted(s):
    if "'" not in s:
        return "'%s'" % s
    if '"' not in s:
        return '"%s"' % s
    raise ValueError("value %r has both quote characters" % s)


def main():
    path = sys.argv[1]
    options = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else set()
    try:
        with open(path, "rb") as f:
            src = f.read()
        tree = ast.parse(src, path)
    except (OSError, SyntaxError) as e:
        sys.stderr.write("cannot read Python config %s: %s" % (path, e))
        sys.exit(1)
    lines = {}
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for t in targets:
            if isinstance(t, ast.Name):
                lines[t.id] = node.lineno
    try:
        ns = runpy.run_path(path, run_name="gateway.conf")
    except BaseException as e:
        sys.stderr.write("Python config %s raised %s: %s"
                         % (path, type(e).__name__, e))
        sys.exit(1)
    out = {}
    extra = []
    for name, value in ns.items():
        if name.startswith("_") or callable(value) or \
                type(value).__name__ == "module":
            continue
        key = ALIASES.get(name) or name.replace("_", "-")
        if key not in options:
            continue
        if name == "umask" and isinstance(value, int):
            value = "%o" % value
        values = value if isinstance(value, (list, tuple)) else [value]
        if name == "pythonpath" and isinstance(value, (list, tuple)):
            values = [",".join(value)]
        line = lines.get(name, 0)
        for i, v in enumerate(values):
            entry = "%s = %s" % (key, quoted(text(v)))
            if i == 0 and line and line not in out:
                out[line] = entry
            else:
                extra.append(entry)
    last = max(out) if out else 0
    w = sys.stdout.write
    for i in range(1, last + 1):
        w(out.get(i, "") + "\n")
    for e in extra:
        w(e + "\n")


if __name__ == "__main__":
    main()
