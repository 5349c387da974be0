#!/usr/bin/env python3
"""Control-plane scale benchmark driver (see scripts/bench-scale.sh).

  scale.py load   --env DIR/env --services N --endpoints E
      creates N ClusterIP Services with E endpoints each (one EndpointSlice per
      Service, as the EndpointSlice controller writes them) through the API.
  scale.py wait   --metrics URL --entries N
      waits until the proxy's table holds N Service entries; prints the time.
  scale.py churn  --env DIR/env --metrics URL --changes K
      K times: update one EndpointSlice (a new endpoint address, the
      last-change-trigger-time annotation set to now) and time until every
      worker uses a newer table; prints p50/p99 (JSON).

Addresses: ClusterIPs come from the API server's 198.18.128.0/17; endpoints
are 198.19.x.y. Only the standard library.
"""
import argparse
import http.client
import json
import queue
import ssl
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone


def read_env(path):
    env = {}
    for line in open(path):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            env[k] = v.strip("'\"")
    return env


class Api:
    def __init__(self, env):
        self.host, self.port = env["DKP_K8S_SERVER"].split("//")[1].rsplit(":", 1)
        self.token = env["DKP_K8S_TOKEN"]
        self.ctx = ssl.create_default_context(cafile=env["DKP_K8S_CA"])
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = http.client.HTTPSConnection(self.host, int(self.port), context=self.ctx, timeout=30)
            self.local.c = c
        return c

    def req(self, method, path, body=None, ctype="application/json"):
        for attempt in range(5):
            try:
                c = self.conn()
                c.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers={"Authorization": f"Bearer {self.token}", "Content-Type": ctype})
                r = c.getresponse()
                data = r.read()
                if r.status == 429 or r.status >= 500:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                if r.status >= 300:
                    raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
                return json.loads(data) if data else None
            except (http.client.HTTPException, OSError):
                self.local.c = None
                time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"{method} {path}: gave up")


def now_rfc3339():
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def slice_obj(i, endpoints, gen=0):
    # Service i's endpoints: 198.19.(i // 25).((i % 25) * 10 + j) — unique per Service.
    eps = [{"addresses": [f"198.19.{(i // 25) % 256}.{(i % 25) * 10 + j}"],
            "nodeName": "node-a" if j == 0 else "node-b",
            "conditions": {"ready": True}} for j in range(endpoints)]
    if gen:
        eps[-1]["addresses"] = [f"198.18.{64 + (gen // 250) % 64}.{gen % 250 + 1}"]
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"s{i}-1",
                     "labels": {"kubernetes.io/service-name": f"s{i}",
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                     "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": now_rfc3339()}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }


def load(a):
    api = Api(read_env(a.env))
    q = queue.Queue()
    for i in range(a.services):
        q.put(i)
    errors = []
    t0 = time.monotonic()

    def work():
        while True:
            try:
                i = q.get_nowait()
            except queue.Empty:
                return
            try:
                api.req("POST", "/api/v1/namespaces/default/services", {
                    "metadata": {"name": f"s{i}"},
                    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
                api.req("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                        slice_obj(i, a.endpoints))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(str(e))

    threads = [threading.Thread(target=work) for _ in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = {"services": a.services, "endpoints": a.services * a.endpoints,
           "seconds": round(time.monotonic() - t0, 1), "errors": len(errors), "first_errors": errors[:3]}
    print(json.dumps(out), flush=True)
    return 1 if errors else 0


def metrics(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    m = {"versions": []}
    for line in text.splitlines():
        if line.startswith("dpdk_kube_proxy_worker_table_version{"):
            m["versions"].append(int(float(line.rsplit(" ", 1)[1])))
        elif line.startswith("dpdk_kube_proxy_services "):
            m["entries"] = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("kubeproxy_network_programming_duration_seconds_sum"):
            m["np_sum"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("kubeproxy_network_programming_duration_seconds_count"):
            m["np_count"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("kubeproxy_sync_proxy_rules_duration_seconds_sum"):
            m["sync_sum"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("kubeproxy_sync_proxy_rules_duration_seconds_count"):
            m["sync_count"] = float(line.rsplit(" ", 1)[1])
    return m


def wait(a):
    t0 = time.monotonic()
    while True:
        try:
            m = metrics(a.metrics)
            if m.get("entries", 0) >= a.entries and m["versions"] and len(set(m["versions"])) == 1:
                print(json.dumps({"seconds": round(time.monotonic() - t0, 2), "entries": m["entries"]}))
                return 0
        except OSError:
            pass
        if time.monotonic() - t0 > a.timeout:
            print(json.dumps({"error": "timeout", "last": m if "m" in dir() else None}))
            return 1
        time.sleep(0.05)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def churn(a):
    api = Api(read_env(a.env))
    lat = []
    before = metrics(a.metrics)
    for k in range(1, a.changes + 1):
        i = (k * 7919) % a.services
        v0 = min(metrics(a.metrics)["versions"])
        t0 = time.monotonic()
        api.req("PUT", f"/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/s{i}-1",
                slice_obj(i, a.endpoints, gen=k))
        while True:
            m = metrics(a.metrics)
            if m["versions"] and min(m["versions"]) > v0:
                break
            if time.monotonic() - t0 > 30:
                raise RuntimeError("no new table within 30 s")
            time.sleep(0.002)
        lat.append(time.monotonic() - t0)
        time.sleep(a.gap)
    after = metrics(a.metrics)
    np_n = after.get("np_count", 0) - before.get("np_count", 0)
    sync_n = after.get("sync_count", 0) - before.get("sync_count", 0)
    out = {
        "changes": a.changes,
        "p50_ms": round(pct(lat, 50) * 1000, 1), "p99_ms": round(pct(lat, 99) * 1000, 1),
        "max_ms": round(max(lat) * 1000, 1),
        "network_programming_mean_ms": round((after.get("np_sum", 0) - before.get("np_sum", 0)) / np_n * 1000, 1) if np_n else None,
        "sync_mean_ms": round((after.get("sync_sum", 0) - before.get("sync_sum", 0)) / sync_n * 1000, 1) if sync_n else None,
    }
    print(json.dumps(out), flush=True)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("load")
    l.add_argument("--env", required=True)
    l.add_argument("--services", type=int, default=10000)
    l.add_argument("--endpoints", type=int, default=10)
    l.add_argument("--threads", type=int, default=16)
    w = sub.add_parser("wait")
    w.add_argument("--metrics", required=True)
    w.add_argument("--entries", type=int, required=True)
    w.add_argument("--timeout", type=float, default=600)
    c = sub.add_parser("churn")
    c.add_argument("--env", required=True)
    c.add_argument("--metrics", required=True)
    c.add_argument("--services", type=int, default=10000)
    c.add_argument("--endpoints", type=int, default=10)
    c.add_argument("--changes", type=int, default=100)
    c.add_argument("--gap", type=float, default=1.2,
                   help="pause between changes; above --min-sync-period so each change is programmed on arrival")
    a = p.parse_args()
    return {"load": load, "wait": wait, "churn": churn}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
