#!/usr/bin/env bash
# Install what gateway needs to build, run and test, from Debian packages only.
# Called by `make run`, `make test` and .ci/run; a no-op when everything is present.
# Usage: tools/install-deps.sh [build|test|bench]   (default: build)
set -eu
what=${1:-build}

pkgs_build="build-essential pkg-config libev-dev libmsgpack-dev curl python3 python3-dev python3-msgpack"
pkgs_test="check clang libclang-rt-14-dev python3-pytest python3-flask python3-fastapi python3-uvloop python3-gevent procps"
pkgs_bench="wrk nginx-light valgrind util-linux gunicorn python3-uvicorn python3-httptools uwsgi uwsgi-plugin-python3"

case "$what" in
    build) want="$pkgs_build" ;;
    test)  want="$pkgs_build $pkgs_test" ;;
    bench) want="$pkgs_build $pkgs_test $pkgs_bench" ;;
    *) echo "install-deps: unknown set '$what' (build|test|bench)" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing Debian packages:$missing (run as root, or: apt-get install$missing)" >&2
    exit 1
fi
echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
