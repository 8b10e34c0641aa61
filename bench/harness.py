#!/usr/bin/env python3
"""airgate against nginx and against no proxy: the benchmark driver.

Run through `bash bench/run.sh` (which installs the tools and builds the binaries);
this file only orchestrates processes and measures. Standard library only.

Layout of every comparison: one fast backend (examples/bench_backend.rs) and the load
generator share CPU 1; the proxy under test (nginx with one worker, or airgate with one
worker thread) runs on CPU 0. Each scenario starts a fresh nginx and a fresh airgate with
that scenario's configuration, so peak RSS and CPU time belong to that scenario only.
Both run for the whole scenario and are loaded in turn, round after round, so a slow
spell of a shared machine hits both alike; only the one under load uses CPU 0.
"""
import argparse
import base64
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PROXY_CPU = "0"
LOAD_CPU = "1"
HOST = "127.0.0.1"

CHILDREN = []  # every Popen we start, reaped in cleanup()


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cleanup():
    for p in reversed(CHILDREN):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + 5
    for p in reversed(CHILDREN):
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    CHILDREN.clear()


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def spawn(cmd, cpu, log_path, **kw):
    """Start `cmd` pinned to `cpu` in its own process group (so it and its children
    can be signalled together) with output to `log_path`."""
    out = open(log_path, "ab")
    p = subprocess.Popen(
        ["taskset", "-c", cpu] + cmd,
        stdout=kw.pop("stdout", out),
        stderr=out,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **kw,
    )
    CHILDREN.append(p)
    return p


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if p in CHILDREN:
        CHILDREN.remove(p)


def http_get(url, headers=None, timeout=2.0):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, urllib.error.URLError):
        return None, b""


def wait_for(url, proc, what, timeout=30.0, headers=None):
    """Poll `url` until it answers 200, `proc` dies, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before answering {url}")
        status, _ = http_get(url, headers=headers, timeout=1.0)
        if status == 200:
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not answer 200 on {url} within {timeout}s")


# ---------------------------------------------------------------- /proc readings


def pids_of(p):
    """The process and its direct children (nginx: master + worker)."""
    pids = [p.pid]
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == p.pid:
                pids.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return pids


def cpu_split(p):
    """(user, system) CPU seconds of the process and its children."""
    user = system = 0
    for pid in pids_of(p):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])  # utime
            system += int(fields[12])  # stime
        except (OSError, IndexError, ValueError):
            pass
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(p):
    return sum(cpu_split(p))


def status_kb(p, field):
    """Sum of `field` (VmHWM, VmRSS) over the process and its children, in KiB."""
    total = 0
    for pid in pids_of(p):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


# ---------------------------------------------------------------- load generators


def taskset(cmd):
    return ["taskset", "-c", LOAD_CPU] + cmd


def run_tool(cmd, timeout):
    r = subprocess.run(taskset(cmd), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return r.stdout


WRK_LATENCY = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_TOTAL = re.compile(r"(\d+) requests in")
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def wrk(url, secs, conns=64, headers=(), script=None):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--timeout", "5s"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    out = run_tool(cmd + [url], timeout=secs + 30)
    rps = float(WRK_LATENCY.search(out).group(1))
    total = int(WRK_TOTAL.search(out).group(1))
    bad = WRK_NON2XX.search(out)
    if bad and int(bad.group(1)) > 0:
        raise RuntimeError(f"wrk {url}: {bad.group(1)} non-2xx responses of {total}")
    return {"rps": rps, "requests": total}


def h2load(url, connect_to, secs, conns=16, streams=32):
    cmd = ["h2load", "-c", str(conns), "-m", str(streams), "-t", "1", "-D", str(secs)]
    if connect_to:
        cmd += [f"--connect-to={connect_to}"]
    out = run_tool(cmd + [url], timeout=secs + 30)
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    s2xx = re.search(r"status codes: (\d+) 2xx", out)
    if not m or not done:
        raise RuntimeError(f"h2load output not understood:\n{out[-800:]}")
    if int(done.group(3)) > 0 or (s2xx and int(s2xx.group(1)) < int(done.group(2))):
        raise RuntimeError(f"h2load {url}: failures\n{out[-800:]}")
    return {"rps": float(m.group(1)), "requests": int(done.group(1))}


LOADGEN = None  # the backend binary, whose `load` subcommand is the fixed-rate generator


def fixed_rate(port, path, rate, secs, headers=(), tls_name=None, ca=None, conns=32):
    """p50/p99 in ms at `rate` requests/s, corrected for coordinated omission: each
    request's latency counts from when it was due, not from when it could be sent."""
    if rate <= 0:
        return None
    cmd = [LOADGEN, "load", "--addr", f"{HOST}:{port}", "--path", path, "--rate", str(int(rate)),
           "--secs", str(secs), "--conns", str(conns)]
    if tls_name:
        cmd += ["--tls-name", tls_name, "--ca", ca, "--h2"]
    for h in headers:
        cmd += ["-H", h]
    j = json.loads(run_tool(cmd, timeout=secs + 60).strip().splitlines()[-1])
    if j["errors"]:
        raise RuntimeError(f"fixed-rate load on port {port}{path}: {j['errors']} failed requests")
    return {"p50": j["p50_ms"], "p99": j["p99_ms"], "max": j["max_ms"]}


# ---------------------------------------------------------------- configurations

TLS_HOST = "bench.local"
ORIGIN = "https://app.example.com"
NGINX_PROXY = """
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-ID $request_id;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
"""


def render(name, **subs):
    with open(os.path.join(HERE, "configs", name)) as f:
        text = f.read()
    for k, v in subs.items():
        text = text.replace(f"@@{k}@@", str(v))
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise RuntimeError(f"{name}: unfilled placeholders {left}")
    return text


def tls_secret_yaml(cert, key):
    def b64(path):
        with open(path, "rb") as f:
            return base64.b64encode(f.read()).decode()

    return (
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\n"
        "metadata: {name: bench-tls, namespace: bench}\n"
        f"data:\n  tls.crt: {b64(cert)}\n  tls.key: {b64(key)}\n"
    )


