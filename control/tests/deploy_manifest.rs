//! `deploy/dpdk-kube-proxy.yaml`: every document is well-formed, the RBAC
//! rules are the ones the proxy needs (and no more), the ConfigMap's
//! KubeProxyConfiguration passes this crate's parser, and the DaemonSet
//! wires the config, node name, probes and DPDK resources together.
use control::config::Config;
use serde::Deserialize;
use serde_yaml::Value;

fn manifest() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/dpdk-kube-proxy.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn doc<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let mut found = docs.iter().filter(|d| d["kind"] == kind);
    let d = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "two {kind}s");
    d
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(str_of)
        .collect()
}

#[test]
fn documents_are_well_formed() {
    let docs = manifest();
    let kinds: Vec<&str> = docs.iter().map(|d| str_of(&d["kind"])).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet"
        ]
    );
    for d in &docs {
        assert!(
            d["apiVersion"].as_str().is_some_and(|v| !v.is_empty()),
            "{d:?}"
        );
        assert_eq!(d["metadata"]["name"], "dpdk-kube-proxy", "{d:?}");
        if !str_of(&d["kind"]).starts_with("ClusterRole") {
            assert_eq!(d["metadata"]["namespace"], "kube-system", "{d:?}");
        }
    }
}

/// True when a rule grants `verb` on `resource` of API group `group`.
fn allows(rules: &[Value], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        strs(&r["apiGroups"]).contains(&group)
            && strs(&r["resources"]).contains(&resource)
            && strs(&r["verbs"]).contains(&verb)
    })
}

#[test]
fn rbac_grants_what_the_proxy_needs_and_no_more() {
    let docs = manifest();
    let rules = doc(&docs, "ClusterRole")["rules"]
        .as_sequence()
        .unwrap()
        .clone();
    let read = [
        ("", "services"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
    ];
    let write = [("", "events"), ("events.k8s.io", "events")];
    for (g, r) in read {
        for v in ["get", "list", "watch"] {
            assert!(allows(&rules, g, r, v), "{v} {g}/{r}");
        }
        for v in ["create", "update", "patch", "delete"] {
            assert!(!allows(&rules, g, r, v), "{v} {g}/{r} must not be granted");
        }
    }
    for (g, r) in write {
        for v in ["create", "patch", "update"] {
            assert!(allows(&rules, g, r, v), "{v} {g}/{r}");
        }
        assert!(!allows(&rules, g, r, "delete"), "delete {g}/{r}");
    }
    // Nothing else: no wildcards, no other resources (secrets, pods, ...).
    for r in &rules {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(!strs(&r[field]).contains(&"*"), "{r:?}");
        }
        for res in strs(&r["resources"]) {
            assert!(
                ["services", "nodes", "endpointslices", "events"].contains(&res),
                "{res}"
            );
        }
    }
    let b = doc(&docs, "ClusterRoleBinding");
    assert_eq!(b["roleRef"]["kind"], "ClusterRole");
    assert_eq!(
        b["roleRef"]["name"],
        doc(&docs, "ClusterRole")["metadata"]["name"]
    );
    let sa = doc(&docs, "ServiceAccount");
    let subject = &b["subjects"][0];
    assert_eq!(subject["kind"], "ServiceAccount");
    assert_eq!(subject["name"], sa["metadata"]["name"]);
    assert_eq!(subject["namespace"], sa["metadata"]["namespace"]);
}

