"""
How a Python app is named and found: --chdir, --pythonpath, module:factory(),
--interface, --runtime, and -c FILE.py settings; each mistake is one line.
"""
import os
import subprocess

from gwharness import GATEWAY

FACTORY_APP = '''
def make_app(greeting="hi", times=1):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [(greeting * times).encode()]
    return app
'''


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def run_once(args, cwd, timeout=20):
    p = subprocess.run([GATEWAY] + args, capture_output=True, text=True, timeout=timeout,
                       cwd=cwd)
    return p.returncode, [ln for ln in p.stderr.splitlines() if ln.strip()]


def test_chdir_and_factory_with_literal_args(gateway, tmp_dir):
    appdir = os.path.join(tmp_dir, "srv")
    write(os.path.join(appdir, "factory_app.py"), FACTORY_APP)
    gw = gateway("py:factory_app:make_app('ab', times=2)", "--chdir", appdir, workers=1)
    r = gw.get("/")
    assert r.status == 200 and r.body == b"abab", r


def test_pythonpath_puts_directories_first(gateway, tmp_dir):
    a = os.path.join(tmp_dir, "a")
    b = os.path.join(tmp_dir, "b")
    write(os.path.join(a, "shadow_mod.py"), "from helper_b import app\n")
    write(os.path.join(b, "helper_b.py"), FACTORY_APP + "app = make_app('from-b')\n")
    gw = gateway("py:shadow_mod:app", "--pythonpath", "%s,%s" % (a, b), workers=1)
    r = gw.get("/")
    assert r.status == 200 and r.body == b"from-b", r


def test_mistakes_are_one_line(tmp_dir):
    write(os.path.join(tmp_dir, "factory_app.py"), FACTORY_APP)
    cases = [
        (["factory_app:make_app(open('x'))"], "must be literals"),
        (["factory_app:nothing"], "has no attribute 'nothing'"),
        (["factory_app:make_app", "--interface", "cgi"], "--interface"),
        (["--chdir", os.path.join(tmp_dir, "missing"), "factory_app:make_app()"], "--chdir"),
        (["--runtime", "ruby", "factory_app:make_app()"], "--runtime"),
    ]
    for args, needle in cases:
        rc, lines = run_once(["-b", "127.0.0.1:0", "--control-socket",
                              os.path.join(tmp_dir, "c.sock")] + args, tmp_dir)
        assert rc != 0 and len(lines) == 1 and needle in lines[0], (args, rc, lines)


def test_python_config_file_settings(gateway, tmp_dir):
    write(os.path.join(tmp_dir, "factory_app.py"), FACTORY_APP)
    conf = os.path.join(tmp_dir, "gunicorn.conf.py")
    write(conf, "import os\nworkers = 3\ntimeout = 17\nwsgi_app = 'factory_app:make_app(\"c\")'\n"
                "helper_value = os.sep\n")
    rc, lines = run_once(["-c", conf, "--print-config"], tmp_dir)
    assert rc == 0, lines
    out = subprocess.run([GATEWAY, "-c", conf, "--print-config"], capture_output=True,
                         text=True, cwd=tmp_dir, timeout=20).stdout
    assert "workers = 3" in out and "timeout = 17" in out, out
    write(conf, "workers = 2\n\ntimeout = 'soon'\n")
    rc, lines = run_once(["-c", conf, "x:app"], tmp_dir)
    assert rc != 0 and len(lines) == 1 and "gunicorn.conf.py:3" in lines[0] \
        and "timeout" in lines[0], lines