class Env:
    def __init__(self, work, airgate, backend_bin, smoke):
        self.work = work
        self.airgate = airgate
        self.backend_bin = backend_bin
        self.smoke = smoke
        self.cert = os.path.join(work, "tls.crt")
        self.key = os.path.join(work, "tls.key")
        self.secs = 2 if smoke else 10
        self.backend = None
        self.backend_port = None
        self.backend_tls_port = None


class Proxy:
    """A running nginx or airgate with its ports."""

    def __init__(self, kind, proc, http, https, admin=None):
        self.kind, self.proc, self.http, self.https, self.admin = kind, proc, http, https, admin

    def cpu(self):
        return cpu_seconds(self.proc)

    def peak_rss_mb(self):
        return status_kb(self.proc, "VmHWM") / 1024

    def rss_mb(self):
        return status_kb(self.proc, "VmRSS") / 1024

    def metrics(self):
        status, body = http_get(f"http://{HOST}:{self.admin}/metrics")
        return body.decode() if status == 200 else ""


def start_nginx(env, scenario, extra_http="", locations="", probe="/plain/hello"):
    d = os.path.join(env.work, f"nginx-{scenario}")
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    os.chmod(os.path.join(d, "tmp"), 0o777)
    http, https = free_port(), free_port()
    conf = render(
        "nginx.conf",
        DIR=d,
        HTTP_PORT=http,
        HTTPS_PORT=https,
        BACKEND=env.backend_port,
        CERT=env.cert,
        KEY=env.key,
        TLS_HOST=TLS_HOST,
        EXTRA_HTTP=extra_http,
        LOCATIONS=locations,
    )
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    p = spawn(["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c", path],
              PROXY_CPU, os.path.join(d, "out.log"))
    wait_for(f"http://{HOST}:{http}{probe}", p, "nginx", headers={"X-API-Key": "k", "Origin": ORIGIN})
    return Proxy("nginx", p, http, https)


def write_airgate_config(env, d, docs):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "routes.yaml"), "w") as f:
        f.write(docs)
    with open(os.path.join(d, "tls.yaml"), "w") as f:
        f.write(tls_secret_yaml(env.cert, env.key))


def start_airgate(env, scenario, docs=None, config_dir=None, access_log="off",
                  probe="/plain/hello", timeout=60.0, extra_env=None):
    d = config_dir or os.path.join(env.work, f"airgate-{scenario}")
    if docs is not None:
        write_airgate_config(env, d, docs)
    http, https, admin = free_port(), free_port(), free_port()
    p = spawn(
        [env.airgate, "serve", "--config", d,
         "--http-addr", f"{HOST}:{http}", "--https-addr", f"{HOST}:{https}",
         "--admin-addr", f"{HOST}:{admin}", "--worker-threads", "1",
         "--access-log", access_log, "--log-format", "text"],
        PROXY_CPU,
        os.path.join(env.work, f"airgate-{scenario}.log"),
        env=dict(os.environ, RUST_LOG="warn", **(extra_env or {})),
    )
    wait_for(f"http://{HOST}:{admin}/readyz", p, "airgate", timeout=timeout)
    wait_for(f"http://{HOST}:{http}{probe}", p, "airgate", timeout=timeout,
             headers={"X-API-Key": "k", "Origin": ORIGIN})
    return Proxy("airgate", p, http, https, admin)


def airroute(name, routes, extra_spec="", hosts="[]"):
    return render("airroute.yaml", NAME=name, HOSTS=hosts, EXTRA_SPEC=extra_spec, ROUTES=routes)


def ag_route(env, path, strip=False, extra=""):
    lines = [f"    - path: {path}", "      pathType: Prefix",
             f"      backend: {{url: \"http://{HOST}:{env.backend_port}\"}}"]
    if strip:
        lines.append("      stripPrefix: true")
    if extra:
        lines += ["      " + line for line in extra.strip().splitlines()]
    return "\n".join(lines) + "\n"


def ng_location(path, strip=False, extra=""):
    target = "http://backend/" if strip else "http://backend"
    return f"        location {path} {{\n            proxy_pass {target};\n{NGINX_PROXY}{extra}        }}\n"


# ---------------------------------------------------------------- measurement of one target


# Scenarios 1-4: the three targets run side by side and are loaded in turn, round after
# round (saturation, then fixed-rate latency), and each figure is the median round, so a
# slow spell of a shared machine hits every target alike instead of deciding a ratio.
RR_ROUNDS = 3
RR_ROUND_S = 5


@contextlib.contextmanager
def side_by_side(start_nginx_fn, start_airgate_fn):
    """nginx and airgate running together for one scenario, as {"nginx", "airgate"} ->
    Proxy; both stopped afterwards, also when the scenario fails."""
    proxies = {}
    try:
        proxies["nginx"] = start_nginx_fn()
        proxies["airgate"] = start_airgate_fn()
        yield proxies
    finally:
        for p in proxies.values():
            stop(p.proc)


def median_rounds(samples):
    """Median req/s and CPU figures of one target's interleaved rounds, with the rounds."""
    out = {"rps": statistics.median(r["rps"] for r in samples),
           "rps_rounds": [r["rps"] for r in samples]}
    if samples[0].get("cpu") is not None:
        out["cpu_us"] = statistics.median(r["cpu"] for r in samples)
        out["user_us"] = statistics.median(r["user"] for r in samples)
        out["sys_us"] = statistics.median(r["sys"] for r in samples)
    return out