#[test]
fn config_map_holds_a_valid_kube_proxy_configuration() {
    let docs = manifest();
    let data = &doc(&docs, "ConfigMap")["data"];
    let text = str_of(&data["config.conf"]);
    assert!(text.contains("kind: KubeProxyConfiguration"));
    let c = Config::parse(text, "ConfigMap config.conf").unwrap_or_else(|e| panic!("{e}"));
    let k = &c.kubernetes;
    assert_eq!(
        k.kubeconfig.as_deref(),
        Some("/var/lib/dpdk-kube-proxy/kubeconfig.conf")
    );
    assert_eq!(
        k.healthz_bind_address,
        Some("0.0.0.0:10256".parse().unwrap())
    );
    assert_eq!(c.admin.bind.to_string(), "127.0.0.1:10249");
    assert_eq!(c.cluster_cidrs.len(), 2);
    assert_eq!(c.eal.lcores, "auto");
    assert!(!c.eal.no_huge, "hugepages in production");
    assert_eq!(
        c.nodeport_addresses().unwrap().len(),
        2,
        "primary: one per family"
    );
    c.table_spec().unwrap();
    // The node keeps its own traffic: an exception port (a TAP) paired
    // with the NIC, and a SNAT address per family for local-pod flows.
    let x = c.exception().expect("an exception port");
    assert!(c.eal.vdevs.iter().any(|v| v.starts_with("net_tap")));
    assert_eq!(c.ports[usize::from(x.kernel)].device, "net_tap0");
    assert!(x.snat_v4.is_some() && x.snat_v6.is_some(), "{x:?}");
    // The kubeconfig it names is in the same ConfigMap and uses the
    // ServiceAccount's token and CA.
    let kc: Value = serde_yaml::from_str(str_of(&data["kubeconfig.conf"])).unwrap();
    assert_eq!(kc["kind"], "Config");
    let user = &kc["users"][0]["user"];
    assert_eq!(
        user["tokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    let server = str_of(&kc["clusters"][0]["cluster"]["server"]);
    assert!(server.starts_with("https://198.18."), "{server}");
}

#[test]
fn daemonset_is_wired_like_kube_proxy_with_dpdk_needs() {
    let docs = manifest();
    let ds = doc(&docs, "DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    let selector = &ds["spec"]["selector"]["matchLabels"];
    let pod = &ds["spec"]["template"];
    assert_eq!(&pod["metadata"]["labels"], selector);
    let spec = &pod["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(
        spec["serviceAccountName"],
        doc(&docs, "ServiceAccount")["metadata"]["name"]
    );
    assert!(
        spec["tolerations"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "tolerates every taint"
    );
    let c = &spec["containers"][0];
    let cmd = strs(&c["command"]);
    assert!(cmd.contains(&"--hostname-override=$(NODE_NAME)"), "{cmd:?}");
    let config_path = cmd
        .iter()
        .find_map(|a| a.strip_prefix("--config="))
        .expect("--config");
    let env = c["env"].as_sequence().unwrap();
    let node = env
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");

    // Volumes: name -> mount path, and the volume's source.
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let mount = |name: &str| {
        str_of(
            &mounts
                .iter()
                .find(|m| m["name"] == name)
                .unwrap_or_else(|| panic!("no mount {name}"))["mountPath"],
        )
    };
    let volume = |name: &str| {
        spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    assert_eq!(
        format!("{}/config.conf", mount("config")),
        config_path,
        "--config is in the ConfigMap mount"
    );
    assert_eq!(volume("config")["configMap"]["name"], "dpdk-kube-proxy");
    assert_eq!(mount("hugepages"), "/dev/hugepages");
    assert_eq!(volume("hugepages")["emptyDir"]["medium"], "HugePages-2Mi");
    assert_eq!(mount("dpdk-runtime"), "/var/run/dpdk");
    assert!(volume("dpdk-runtime")["emptyDir"].is_mapping());
    assert!(
        mounts.iter().all(|m| m["name"] != "vfio"),
        "the NIC comes from a device plugin, not a hostPath"
    );
    for (name, path) in [("sys", "/sys"), ("lib-modules", "/lib/modules")] {
        assert_eq!(mount(name), path);
        assert_eq!(volume(name)["hostPath"]["path"], path);
    }
    // The exception port's TAP PMD opens /dev/net/tun.
    assert_eq!(mount("tun"), "/dev/net/tun");
    assert_eq!(volume("tun")["hostPath"]["path"], "/dev/net/tun");
    assert_eq!(volume("tun")["hostPath"]["type"], "CharDevice");

    // Guaranteed QoS with whole CPUs (static CPU manager) and hugepages.
    let res = &c["resources"];
    assert_eq!(
        res["requests"], res["limits"],
        "Guaranteed: requests == limits"
    );
    let cpu = str_of(&res["limits"]["cpu"]);
    assert!(
        cpu.parse::<u32>().is_ok_and(|n| n >= 2),
        "whole CPUs: {cpu}"
    );
    assert!(res["limits"]["hugepages-2Mi"].as_str().is_some());
    assert!(res["limits"]["memory"].as_str().is_some());

    // The NIC from a device plugin, in requests and limits alike.
    let nic = "intel.com/intel_sriov_dpdk";
    assert_eq!(res["limits"][nic], "1");

    // Least privilege: exactly the capabilities DPDK uses (the e2e
    // lifecycle test runs the proxy with this set).
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        strs(&sc["capabilities"]["add"]),
        ["IPC_LOCK", "NET_RAW", "NET_ADMIN"]
    );

    // Probes on kube-proxy's healthz port, which the config binds.
    for (probe, path) in [
        ("startupProbe", "/livez"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/healthz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], 10256, "{probe}");
    }
}
