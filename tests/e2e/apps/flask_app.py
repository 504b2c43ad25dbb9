"""An unmodified Flask app for the Python runtime tests: routing, JSON, form
and file upload, cookies and sessions, redirects, a streamed response, and an
error handled as a 500 while the worker survives."""
import os

from flask import Flask, Response, jsonify, redirect, request, session, url_for

app = Flask(__name__)
app.secret_key = "test-only"


@app.route("/")
def index():
    return "Hello, World!", 200, {"Content-Type": "text/plain", "X-Worker-Pid": str(os.getpid())}


@app.route("/user/<name>")
def user(name):
    return jsonify(name=name, q=request.args.get("q"), pid=os.getpid())


@app.route("/json", methods=["POST"])
def json_echo():
    data = request.get_json()
    return jsonify(got=data, n=len(data["items"]))


@app.route("/form", methods=["POST"])
def form():
    f = request.files["file"]
    blob = f.read()
    return jsonify(field=request.form["field"], filename=f.filename, size=len(blob))


@app.route("/login")
def login():
    session["user"] = request.args["u"]
    resp = redirect(url_for("whoami"))
    resp.set_cookie("seen", "1")
    return resp


@app.route("/whoami")
def whoami():
    return jsonify(user=session.get("user"), seen=request.cookies.get("seen"))


@app.route("/stream")
def stream():
    def gen():
        for i in range(3):
            yield "part %d\n" % i
    return Response(gen(), mimetype="text/plain")


@app.route("/boom")
def boom():
    raise RuntimeError("boom")