def three_way(env, name, direct_load, start_nginx_fn, start_airgate_fn, load_for, latency_for):
    """Run one scenario direct, through nginx and through airgate.

    `load_for(proxy)` returns a saturating load function(secs)->{rps,requests} (proxy
    None: direct); `latency_for(proxy, rate, secs)` returns {p50,p99} at `rate`. Both
    proxies run for the whole scenario (the idle one uses no CPU) and the three targets
    are loaded in turn: RR_ROUNDS rounds of saturation, then RR_ROUNDS rounds of latency
    at a fixed rate, half of nginx's median saturation, the same for all three. Each
    figure is the median round."""
    rounds = 1 if env.smoke else RR_ROUNDS
    secs = env.secs if env.smoke else RR_ROUND_S
    with side_by_side(start_nginx_fn, start_airgate_fn) as proxies:
        targets = {"direct": (None, direct_load)}
        targets.update((k, (p, load_for(p))) for k, p in proxies.items())
        samples = interleaved_rounds(targets, rounds, secs, warm=not env.smoke)
        out = {t: median_rounds(rs) for t, rs in samples.items()}
        rate = out["nginx"]["rps"] / 2
        out["rate"] = rate
        lats = {}
        for _ in range(rounds):
            for t in targets:
                lats.setdefault(t, []).append(latency_for(proxies.get(t), rate, secs))
        for t, ls in lats.items():
            out[t]["lat"] = {"p50": statistics.median(x["p50"] for x in ls),
                             "p99": statistics.median(x["p99"] for x in ls),
                             "p99_rounds": [x["p99"] for x in ls]}
        for t, p in proxies.items():
            out[t]["rss"] = p.peak_rss_mb()
    log(f"{name}: " + ", ".join(f"{k} {v['rps']:.0f} r/s" for k, v in out.items() if isinstance(v, dict)))
    return out


# ---------------------------------------------------------------- scenarios 1-4


def scen_http(env, name, path, ng_extra_http, ng_locations, ag_docs, headers=(), access_log="off"):
    base = lambda port: f"http://{HOST}:{port}{path}"  # noqa: E731

    def load_for(p):
        return lambda secs: wrk(base(p.http if p else env.backend_port), secs, headers=headers)

    def lat_for(p, rate, secs):
        return fixed_rate(p.http if p else env.backend_port, path, rate, secs, headers=headers)

    return three_way(
        env, name, load_for(None),
        lambda: start_nginx(env, name, ng_extra_http, ng_locations, probe=path),
        lambda: start_airgate(env, name, ag_docs, access_log=access_log, probe=path),
        load_for, lat_for,
    )


def scenario_plain(env):
    return scen_http(env, "1-plain", "/plain/hello", "", ng_location("/plain/"),
                     airroute("plain", ag_route(env, "/plain/")))


def scenario_policy(env):
    log_file = os.path.join(env.work, "policy-access.log")
    ng_http = render("nginx-policy-http.conf")
    ng_extra = render("nginx-policy-location.conf", ACCESS_LOG=log_file + ".nginx")
    spec = render("airgate-policy-spec.yaml", ORIGIN=ORIGIN)
    route = ag_route(env, "/policy/", strip=True,
                     extra="rateLimit: {zone: big, burst: 1000000, nodelay: true}")
    return scen_http(env, "2-policy", "/policy/hello", ng_http,
                     ng_location("/policy/", strip=True, extra=ng_extra),
                     airroute("policy", route, extra_spec=spec),
                     headers=(f"Origin: {ORIGIN}",), access_log=log_file + ".airgate")


def scenario_auth(env):
    ng_extra = render("nginx-auth-location.conf")
    ng_locs = ng_location("/authed/", extra=ng_extra) + render("nginx-auth-hook.conf")
    spec = render("airgate-auth-spec.yaml", HOOK=f"http://{HOST}:{env.backend_port}/auth")
    return scen_http(env, "3-auth", "/authed/hello", "", ng_locs,
                     airroute("authed", ag_route(env, "/authed/"), extra_spec=spec),
                     headers=("X-API-Key: k",))


def scenario_tls_h2(env):
    path = "/plain/hello"
    url = f"https://{TLS_HOST}{path}"

    def port_of(p):
        return p.https if p else env.backend_tls_port

    def load_for(p):
        return lambda secs: h2load(url, f"{HOST}:{port_of(p)}", secs)

    def lat_for(p, rate, secs):
        return fixed_rate(port_of(p), path, rate, secs, tls_name=TLS_HOST, ca=env.cert, conns=32)

    docs = airroute("tls", ag_route(env, "/plain/"), hosts=f"[{TLS_HOST}]",
                    extra_spec="  tls: {secretName: bench-tls, redirect: false}\n")
    return three_way(
        env, "4-tls-h2", load_for(None),
        lambda: start_nginx(env, "4-tls-h2", "", ng_location("/plain/")),
        lambda: start_airgate(env, "4-tls-h2", docs + "---\n" + airroute("plain", ag_route(env, "/plain/"))),
        load_for, lat_for,
    )


# ---------------------------------------------------------------- scenario 5: SSE


