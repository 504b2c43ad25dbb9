"""Finding and loading the application (Gunicorn's APP syntax), and telling
WSGI from ASGI."""

import ast
import asyncio
import importlib
import inspect
import os
import sys


class AppError(Exception):
    """The app cannot be loaded: one line for the operator."""


def setup_path():
    """sys.path as Gunicorn builds it: --pythonpath entries first, then the
    working directory (--chdir has already been applied by the master)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    extra = os.environ.get("GATEWAY_PYTHONPATH", "")
    for p in reversed([p.strip() for p in extra.split(",") if p.strip()]):
        p = os.path.abspath(p)
        if p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)


def load_app(spec):
    """"module:attr", "module:factory()", "module:factory(args)" or
    "module" (attribute 'application'). Returns the callable."""
    if not spec:
        raise AppError("no app given (GATEWAY_APP is empty)")
    module, _, obj = spec.partition(":")
    obj = obj.strip() or "application"
    try:
        mod = importlib.import_module(module)
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)) and \
                not isinstance(e, SystemExit):
            raise
        raise AppError("cannot import %s: %s: %s"
                       % (module, type(e).__name__, e))
    try:
        expr = ast.parse(obj, mode="eval").body
    except SyntaxError:
        raise AppError("failed to parse %r as an attribute name or function "
                       "call" % obj)
    args, kwargs, call = [], {}, False
    if isinstance(expr, ast.Call):
        call = True
        try:
            args = [ast.literal_eval(a) for a in expr.args]
            kwargs = dict((k.arg, ast.literal_eval(k.value))
                          for k in expr.keywords)
        except ValueError:
            raise AppError("factory arguments in %r must be literals" % obj)
        expr = expr.func
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        raise AppError("bad application object %r" % obj)
    parts.append(expr.id)
    app = mod
    for p in reversed(parts):
        try:
            app = getattr(app, p)
        except AttributeError:
            raise AppError("module %r has no attribute %r" % (module, p))
    if call:
        try:
            app = app(*args, **kwargs)
        except Exception as e:
            raise AppError("factory %s raised %s: %s"
                           % (obj, type(e).__name__, e))
    if app is None or not callable(app):
        raise AppError("application object %r is not callable" % obj)
    return app


def is_asgi(app):
    """ASGI 3 apps are coroutine functions (or objects whose __call__ is);
    WSGI apps are plain callables. Starlette/FastAPI instances have an
    async __call__."""
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)
    if call is not None and inspect.iscoroutinefunction(call):
        return True
    # functools.partial or wrapped coroutine functions
    inner = getattr(app, "func", None) or getattr(app, "__wrapped__", None)
    return inner is not None and asyncio.iscoroutinefunction(inner)


def pick_interface(app, wanted):
    if wanted in ("wsgi", "asgi"):
        return wanted
    if wanted not in ("", "auto"):
        raise AppError("invalid --interface %r (auto, wsgi or asgi)" % wanted)
    return "asgi" if is_asgi(app) else "wsgi"
