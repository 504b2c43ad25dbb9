# FastAPI hello: 13-byte body, text/plain (PlainTextResponse adds '; charset=utf-8').
# Same app as the anchor baselines; tools/bench/pybench.sh runs it under gateway and uvicorn.
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
async def hello():
    return "Hello, World!"
