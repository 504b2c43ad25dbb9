# Flask hello: 13-byte body, text/plain (Flask adds '; charset=utf-8').
# Same app as the anchor baselines; tools/bench/pybench.sh runs it under gateway and gunicorn.
from flask import Flask, Response

app = Flask(__name__)


@app.route("/")
def hello():
    return Response("Hello, World!", mimetype="text/plain")


application = app