def sse_delays(port, path, n, timeout):
    """Read one SSE stream; return per-event delay (arrival - backend write time) in ms."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n".encode())
    delays, buf = [], b""
    pat = re.compile(rb"data: (\d+)\n")
    deadline = time.monotonic() + timeout
    while len(delays) < n and time.monotonic() < deadline:
        chunk = s.recv(65536)
        now = time.time_ns()
        if not chunk:
            break
        buf += chunk
        pos = 0
        for m in pat.finditer(buf):
            delays.append((now - int(m.group(1))) / 1e6)
            pos = m.end()
        buf = buf[pos:]
    s.close()
    if len(delays) < n:
        raise RuntimeError(f"SSE via port {port}: {len(delays)} of {n} events")
    return delays


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def scenario_sse(env):
    """One stream at a time, direct, through nginx and through airgate in turn, for
    RR_ROUNDS rounds with both proxies running; each figure is the median round (a p99
    of 200 events is the second-worst event, which one slow spell of the VM decides)."""
    n = 50 if env.smoke else 200
    rounds = 1 if env.smoke else RR_ROUNDS
    path = f"/stream/sse?n={n}&ms=10"
    def run(port):
        d = sse_delays(port, path, n, timeout=n * 0.01 + 30)
        return {"p50": pct(d, 50), "p99": pct(d, 99), "events": len(d)}

    per_round = {}
    with side_by_side(
            lambda: start_nginx(env, "5-sse", "", ng_location("/stream/"), probe="/stream/hello"),
            lambda: start_airgate(env, "5-sse", airroute("stream", ag_route(env, "/stream/", extra="streaming: true")),
                                  probe="/stream/hello")) as proxies:
        ports = {"direct": env.backend_port, "nginx": proxies["nginx"].http, "airgate": proxies["airgate"].http}
        for _ in range(rounds):
            for t, port in ports.items():
                per_round.setdefault(t, []).append(run(port))
        out = {t: {"p50": statistics.median(r["p50"] for r in rs),
                   "p99": statistics.median(r["p99"] for r in rs),
                   "p99_rounds": [r["p99"] for r in rs], "events": n}
               for t, rs in per_round.items()}
        for t, p in proxies.items():
            out[t]["rss"] = p.peak_rss_mb()
    for k in ("nginx", "airgate"):
        out[k]["added_p50"] = out[k]["p50"] - out["direct"]["p50"]
        out[k]["added_p99"] = out[k]["p99"] - out["direct"]["p99"]
    log(f"5-sse: added p50 nginx {out['nginx']['added_p50']:.3f} ms, airgate {out['airgate']['added_p50']:.3f} ms")
    return out


# ---------------------------------------------------------------- scenario 6: bulk


def curl_transfer(url, upload=None, timeout=300):
    cmd = ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{time_total} %{size_download} %{size_upload}"]
    if upload:
        cmd += ["-X", "POST", "-T", upload, "-H", "Expect:"]
    out = run_tool(cmd + [url], timeout=timeout)
    t, down, up = out.split()
    size = float(up) if upload else float(down)
    return {"secs": float(t), "mb_s": size / float(t) / 1e6, "bytes": size}


def scenario_bulk(env):
    size = (20 if env.smoke else 200) * 1024 * 1024
    blob = os.path.join(env.work, "upload.bin")
    with open(blob, "wb") as f:
        f.truncate(size)  # sparse zeros: reading it costs the client nothing
    down_path = f"/bulk/download?bytes={size}"

    def run(port, proxy):
        r = {}
        if proxy:
            r["rss_before"] = proxy.rss_mb()
        c0 = proxy.cpu() if proxy else 0
        d = curl_transfer(f"http://{HOST}:{port}{down_path}")
        u = curl_transfer(f"http://{HOST}:{port}/bulk/upload", upload=blob)
        c1 = proxy.cpu() if proxy else 0
        if d["bytes"] != size or u["bytes"] != size:
            raise RuntimeError(f"bulk via {port}: moved {d['bytes']}/{u['bytes']} of {size} bytes")
        r["down_mb_s"], r["up_mb_s"] = d["mb_s"], u["mb_s"]
        if proxy:
            r["cpu_ms_per_gb"] = (c1 - c0) * 1000 / (2 * size / 1e9)
            r["rss"] = proxy.peak_rss_mb()
        return r

    out = {"size_mb": size / 1024 / 1024, "direct": run(env.backend_port, None)}
    ng = start_nginx(env, "6-bulk", "client_max_body_size 0;\n", ng_location("/bulk/"), probe="/bulk/hello")
    try:
        out["nginx"] = run(ng.http, ng)
    finally:
        stop(ng.proc)
    ag = start_airgate(env, "6-bulk", airroute("bulk", ag_route(env, "/bulk/", extra="maxBodySize: \"0\"")),
                       probe="/bulk/hello")
    try:
        out["airgate"] = run(ag.http, ag)
    finally:
        stop(ag.proc)
    os.unlink(blob)
    log(f"6-bulk: download MB/s direct {out['direct']['down_mb_s']:.0f} nginx {out['nginx']['down_mb_s']:.0f} airgate {out['airgate']['down_mb_s']:.0f}")
    return out


# ---------------------------------------------------------------- scenario 7: scale

ROUTES_LUA = """
-- Cycle through the benchmark's route prefixes so every request does a full lookup.
local n = @@N@@
local i = 0
request = function()
  i = i + 1
  local k = (i * 7919) % n
  local path
  local j = math.floor(k / 2)
  if k % 2 == 0 then path = "/ing-" .. j .. "/hello" else path = "/air-" .. j .. "/hello" end
  return wrk.format("GET", path)
