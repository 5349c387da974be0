#!/usr/bin/env python3
"""REST smoke test for the environment made by `scripts/k8s-test-env.sh up DIR`.

Standard library only. Reads DIR/env (KEY=VALUE lines) for the server URL, CA
file and bearer token.

  --phase create         create a namespace, Services and an EndpointSlice, list
                         them, and watch an EndpointSlice update
  --phase after-restart  check that what `create` made is still served (run after
                         `restart-apiserver`), then watch once more

Prints one line per check and a closing 'N passed, N failed' line; exits 1 on
any failure.
"""
import argparse
import ipaddress
import json
import ssl
import sys
import time
import urllib.error
import urllib.request

NS = "dkp-selftest"
SVC = "echo"
SLICE = "echo-abc12"


class Client:
    def __init__(self, env, client_cert=False):
        self.env = env
        self.server = env["DKP_K8S_SERVER"]
        self.token = None if client_cert else env["DKP_K8S_TOKEN"]
        self.ctx = ssl.create_default_context(cafile=env["DKP_K8S_CA"])
        if client_cert:
            self.ctx.load_cert_chain(env["DKP_K8S_CLIENT_CERT"], env["DKP_K8S_CLIENT_KEY"])

    def _auth(self, r):
        if self.token:
            r.add_header("Authorization", "Bearer " + self.token)

    def req(self, method, path, body=None, ctype="application/json", timeout=15):
        data = None if body is None else json.dumps(body).encode()
        r = urllib.request.Request(self.server + path, data=data, method=method)
        self._auth(r)
        r.add_header("Accept", "application/json")
        if data is not None:
            r.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(r, context=self.ctx, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def stream(self, path, timeout=15):
        r = urllib.request.Request(self.server + path)
        self._auth(r)
        return urllib.request.urlopen(r, context=self.ctx, timeout=timeout)


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"  ok    {name}" + (f"  ({detail})" if detail else ""))
        else:
            self.failed += 1
            print(f"  FAIL  {name}" + (f"  ({detail})" if detail else ""))
        return ok


def service(name, cluster_ip=None):
    spec = {
        "type": "ClusterIP",
        "selector": {"app": name},
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
    }
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def endpoint_slice(addresses):
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": SLICE,
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": SVC, "endpointslice.kubernetes.io/managed-by": "dkp-selftest"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [
            {"addresses": [a], "conditions": {"ready": True, "serving": True, "terminating": False}}
            for a in addresses
        ],
    }


