"""Scenario 7's build and reload numbers without the full benchmark.

    python3 bench/scale_reload.py BINARY [ROUTES] [ROUNDS]

Writes the scale config (bench/harness.py's `scale_config`, default 10,000 routes) to a
temporary directory, times `airgate check` on it, then starts `airgate serve` on it with
a tiny local backend and reports startup, the first build and, for each round, the time
from writing a new file to its route answering 200 and the rebuild time from
`airgate_config_reload_duration_seconds`. PERF=FILE records the reloads with
`perf record -e cpu-clock`; CALLGRIND=FILE runs serve under callgrind, instrumenting
only after startup (slow: allow a minute for startup).
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def wait200(url, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if get(url)[0] == 200:
            return
        time.sleep(0.005)
    raise SystemExit(f"{url} did not answer 200 within {timeout}s")


def main():
    binary = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = backend.server_address[1]
    d = tempfile.mkdtemp(prefix="airgate-scale-")
    harness.scale_config(types.SimpleNamespace(backend_port=port), d, n)

    t0 = time.monotonic()
    subprocess.run([binary, "check", "--config", d], check=True, stdout=subprocess.DEVNULL)
    print(f"{n} routes: check {time.monotonic() - t0:.3f} s")

    http, https, admin = free_port(), free_port(), free_port()
    callgrind = os.environ.get("CALLGRIND")
    pre = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
           f"--callgrind-out-file={callgrind}"] if callgrind else []
    t0 = time.monotonic()
    p = subprocess.Popen(
        pre + [binary, "serve", "--config", d, "--http-addr", f"127.0.0.1:{http}",
               "--https-addr", f"127.0.0.1:{https}", "--admin-addr", f"127.0.0.1:{admin}",
               "--worker-threads", "1", "--access-log", "off"],
        env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL)
    perf = None
    try:
        wait200(f"http://127.0.0.1:{admin}/readyz", 600)
        wait200(f"http://127.0.0.1:{http}/air-0/hello", 60)
        startup = time.monotonic() - t0

        def stats():
            text = get(f"http://127.0.0.1:{admin}/metrics")[1]
            return harness.reload_stats(text)

        s0, c0 = stats()
        print(f"startup {startup:.3f} s, first build {s0 / max(1, c0) * 1000:.1f} ms")
        if callgrind:
            time.sleep(2)
            subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], stdout=subprocess.DEVNULL)
        if os.environ.get("PERF"):
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4000", "-g",
                                     "-p", str(p.pid), "-o", os.environ["PERF"]],
                                    stderr=subprocess.DEVNULL)
        for i in range(rounds):
            time.sleep(0.5)
            t0 = time.monotonic()
            with open(os.path.join(d, f"new{i}.yaml"), "w") as f:
                f.write(harness.airroute(f"fresh{i}", harness.ag_route(
                    types.SimpleNamespace(backend_port=port), f"/fresh{i}/")))
            wait200(f"http://127.0.0.1:{http}/fresh{i}/hello", 120)
            ms = (time.monotonic() - t0) * 1000
            end = time.monotonic() + 10
            s1, c1 = stats()
            while c1 <= c0 and time.monotonic() < end:
                time.sleep(0.02)
                s1, c1 = stats()
            print(f"file change -> route answers {ms:.0f} ms, rebuild {(s1 - s0) / max(1, c1 - c0) * 1000:.1f} ms")
            s0, c0 = s1, c1
        if callgrind:
            subprocess.run(["callgrind_control", "-d", str(p.pid)], stdout=subprocess.DEVNULL)
    finally:
        if perf:
            perf.send_signal(2)
            perf.wait()
        p.terminate()
        p.wait()
        subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
