#!/usr/bin/env python3
"""Quick A/B of CPU time per request: nginx against airgate, or two airgate builds.

    python3 bench/compare.py SCENARIO [--airgate BIN] [--airgate2 BIN] [--rounds N] [--seconds S]

SCENARIO is one of plain, policy, auth, tls (scenarios 1-4 of bench/harness.py, same
configurations) or scale (scenario 7's lookup: each proxy with 10 and with 10,000
routes, wrk cycling over all prefixes; reports the 10,000/10 ratio of each). The targets run side by side and are loaded in turn, round after
round, so a slow spell of a shared machine hits them alike; the report gives the best
and the median round of each. Saturation only (no fixed-rate latency), a few seconds a
round: for checking a change, not for bench/RESULTS.md. Binaries default to the ones
`bash bench/run.sh` builds.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

RELEASE = os.path.join(os.environ.get("AIRGATE_CACHE", os.path.expanduser("~/.cache/airgate")),
                       "bench-target", "release")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["plain", "policy", "auth", "tls", "scale"])
    ap.add_argument("--airgate", default=os.path.join(RELEASE, "airgate"))
    ap.add_argument("--airgate2", help="a second airgate build to compare (instead of nginx)")
    ap.add_argument("--backend", default=os.path.join(RELEASE, "examples", "bench_backend"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    a = ap.parse_args()
    H.LOADGEN = a.backend
    work = tempfile.mkdtemp(prefix="airgate-compare-")
    os.chmod(work, 0o755)
    env = H.Env(work, a.airgate, a.backend, smoke=False)
    rows = {}
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", env.key, "-out", env.cert, "-days", "2",
                        "-subj", f"/CN={H.TLS_HOST}", "-addext", f"subjectAltName=DNS:{H.TLS_HOST}"],
                       check=True, capture_output=True)
        os.chmod(env.key, 0o644)
        env.backend = H.spawn([a.backend, "--http", f"{H.HOST}:0", "--https", f"{H.HOST}:0",
                               "--cert", env.cert, "--key", env.key], H.LOAD_CPU,
                              os.path.join(work, "backend.log"), stdout=subprocess.PIPE)
        for _ in range(2):
            key, _, value = env.backend.stdout.readline().decode().strip().partition("=")
            if key == "http":
                env.backend_port = int(value)
            elif key == "https":
                env.backend_tls_port = int(value)
        H.wait_for(f"http://{H.HOST}:{env.backend_port}/hello", env.backend, "backend")

        # The scenario functions describe their targets through three_way(); take the
        # start and load functions from there instead of measuring three ways.
        def start_with(binary, start):
            """Run `start` with `binary` as the airgate the harness starts."""
            env.airgate = binary
            try:
                return start()
            finally:
                env.airgate = a.airgate

        def targets_of(_env, _name, _direct, start_nginx, start_airgate, load_for, _latency):
            starts = {"airgate": start_airgate}
            if a.airgate2:
                starts["airgate2"] = lambda: start_with(a.airgate2, start_airgate)
            else:
                starts["nginx"] = start_nginx
            interleave({name: (start, load_for) for name, start in starts.items()})
            return {}

        def interleave(targets):
            """Start every target, then load them in turn, round after round, recording
            CPU per request. `targets`: name -> (start(), load_for(proxy) -> load(secs))."""
            procs = {}
            try:
                for name, (start, load_for) in targets.items():
                    proxy = start()
                    procs[name] = (proxy, load_for(proxy))
                for name, samples in H.interleaved_rounds(procs, a.rounds, a.seconds).items():
                    rows.setdefault(name, []).extend(samples)
            finally:
                for proxy, _ in procs.values():
                    H.stop(proxy.proc)

        def scale_targets():
            """Each proxy at 10 and at 10,000 routes, loaded the way scenario 7 loads them."""
            starts = {}
            for n in (10, 10000):
                d = os.path.join(work, f"scale-{n}")
                H.scale_config(env, d, n)
                script = os.path.join(work, f"routes-{n}.lua")
                with open(script, "w") as f:
                    f.write(H.ROUTES_LUA.replace("@@N@@", str(n)))

                def ag(d=d, n=n, binary=a.airgate, label="scale"):
                    return start_with(binary, lambda: H.start_airgate(
                        env, f"{label}-{n}", config_dir=d, probe="/air-0/hello", timeout=300))

                def ng(n=n):
                    locs = "".join(H.ng_location(f"/ing-{i}/") + H.ng_location(f"/air-{i}/") for i in range(n // 2))
                    return H.start_nginx(env, f"scale-{n}", "", locs, probe="/air-0/hello")

                def load_for(proxy, script=script):
                    url = f"http://{H.HOST}:{proxy.http}/"
                    return lambda secs: H.wrk(url, secs, script=script)

                starts[f"airgate-{n}"] = (ag, load_for)
                if a.airgate2:
                    starts[f"airgate2-{n}"] = (lambda d=d, n=n: ag(d, n, a.airgate2, "scale2"), load_for)
                else:
                    starts[f"nginx-{n}"] = (ng, load_for)
            return starts

        if a.scenario == "scale":
            interleave(scale_targets())
        else:
            H.three_way = targets_of
            dict(H.SCENARIOS)[a.scenario](env)
    finally:
        H.cleanup()
    for name, rs in rows.items():
        best = min(rs, key=lambda r: r["cpu"])
        print(f"{a.scenario:7} {name:9} best {best['rps']:8.0f} r/s {best['cpu']:6.1f} µs/req "
              f"(user {best['user']:5.1f}, sys {best['sys']:5.1f})   median {statistics.median(r['rps'] for r in rs):8.0f} r/s "
              f"{statistics.median(r['cpu'] for r in rs):6.1f} µs/req")
    names = list(rows)
    if a.scenario == "scale":
        for proxy in ("airgate", "airgate2", "nginx"):
            if f"{proxy}-10" in rows and f"{proxy}-10000" in rows:
                few, many = (statistics.median(r["rps"] for r in rows[f"{proxy}-{n}"]) for n in (10, 10000))
                print(f"scale   {proxy}: req/s at 10,000 routes / at 10 (medians) {many / few:.2f}")
    elif len(names) == 2:
        med = {n: (statistics.median(r["rps"] for r in rows[n]), statistics.median(r["cpu"] for r in rows[n]))
               for n in names}
        first, other = names
        print(f"{a.scenario:7} {first}/{other} (medians): req/s {med[first][0] / med[other][0]:.2f}, "
              f"CPU per request {med[first][1] / med[other][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