end
"""


# Seconds of load before scenario 7 measures: at ~20k req/s, several passes over 10,000
# routes.
SCALE_WARMUP_S = 2
# Scenario 7's lookup: interleaved rounds of this many seconds per proxy.
SCALE_ROUNDS = 5
SCALE_ROUND_S = 5


def scale_config(env, d, n):
    """`n` routes: half as Ingress objects (one path each, Service + EndpointSlice
    backend), half as AIRoutes of up to 100 routes each (URL backends)."""
    os.makedirs(d, exist_ok=True)
    half = n // 2
    with open(os.path.join(d, "backend.yaml"), "w") as f:
        f.write(render("scale-backend.yaml", BACKEND=env.backend_port))
    with open(os.path.join(d, "ingress.yaml"), "w") as f:
        for i in range(half):
            f.write(render("scale-ingress.yaml", I=i))
    with open(os.path.join(d, "airroute.yaml"), "w") as f:
        for start in range(0, n - half, 100):
            routes = "".join(ag_route(env, f"/air-{i}/") for i in range(start, min(n - half, start + 100)))
            f.write("---\n" + airroute(f"air-{start}", routes))


def reload_stats(metrics_text):
    s = re.search(r"^airgate_config_reload_duration_seconds_sum ([\d.e+-]+)", metrics_text, re.M)
    c = re.search(r"^airgate_config_reload_duration_seconds_count (\d+)", metrics_text, re.M)
    return (float(s.group(1)) if s else 0.0, int(c.group(1)) if c else 0)


def interleaved_rounds(targets, rounds, secs, warm=True):
    """Load running proxies in turn, round after round, so a slow spell of a shared
    machine hits them alike. `targets`: key -> (Proxy, or None for direct, and
    load(secs) -> wrk result); with `warm`, each turn starts with 1 s of load (the others
    ran meanwhile). Returns key -> one sample per round: req/s and CPU µs per request, in
    all and split user / system (None for direct)."""
    samples = {}
    for _ in range(rounds):
        for key, (proxy, load) in targets.items():
            if warm:
                load(1)
            if proxy is None:  # direct to the backend: no proxy CPU to read
                samples.setdefault(key, []).append({"rps": load(secs)["rps"], "cpu": None})
                continue
            u0, s0 = cpu_split(proxy.proc)
            r = load(secs)
            u1, s1 = cpu_split(proxy.proc)
            n = max(1, r["requests"])
            samples.setdefault(key, []).append(
                {"rps": r["rps"], "cpu": (u1 - u0 + s1 - s0) / n * 1e6,
                 "user": (u1 - u0) / n * 1e6, "sys": (s1 - s0) / n * 1e6})
    return samples


def rounds_text(values):
    return ", ".join(f"{v:,.0f}" for v in values or [])


def scenario_scale(env):
    """Build and reload figures per route count, then lookup throughput: all four
    proxies (airgate and nginx, 10 and N routes) run side by side and are loaded in turn
    for SCALE_ROUNDS rounds, so a slow spell of a shared machine hits them alike; the
    table gives each one's median round."""
    big = 1000 if env.smoke else 10000
    warmup = 1 if env.smoke else SCALE_WARMUP_S
    rounds = 1 if env.smoke else SCALE_ROUNDS
    round_secs = env.secs if env.smoke else SCALE_ROUND_S
    out = {"big": big, "rounds": rounds, "round_secs": round_secs}
    running = []  # (n, proxy name, Proxy, script)
    try:
        for n in (10, big):
            d = os.path.join(env.work, f"scale-{n}")
            scale_config(env, d, n)
            script = os.path.join(env.work, f"routes-{n}.lua")
            with open(script, "w") as f:
                f.write(ROUTES_LUA.replace("@@N@@", str(n)))
            t0 = time.monotonic()
            ag = start_airgate(env, f"7-scale-{n}", config_dir=d, probe="/air-0/hello", timeout=300)
            running.append((n, "airgate", ag, script))
            r = {"startup_s": time.monotonic() - t0}
            s0, c0 = reload_stats(ag.metrics())
            r["first_build_ms"] = s0 / max(1, c0) * 1000
            # Steady state, as for the other scenarios: one pass over every prefix first
            # (first-use state such as a route's metrics is built then).
            wrk(f"http://{HOST}:{ag.http}/", warmup, script=script)
            r["rss"] = ag.rss_mb()
            # A change on disk: a new file with one more route; time until it answers.
            t0 = time.monotonic()
            with open(os.path.join(d, "new.yaml"), "w") as f:
                f.write(airroute("fresh", ag_route(env, "/fresh/")))
            wait_for(f"http://{HOST}:{ag.http}/fresh/hello", ag.proc, "airgate reload", timeout=120)
            r["change_to_route_ms"] = (time.monotonic() - t0) * 1000
            # The reload is observed after the snapshot is published: wait for the sample.
            until = time.monotonic() + 10
            s1, c1 = reload_stats(ag.metrics())
            while c1 <= c0 and time.monotonic() < until:
                time.sleep(0.05)
                s1, c1 = reload_stats(ag.metrics())
            r["rebuild_ms"] = (s1 - s0) / max(1, c1 - c0) * 1000
            out[n] = r
            # nginx with the same number of prefix locations, for the lookup comparison.
            locs = "".join(ng_location(f"/ing-{i}/") + ng_location(f"/air-{i}/") for i in range(n // 2))
            t0 = time.monotonic()
            ng = start_nginx(env, f"7-scale-{n}", "", locs, probe="/air-0/hello")
            running.append((n, "nginx", ng, script))
            out[n]["nginx_startup_s"] = time.monotonic() - t0
            wrk(f"http://{HOST}:{ng.http}/", warmup, script=script)
            out[n]["nginx_rss"] = ng.rss_mb()
        def load_for(proxy, script):
            url = f"http://{HOST}:{proxy.http}/"
            return lambda secs: wrk(url, secs, script=script)

        samples = interleaved_rounds(
            {(n, name): (proxy, load_for(proxy, script)) for n, name, proxy, script in running},
            rounds, round_secs, warm=not env.smoke)
        for (n, name), rs in samples.items():
            prefix = "" if name == "airgate" else "nginx_"
            out[n].update((prefix + k, v) for k, v in median_rounds(rs).items())
        for n, name, proxy, _ in running:
            if name == "airgate":
                out[n]["peak_rss"] = proxy.peak_rss_mb()
    finally:
        for _, _, proxy, _ in running:
            stop(proxy.proc)
    for n in (10, big):
        log(f"7-scale {n} routes: airgate {out[n]['rps']:.0f} r/s, nginx {out[n]['nginx_rps']:.0f} r/s, "
            f"rebuild {out[n]['rebuild_ms']:.1f} ms")
    return out


# ---------------------------------------------------------------- scenario 8: zone memory

KEYS_LUA = """
-- Every request carries a key never sent before, so each one adds a tracked key.
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/zone/hello", {["X-Key"] = "@@RUN@@-" .. i})
end
"""


def drive_keys(env, port, n, count_keys):
    """Send requests with distinct keys in short wrk runs until `count_keys()` reaches
    `n` (wrk's own stop() would still wait out the whole duration). Bounded: 90 s."""
    sent, deadline, run = 0, time.monotonic() + 90, 0
    while time.monotonic() < deadline:
        run += 1
        script = os.path.join(env.work, f"keys-{run}.lua")
        with open(script, "w") as f:
            f.write(KEYS_LUA.replace("@@RUN@@", f"r{run}"))
        sent += wrk(f"http://{HOST}:{port}/", 1, conns=16, script=script)["requests"]
        if count_keys(sent) >= n:
            return sent
    raise RuntimeError(f"only {sent} keys sent of {n} within 90 s")


def zone_keys(metrics_text):
    m = re.search(r'^airgate_ratelimit_keys\{[^}]*\} (\d+)', metrics_text, re.M)
    return int(m.group(1)) if m else None


def scenario_zone(env):
    n = 10000 if env.smoke else 100000
    out = {"keys": n}
    spec = render("airgate-zone-spec.yaml")
    route = ag_route(env, "/zone/", extra="rateLimit: {zone: keys, burst: 1000, nodelay: true}")
    # Without transparent huge pages here: mimalloc's THP-backed heap commits 2 MiB at a
    # time, so the zone would be resident before the first key and RSS growth per key
    # would say nothing (docs/operations.md, "Memory allocator").
    ag = start_airgate(env, "8-zone", airroute("zone", route, extra_spec=spec), probe="/zone/hello",
                       extra_env={"MIMALLOC_ALLOW_THP": "0"})
    try:
        # Same connections, one key: what grows after this is the zone, not buffers.
        wrk(f"http://{HOST}:{ag.http}/zone/hello", 1, conns=16, headers=("X-Key: warm",))
        before = ag.rss_mb()
        sent = drive_keys(env, ag.http, n, lambda _sent: zone_keys(ag.metrics()) or 0)
        after = ag.rss_mb()
        keys = zone_keys(ag.metrics())
        out["airgate"] = {"rss_before": before, "rss_after": after, "sent": sent, "tracked": keys,
                          "bytes_per_key": (after - before) * 1024 * 1024 / max(1, keys or sent)}
    finally:
        stop(ag.proc)
    ng = start_nginx(env, "8-zone", render("nginx-zone-http.conf"),
                     ng_location("/zone/", extra="            limit_req zone=keys burst=1000 nodelay;\n"),
                     probe="/zone/hello")
    try:
        wrk(f"http://{HOST}:{ng.http}/zone/hello", 1, conns=16, headers=("X-Key: warm",))
        before = ng.rss_mb()
        sent = drive_keys(env, ng.http, n, lambda sent: sent)
        after = ng.rss_mb()
        out["nginx"] = {"rss_before": before, "rss_after": after, "sent": sent,
                        "bytes_per_key": (after - before) * 1024 * 1024 / max(1, sent)}
    finally:
        stop(ng.proc)
    log(f"8-zone: airgate {out['airgate']['bytes_per_key']:.0f} B/key, nginx {out['nginx']['bytes_per_key']:.0f} B/key")
    return out


# ---------------------------------------------------------------- report


def f(x, nd=0):
    if x is None:
        return "—"
    return f"{x:,.{nd}f}"


def ratio(a, b, nd=2):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.{nd}f}"


def table_rr(title, r, note=""):
    lines = [f"### {title}", ""]
    if note:
        lines += [note, ""]
    rate = r["rate"]
    lines += [f"| target | req/s (saturation) | proxy CPU µs/req | of which user / system | p50 ms @ {rate:,.0f} r/s | p99 ms @ {rate:,.0f} r/s | proxy peak RSS MiB |",
              "|---|---:|---:|---:|---:|---:|---:|"]

    def cell(t, key):
        lat = r[t].get("lat")
        if key in ("p50", "p99"):
            return lat[key] if lat else None
        return r[t].get(key)

    for t in ("direct", "nginx", "airgate"):
        split = f"{f(cell(t, 'user_us'), 1)} / {f(cell(t, 'sys_us'), 1)}" if cell(t, "user_us") is not None else "—"
        lines.append(f"| {t} | {f(cell(t, 'rps'))} | {f(cell(t, 'cpu_us'), 1)} | {split} | {f(cell(t, 'p50'), 3)} | {f(cell(t, 'p99'), 3)} | {f(cell(t, 'rss'), 1)} |")
    for base in ("nginx", "direct"):
        cells = [ratio(cell("airgate", k), cell(base, k)) for k in ("rps", "cpu_us", "p50", "p99", "rss")]
        cells.insert(2, f"{ratio(cell('airgate', 'user_us'), cell(base, 'user_us'))} / "
                        f"{ratio(cell('airgate', 'sys_us'), cell(base, 'sys_us'))}")
        lines.append(f"| **airgate / {base}** | " + " | ".join(cells) + " |")
    rounds = {t: r[t].get("rps_rounds") or [] for t in ("direct", "nginx", "airgate")}
    if len(rounds["airgate"]) > 1:
        p99s = {t: (r[t].get("lat") or {}).get("p99_rounds") or [] for t in rounds}
        lines += ["", f"Each figure is the median of {len(rounds['airgate'])} rounds, the targets loaded in turn. "
                  "Rounds, req/s: " + "; ".join(f"{t} {rounds_text(v)}" for t, v in rounds.items())
                  + ". p99 ms: " + "; ".join(f"{t} {', '.join(f'{x:.3f}' for x in v)}" for t, v in p99s.items())
                  + "."]
    return "\n".join(lines) + "\n"


def report(env, results, meta):
    out = ["# airgate benchmark results", ""]
    out += [f"- date: {meta['date']}", f"- command: `{meta['command']}`",
            f"- machine: {meta['nproc']} CPUs, {meta['cpu']}, kernel {meta['kernel']}",
            f"- airgate: commit {meta['commit']} ({'debug' if env.smoke else 'release'} build, `--worker-threads 1`, pinned to CPU {PROXY_CPU})",
            f"- nginx: {meta['nginx']} (`worker_processes 1`, upstream keepalive, pinned to CPU {PROXY_CPU})",
            f"- backend: examples/bench_backend.rs (one thread) and load generators on CPU {LOAD_CPU}",
            f"- tools: {meta['tools']}",
            (f"- run length: {env.secs}s saturation and {env.secs}s fixed-rate latency per target, one round"
             if env.smoke else
             f"- run length, scenarios 1-5: direct, nginx and airgate run side by side and are loaded in turn, "
             f"{RR_ROUNDS} rounds of {RR_ROUND_S}s saturation (each after 1s of warm-up load), then "
             f"{RR_ROUNDS} rounds of {RR_ROUND_S}s fixed-rate latency at half of nginx's median saturation, "
             "corrected for coordinated omission; the tables give each target's median round"),
            ""]
    if env.smoke:
        out += ["**Smoke run: seconds-long runs, numbers are only a sign of life.**", ""]
    out += ["Latency is measured at a fixed rate, half of nginx's saturation, with the harness's own "
            "open-loop generator (`bench_backend load`): request i is due at start + i/rate and its latency "
            "counts from then, so queueing behind a slow response is not hidden.", ""]
    out += ["Ratios are airgate / nginx and airgate / direct: below 1 is better for CPU, latency and "
            "RSS, above 1 is better for req/s.", ""]
    if "plain" in results:
        out.append(table_rr("1. Plain HTTP/1.1 keep-alive GET, 13-byte body (wrk -t1 -c64)", results["plain"]))
    if "policy" in results:
        out.append(table_rr("2. Full policy set: rate zone (huge limit), CORS, security headers, access log file, prefix strip",
                            results["policy"]))
    if "auth" in results:
        out.append(table_rr("3. Auth hook on every request (nginx auth_request vs airgate authHook, no cache)",
                            results["auth"]))
    if "tls" in results:
        out.append(table_rr("4. TLS + HTTP/2 (h2load -c16 -m32; latency: 32 streams over 4 h2 connections)", results["tls"],
                            note="Direct is the backend's own TLS listener (rustls, h2)."))
    if "sse" in results:
        r = results["sse"]
        out += [f"### 5. SSE: {r['direct']['events']} events 10 ms apart, delay from backend write to client read", "",
                "| target | p50 ms | p99 ms | added p50 ms | added p99 ms | proxy peak RSS MiB |",
                "|---|---:|---:|---:|---:|---:|"]
        for t in ("direct", "nginx", "airgate"):
            x = r[t]
            out.append(f"| {t} | {f(x['p50'], 3)} | {f(x['p99'], 3)} | {f(x.get('added_p50'), 3)} | {f(x.get('added_p99'), 3)} | {f(x.get('rss'), 1)} |")
        if len(r["airgate"].get("p99_rounds") or []) > 1:
            out += ["", f"Median of {len(r['airgate']['p99_rounds'])} rounds, one stream per target in turn. "
                    "p99 ms per round: " + "; ".join(
                        f"{t} {', '.join(f'{x:.3f}' for x in r[t]['p99_rounds'])}" for t in ("direct", "nginx", "airgate"))
                    + "."]
        out.append("")
    if "bulk" in results:
        r = results["bulk"]
        out += [f"### 6. Bulk: {r['size_mb']:.0f} MiB download and upload (curl)", "",
                "| target | download MB/s | upload MB/s | proxy CPU ms/GB | proxy RSS before MiB | proxy peak RSS MiB | peak RSS growth MiB |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for t in ("direct", "nginx", "airgate"):
            x = r[t]
            if x.get("rss") is not None and x.get("rss_before") is not None:
                x["rss_growth"] = x["rss"] - x["rss_before"]
            out.append(f"| {t} | {f(x['down_mb_s'])} | {f(x['up_mb_s'])} | {f(x.get('cpu_ms_per_gb'), 1)} | "
                       f"{f(x.get('rss_before'), 1)} | {f(x.get('rss'), 1)} | {f(x.get('rss_growth'), 1)} |")
        for base in ("nginx", "direct"):
            # No ratio of growths: nginx's can be zero (its peak is reached at start-up).
            cells = [ratio(r["airgate"].get(k), r[base].get(k))
                     for k in ("down_mb_s", "up_mb_s", "cpu_ms_per_gb", "rss_before", "rss")] + ["—"]
            out.append(f"| **airgate / {base}** | " + " | ".join(cells) + " |")
        out.append("")
    if "scale" in results:
        r = results["scale"]
        big = r["big"]
        out += [f"### 7. Scale: 10 vs {big:,} routes (half Ingress, half AIRoute; wrk cycling over all prefixes)", "",
                "| routes | airgate req/s | nginx req/s | airgate CPU µs/req | nginx CPU µs/req | airgate first build ms | airgate rebuild ms | file change → route answers ms | airgate startup s | nginx startup s | airgate RSS MiB | nginx RSS MiB |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in (10, big):
            x = r[n]
            out.append(f"| {n:,} | {f(x['rps'])} | {f(x['nginx_rps'])} | {f(x['cpu_us'], 1)} | {f(x['nginx_cpu_us'], 1)} | {f(x['first_build_ms'], 1)} | {f(x['rebuild_ms'], 1)} | {f(x['change_to_route_ms'], 0)} | {f(x['startup_s'], 2)} | {f(x['nginx_startup_s'], 2)} | {f(x['rss'], 1)} | {f(x['nginx_rss'], 1)} |")
        out += ["", f"airgate req/s at {big:,} routes / at 10 routes: {ratio(r[big]['rps'], r[10]['rps'])}; "
                f"nginx: {ratio(r[big]['nginx_rps'], r[10]['nginx_rps'])}. Rebuild time is the mean of "
                "`airgate_config_reload_duration_seconds` (translate + publish) for the reload the change caused; "
                "the change-to-route time also includes the file watcher's debounce. Each proxy gets a "
                f"{SCALE_WARMUP_S}s pass over every prefix first (first-use state, such as a route's metrics, "
                f"is built then). Req/s and CPU are the median of {r['rounds']} round{'s' * (r['rounds'] != 1)} of {r['round_secs']}s: "
                "the four proxies run side by side and are loaded in turn, each round, so a slow spell of the "
                "machine hits them alike. Rounds, airgate at 10 / at "
                f"{big:,} routes: {rounds_text(r[10].get('rps_rounds'))} / {rounds_text(r[big].get('rps_rounds'))}; "
                f"nginx: {rounds_text(r[10].get('nginx_rps_rounds'))} / {rounds_text(r[big].get('nginx_rps_rounds'))}.", ""]
    if "zone" in results:
        r = results["zone"]
        a, n = r["airgate"], r["nginx"]
        out += [f"### 8. Rate-zone memory: {r['keys']:,} distinct keys (header key)", "",
                "| proxy | requests sent | keys tracked | RSS before MiB | RSS after MiB | bytes per key (RSS delta / keys) |",
                "|---|---:|---:|---:|---:|---:|",
                f"| airgate | {a['sent']:,} | {f(a['tracked'])} | {f(a['rss_before'], 1)} | {f(a['rss_after'], 1)} | {f(a['bytes_per_key'])} |",
                f"| nginx | {n['sent']:,} | (not exposed) | {f(n['rss_before'], 1)} | {f(n['rss_after'], 1)} | {f(n['bytes_per_key'])} |",
                "", "Each zone is sized to hold 100,000 keys: airgate `size: 6Mi` (48 bytes per key by "
                "construction, `BYTES_PER_KEY`: 131,072 keys, allocated up front, pages committed as "
                "they are touched), nginx `zone=keys:16m` (nginx documents 128 bytes per state on "
                "64-bit). With fewer keys than the zone holds, airgate's hash index is touched all "
                "over and RSS per key overstates the cost; nginx's slab allocator touches pages in "
                "order. airgate runs with `MIMALLOC_ALLOW_THP=0` in this scenario only: with "
                "transparent huge pages its heap is committed 2 MiB at a time, the zone is resident "
                "before the first key, and RSS growth would not measure a key.", ""]
    for k, v in results.get("errors", {}).items():
        out += [f"**{k} failed:** `{v}`", ""]
    return "\n".join(out)


def git_commit(repo):
    r = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "src", "Cargo.toml"],
                           capture_output=True, text=True).stdout.strip()
    return (r.stdout.strip() or "unknown") + (" (+local changes)" if dirty else "")


def meta_info(env, args):
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def ver(cmd):
        r = subprocess.run(cmd, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"

    tools = [ver(["wrk", "-v"]).split(" [")[0], ver(["h2load", "--version"]), ver(["curl", "--version"]).split(" (")[0]]
    tools.append("fixed-rate latency: bench_backend load (wrk2-style, coordinated-omission corrected)")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "bash bench/run.sh" + (" --smoke" if args.smoke else "") + (f" --only {args.only}" if args.only else ""),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "commit": git_commit(args.repo),
        "nginx": ver(["nginx", "-v"]).replace("nginx version: ", ""),
        "tools": ", ".join(tools),
    }


SCENARIOS = [
    ("plain", scenario_plain),
    ("policy", scenario_policy),
    ("auth", scenario_auth),
    ("tls", scenario_tls_h2),
    ("sse", scenario_sse),
    ("bulk", scenario_bulk),
    ("scale", scenario_scale),
    ("zone", scenario_zone),
]


def check_numbers(results):
    """The smoke contract: every scenario ran and produced non-zero numbers."""
    problems = []
    for name, _ in SCENARIOS:
        r = results.get(name)
        if r is None:
            problems.append(f"{name}: no result")
            continue
        if name in ("plain", "policy", "auth", "tls"):
            for t in ("direct", "nginx", "airgate"):
                if not r[t]["rps"] > 0:
                    problems.append(f"{name}/{t}: zero req/s")
                if not (r[t]["lat"] and r[t]["lat"]["p50"] > 0):
                    problems.append(f"{name}/{t}: no latency")
            for t in ("nginx", "airgate"):
                if not r[t]["rss"] > 0 or not r[t]["cpu_us"] > 0:
                    problems.append(f"{name}/{t}: no CPU or RSS reading")
        elif name == "sse":
            for t in ("direct", "nginx", "airgate"):
                if not r[t]["p50"] > 0:
                    problems.append(f"sse/{t}: no delay measured")
        elif name == "bulk":
            for t in ("direct", "nginx", "airgate"):
                if not (r[t]["down_mb_s"] > 0 and r[t]["up_mb_s"] > 0):
                    problems.append(f"bulk/{t}: no throughput")
        elif name == "scale":
            for n in (10, r["big"]):
                if not (r[n]["rps"] > 0 and r[n]["nginx_rps"] > 0 and r[n]["rebuild_ms"] > 0):
                    problems.append(f"scale/{n}: missing numbers {r[n]}")
        elif name == "zone":
            if not (r["airgate"]["tracked"] or 0) > 0:
                problems.append("zone: airgate tracked no keys")
            if not r["airgate"]["bytes_per_key"] > 0:
                problems.append("zone: airgate RSS did not grow")
    return problems


def main():
    global LOADGEN
    ap = argparse.ArgumentParser()
    ap.add_argument("--airgate", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--only", help="comma-separated scenario names: " + ",".join(n for n, _ in SCENARIOS))
    ap.add_argument("--out", help="write the markdown report here")
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--merge", help="start from the raw results of an earlier run (re-run a scenario with --only)")
    args = ap.parse_args()
    LOADGEN = args.backend

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    work = tempfile.mkdtemp(prefix="airgate-bench-")
    os.chmod(work, 0o755)
    env = Env(work, args.airgate, args.backend, args.smoke)
    results, errors = {}, {}
    if args.merge:
        with open(args.merge) as fh:
            results = json.load(fh)
        results.pop("errors", None)
        if "scale" in results:  # JSON turned the route counts into strings
            results["scale"] = {(int(k) if k.isdigit() else k): v for k, v in results["scale"].items()}
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", env.key, "-out", env.cert, "-days", "2", "-subj", f"/CN={TLS_HOST}",
                        "-addext", f"subjectAltName=DNS:{TLS_HOST}",
                        "-addext", "basicConstraints=critical,CA:FALSE", "-addext", "keyUsage=digitalSignature",
                        "-addext", "extendedKeyUsage=serverAuth"], check=True, capture_output=True)
        os.chmod(env.key, 0o644)
        be_log = os.path.join(work, "backend.log")
        env.backend = spawn([env.backend_bin, "--http", f"{HOST}:0", "--https", f"{HOST}:0",
                             "--cert", env.cert, "--key", env.key], LOAD_CPU, be_log, stdout=subprocess.PIPE)
        for _ in range(2):
            line = env.backend.stdout.readline().decode().strip()
            k, _, v = line.partition("=")
            if k == "http":
                env.backend_port = int(v)
            elif k == "https":
                env.backend_tls_port = int(v)
        if not env.backend_port or not env.backend_tls_port:
            raise RuntimeError(f"backend did not report its ports; see {be_log}")
        wait_for(f"http://{HOST}:{env.backend_port}/hello", env.backend, "backend")
        wanted = set(args.only.split(",")) if args.only else None
        for name, fn in SCENARIOS:
            if wanted and name not in wanted:
                continue
            log(f"scenario {name}")
            try:
                results[name] = fn(env)
            except Exception as e:  # one broken scenario must not hide the others' numbers
                errors[name] = f"{type(e).__name__}: {e}"
                log(f"scenario {name} FAILED: {errors[name]}")
        results["errors"] = errors
        md = report(env, results, meta_info(env, args))
        print(md)
        if args.out:
            with open(args.out, "w") as fh:
                fh.write(md)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=1, default=str)
        problems = [f"{k}: {v}" for k, v in errors.items()]
        if not args.only or args.merge:
            problems += check_numbers(results)
        if problems:
            log("PROBLEMS:\n  " + "\n  ".join(problems))
            log(f"logs kept in {work}")
            return 1
        shutil.rmtree(work, ignore_errors=True)
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
