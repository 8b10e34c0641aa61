#!/usr/bin/env python3
"""Quick A/B of CPU time per request: nginx against airgate, or two airgate builds.

    python3 bench/compare.py SCENARIO [--airgate BIN] [--airgate2 BIN] [--rounds N] [--seconds S]

SCENARIO is one of plain, policy, auth, tls (scenarios 1-4 of bench/harness.py, same
configurations). The targets run side by side and are loaded in turn, round after
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


def cpu_split(proc):
    """(user, system) seconds of `proc` and its children."""
    user = system = 0
    for pid in H.pids_of(proc):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return user / H.CLK_TCK, system / H.CLK_TCK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["plain", "policy", "auth", "tls"])
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
        def targets_of(_env, _name, _direct, start_nginx, start_airgate, load_for, _latency):
            def start_second():
                env.airgate = a.airgate2
                try:
                    return start_airgate()
                finally:
                    env.airgate = a.airgate
            starts = {"airgate": start_airgate}
            if a.airgate2:
                starts["airgate2"] = start_second
            else:
                starts["nginx"] = start_nginx
            procs = {name: start() for name, start in starts.items()}
            try:
                for _ in range(a.rounds):
                    for name, proxy in procs.items():
                        load = load_for(proxy)
                        load(1)
                        u0, s0 = cpu_split(proxy.proc)
                        r = load(a.seconds)
                        u1, s1 = cpu_split(proxy.proc)
                        n = max(1, r["requests"])
                        rows.setdefault(name, []).append(
                            {"rps": r["rps"], "cpu": (u1 - u0 + s1 - s0) / n * 1e6,
                             "user": (u1 - u0) / n * 1e6, "sys": (s1 - s0) / n * 1e6})
            finally:
                for proxy in procs.values():
                    H.stop(proxy.proc)
            return {}

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
    if len(names) == 2:
        med = {n: (statistics.median(r["rps"] for r in rows[n]), statistics.median(r["cpu"] for r in rows[n]))
               for n in names}
        first, other = names
        print(f"{a.scenario:7} {first}/{other} (medians): req/s {med[first][0] / med[other][0]:.2f}, "
              f"CPU per request {med[first][1] / med[other][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
