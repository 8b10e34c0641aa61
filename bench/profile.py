#!/usr/bin/env python3
"""Run airgate under callgrind for a fixed number of requests; see profile.sh."""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

import harness as h

ORIGIN_LUA = """
request = function()
  return wrk.format(nil, nil, {["Origin"] = "https://app.example.com"})
end
"""

AUTH_LUA = """
request = function()
  return wrk.format(nil, nil, {["X-API-Key"] = "k"})
end
"""


def self_costs(path, requests, total, top=30):
    """Instructions per request spent in each function itself, most expensive first."""
    costs = {}
    fn, after_call = None, False
    with open(path) as f:
        for line in f:
            if line.startswith("fn="):
                fn = line[3:].strip()
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the callee's inclusive cost
            elif line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                if len(fields) >= 2:
                    if not after_call:
                        costs[fn] = costs.get(fn, 0) + int(fields[1])
                    after_call = False
    rows = sorted(costs.items(), key=lambda kv: -kv[1])[:top]
    lines = [f"{'instr/req':>10} {'share':>6}  function"]
    for name, cost in rows:
        lines.append(f"{cost / max(1, requests):10.0f} {100 * cost / max(1, total):5.1f}%  {name[:140]}")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--airgate", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--scenario", choices=["plain", "policy", "auth", "scale"], default="plain")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--out", required=True)
    ap.add_argument("--warmup", type=int, help="seconds of load before counting (default 2; scale 20)")
    ap.add_argument("--cache-sim", action="store_true", help="also simulate caches (D1/LL misses)")
    ap.add_argument("--ll", help="simulated last-level cache as size,assoc,line (e.g. 2097152,16,64 for "
                    "this machine's per-core L2); default: the machine's own last level")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="airgate-profile-")
    env = h.Env(work, a.airgate, a.backend, smoke=True)
    try:
        be = h.spawn([a.backend, "--http", f"{h.HOST}:0"], h.LOAD_CPU, os.path.join(work, "backend.log"),
                     stdout=subprocess.PIPE)
        env.backend_port = int(be.stdout.readline().decode().strip().split("=")[1])
        cfg = os.path.join(work, "cfg")
        script = os.path.join(work, "load.lua")
        with open(script, "w") as f:
            f.write(ORIGIN_LUA)
        docs = None
        if a.scenario == "plain":
            path, docs, extra = "/plain/hello", h.airroute("plain", h.ag_route(env, "/plain/")), []
        elif a.scenario == "auth":
            # Scenario 3: the auth hook on every request.
            path, extra = "/authed/hello", []
            spec = h.render("airgate-auth-spec.yaml", HOOK=f"http://{h.HOST}:{env.backend_port}/auth")
            docs = h.airroute("authed", h.ag_route(env, "/authed/"), extra_spec=spec)
            with open(script, "w") as f:
                f.write(AUTH_LUA)
        elif a.scenario == "scale":
            # Scenario 7's 10,000 routes, wrk cycling over every prefix.
            h.scale_config(env, cfg, 10000)
            with open(script, "w") as f:
                f.write(h.ROUTES_LUA.replace("@@N@@", "10000"))
            path, extra = "/air-0/hello", []
        else:
            path = "/policy/hello"
            route = h.ag_route(env, "/policy/", strip=True,
                               extra="rateLimit: {zone: big, burst: 1000000, nodelay: true}")
            docs = h.airroute("policy", route, extra_spec=h.render("airgate-policy-spec.yaml", ORIGIN=h.ORIGIN))
            extra = ["--access-log", os.path.join(work, "access.log")]
        if docs is not None:
            os.makedirs(cfg)
            with open(os.path.join(cfg, "routes.yaml"), "w") as f:
                f.write(docs)
        http, https, admin = h.free_port(), h.free_port(), h.free_port()
        for old in glob.glob(os.path.join(a.out, "callgrind.*")):
            os.unlink(old)
        os.makedirs(a.out, exist_ok=True)
        cmd = ["valgrind", "--tool=callgrind", "--compress-strings=no", "--compress-pos=no", f"--callgrind-out-file={a.out}/callgrind.%p",
               *(["--cache-sim=yes"] if a.cache_sim or a.ll else []),
               *([f"--LL={a.ll}"] if a.ll else []),
               a.airgate, "serve", "--config", cfg, "--http-addr", f"{h.HOST}:{http}",
               "--https-addr", f"{h.HOST}:{https}", "--admin-addr", f"{h.HOST}:{admin}",
               "--worker-threads", "1", "--shutdown-grace", "1s"]
        if "--access-log" not in extra:
            cmd += ["--access-log", "off"]
        ag = h.spawn(cmd + extra, h.PROXY_CPU, os.path.join(work, "airgate.log"))
        h.wait_for(f"http://{h.HOST}:{http}{path}", ag, "airgate under callgrind", timeout=180)
        # Warm up (connections, pools, lazily built state), then count only the
        # measured requests: zero the counters, load, dump.
        warmup = a.warmup or (2 if docs else 20)
        h.wrk(f"http://{h.HOST}:{http}{path}", warmup, conns=8, script=script)
        subprocess.run(["callgrind_control", "--zero", str(ag.pid)], check=True, capture_output=True)
        r = h.wrk(f"http://{h.HOST}:{http}{path}", a.seconds, conns=8, script=script)
        subprocess.run(["callgrind_control", "--dump=measured", str(ag.pid)], check=True, capture_output=True)
        h.stop(ag)
        files = sorted(glob.glob(os.path.join(a.out, "callgrind.*.1")))
        if not files:
            raise SystemExit("callgrind wrote no profile of the measured requests")
        total, events, sums = 0, [], []
        with open(files[0]) as f:
            for line in f:
                if line.startswith("events:"):
                    events = line.split()[1:]
                elif line.startswith("summary:") or line.startswith("totals:"):
                    sums = [int(v) for v in line.split()[1:]]
                    total = sums[0]
        print(f"{r['requests']} requests through airgate under callgrind: "
              f"{total:,} instructions, {total / max(1, r['requests']):,.0f} per request", file=sys.stderr)
        if len(events) > 1:
            # With --cache-sim: reads, writes and misses per request (D1 = level 1 data,
            # LL = the simulated last level, IL/I1 = instructions).
            print("per request: " + ", ".join(f"{e} {v / max(1, r['requests']):,.1f}"
                                              for e, v in zip(events[1:], sums[1:])), file=sys.stderr)
        # callgrind_annotate misreads a dump taken with callgrind_control (it puts every
        # cost under `clone`), so the self cost per function is summed here.
        table = self_costs(files[0], r["requests"], total)
        with open(os.path.join(a.out, f"self-{a.scenario}.txt"), "w") as f:
            f.write(table)
        print(table)
    finally:
        h.cleanup()


if __name__ == "__main__":
    main()