def watch_for(c, ck, trigger, want_type, want_addrs, label):
    """Open a watch on the EndpointSlices of SVC from the current resourceVersion,
    run trigger(), and wait for a want_type event carrying want_addrs."""
    sel = "labelSelector=kubernetes.io%2Fservice-name%3D" + SVC
    code, lst = c.req("GET", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices?{sel}")
    if not ck.check(f"{label}: list endpointslices before watch", code == 200, f"HTTP {code}"):
        return
    rv = lst["metadata"]["resourceVersion"]
    t0 = time.monotonic()
    resp = c.stream(
        f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices?{sel}&watch=1"
        f"&resourceVersion={rv}&timeoutSeconds=10&allowWatchBookmarks=false",
        timeout=15,
    )
    trigger()
    got = None
    try:
        for line in resp:
            ev = json.loads(line)
            addrs = sorted(a for e in ev["object"].get("endpoints") or [] for a in e["addresses"])
            if ev["type"] == want_type and addrs == sorted(want_addrs):
                got = ev
                break
    except (TimeoutError, OSError):
        pass
    finally:
        resp.close()
    ck.check(
        f"{label}: watch delivered {want_type} {sorted(want_addrs)}",
        got is not None,
        f"{(time.monotonic() - t0) * 1000:.0f} ms",
    )


def phase_create(c, ck, cidr):
    code, v = c.req("GET", "/version")
    ck.check("GET /version", code == 200, v.get("gitVersion") if code == 200 else f"HTTP {code}")

    code, k = c.req("GET", "/api/v1/namespaces/default/services/kubernetes")
    kip = k.get("spec", {}).get("clusterIP") if code == 200 else None
    ck.check("default/kubernetes Service has the first IP of the range", kip == str(next(cidr.hosts())), f"clusterIP={kip}")

    code, _ = c.req("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    ck.check("create Namespace", code == 201, f"HTTP {code}")

    code, s = c.req("POST", f"/api/v1/namespaces/{NS}/services", service(SVC))
    ip = s.get("spec", {}).get("clusterIP") if code == 201 else None
    ck.check(
        "create Service, ClusterIP allocated inside the service range",
        ip is not None and ipaddress.ip_address(ip) in cidr,
        f"HTTP {code}, clusterIP={ip}",
    )

    fixed = str(cidr.network_address + cidr.num_addresses // 2 + 10)  # 198.18.192.10 for 198.18.128.0/17
    code, s = c.req("POST", f"/api/v1/namespaces/{NS}/services", service("fixed", fixed))
    ck.check("create Service with a chosen ClusterIP", code == 201 and s["spec"]["clusterIP"] == fixed, f"HTTP {code}, {fixed}")

    code, s = c.req("POST", f"/api/v1/namespaces/{NS}/services", service("outside", "198.19.0.10"))  # inside 198.18.0.0/15, outside the Service range
    ck.check("ClusterIP outside the range is rejected", code == 422, f"HTTP {code}")

    code, _ = c.req("POST", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices", endpoint_slice(["198.18.0.10"]))
    ck.check("create EndpointSlice (discovery.k8s.io/v1)", code == 201, f"HTTP {code}")

    code, lst = c.req("GET", f"/api/v1/namespaces/{NS}/services")
    names = sorted(i["metadata"]["name"] for i in lst.get("items", [])) if code == 200 else None
    ck.check("list Services", names == ["echo", "fixed"], f"{names}")

    code, lst = c.req(
        "GET", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{SVC}"
    )
    items = lst.get("items", []) if code == 200 else []
    ck.check(
        "list EndpointSlices by kubernetes.io/service-name",
        len(items) == 1 and items[0]["endpoints"][0]["addresses"] == ["198.18.0.10"],
        f"{len(items)} item(s)",
    )

    def update():
        code, cur = c.req("GET", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/{SLICE}")
        body = endpoint_slice(["198.18.0.10", "198.18.0.11"])
        body["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        code, _ = c.req("PUT", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/{SLICE}", body)
        ck.check("update EndpointSlice (PUT)", code == 200, f"HTTP {code}")

    watch_for(c, ck, update, "MODIFIED", ["198.18.0.10", "198.18.0.11"], "watch")

    who = whoami(c)
    ck.check("bearer token authenticates as dkp-admin", who == "dkp-admin", who)
    # the client-certificate credential of the kubeconfig works too
    cc = Client(c.env, client_cert=True)
    who = whoami(cc)
    ck.check("client certificate authenticates as dkp-admin", who == "dkp-admin", who)


def whoami(c):
    code, r = c.req(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return r.get("status", {}).get("userInfo", {}).get("username") if code == 201 else f"HTTP {code}"


def phase_after_restart(c, ck, cidr):
    code, v = c.req("GET", "/version")
    ck.check("after restart: GET /version", code == 200, v.get("gitVersion") if code == 200 else f"HTTP {code}")
    code, s = c.req("GET", f"/api/v1/namespaces/{NS}/services/{SVC}")
    ip = s.get("spec", {}).get("clusterIP") if code == 200 else None
    ck.check("after restart: Service still there", ip is not None and ipaddress.ip_address(ip) in cidr, f"clusterIP={ip}")
    code, es = c.req("GET", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/{SLICE}")
    addrs = sorted(a for e in es.get("endpoints", []) for a in e["addresses"]) if code == 200 else None
    ck.check("after restart: EndpointSlice still there", addrs == ["198.18.0.10", "198.18.0.11"], f"{addrs}")

    def delete():
        code, _ = c.req("DELETE", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/{SLICE}")
        ck.check("after restart: delete EndpointSlice", code == 200, f"HTTP {code}")

    watch_for(c, ck, delete, "DELETED", ["198.18.0.10", "198.18.0.11"], "after restart: watch")
    code, _ = c.req("DELETE", f"/api/v1/namespaces/{NS}")
    ck.check("after restart: delete Namespace", code == 200, f"HTTP {code}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", required=True, help="DIR/env written by k8s-test-env.sh up")
    ap.add_argument("--phase", choices=["create", "after-restart"], required=True)
    a = ap.parse_args()
    env = {}
    with open(a.env) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                env[k] = v
    c = Client(env)
    cidr = ipaddress.ip_network(env["DKP_K8S_SERVICE_CIDR"])
    ck = Checks()
    print(f"smoke ({a.phase}) against {c.server}:")
    try:
        (phase_create if a.phase == "create" else phase_after_restart)(c, ck, cidr)
    except Exception as e:  # a crash is a failed check, not a traceback-only exit
        ck.check("no unexpected exception", False, repr(e))
    print(f"smoke {a.phase}: {ck.passed} passed, {ck.failed} failed")
    return 0 if ck.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
