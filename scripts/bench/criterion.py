#!/usr/bin/env python3
"""Collects criterion's estimates into one JSON file.

  criterion.py --criterion-dir target/criterion --since EPOCH --out bench-results/criterion.json

Reads every <bench>/new/estimates.json (and benchmark.json for the name)
under --criterion-dir written at or after --since (so results of benches
that did not run this time are left out). Times are nanoseconds per
iteration; `cycles` converts the median with the TSC rate of the
environment. Standard library only.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benv  # noqa: E402


def point(est, key):
    v = est.get(key)
    if not v:
        return None, None
    ci = v.get("confidence_interval") or {}
    return v.get("point_estimate"), [ci.get("lower_bound"), ci.get("upper_bound")]


def collect(root, since):
    benches = []
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        path = os.path.join(dirpath, "estimates.json")
        mtime = os.path.getmtime(path)
        if mtime < since:
            continue
        with open(path) as f:
            est = json.load(f)
        meta = {}
        if "benchmark.json" in files:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                meta = json.load(f)
        rel = os.path.relpath(os.path.dirname(dirpath), root)
        mean, mean_ci = point(est, "mean")
        median, median_ci = point(est, "median")
        std, _ = point(est, "std_dev")
        slope, _ = point(est, "slope")
        benches.append({
            "id": meta.get("full_id") or rel,
            "group": meta.get("group_id"),
            "function": meta.get("function_id"),
            "mean_ns": mean, "mean_ci_ns": mean_ci,
            "median_ns": median, "median_ci_ns": median_ci,
            "std_dev_ns": std, "slope_ns": slope,
            "throughput": meta.get("throughput"),
            "written": int(mtime),
        })
    benches.sort(key=lambda b: b["id"])
    return benches


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--criterion-dir", required=True)
    ap.add_argument("--since", type=float, default=0.0, help="only estimates written at/after this epoch time")
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="", help="the cargo bench command line (recorded)")
    ap.add_argument("--pinning", default="", help="how the bench was pinned (recorded)")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    benches = collect(a.criterion_dir, a.since)
    if not benches:
        sys.exit(f"criterion.py: no estimates under {a.criterion_dir} written since {a.since}")
    env = benv.collect(pinning=a.pinning or None, quick=a.quick, command=a.command or None,
                       rustc=benv.sh("rustc --version") or None)
    ghz = env["tsc_hz"] / 1e9 if env.get("tsc_hz") else None
    for b in benches:
        b["cycles"] = round(b["median_ns"] * ghz, 1) if ghz and b["median_ns"] is not None else None
    out = {"benchmark": "criterion", "schema": 1, "env": env, "benches": benches,
           "note": "times are per iteration (one packet for the pipeline group); cycles = median x TSC rate"}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    for b in benches:
        print(f"{b['id']:<48}{b['median_ns']:>12.1f} ns" + (f"{b['cycles']:>10.0f} cycles" if b["cycles"] else ""))
    print(f"results: {a.out}")


if __name__ == "__main__":
    main()
