//! The configuration examples of README.md parse with the proxy's parser.
use control::config::Config;

/// The YAML code blocks of the README that follow `heading`'s line.
fn yaml_block_after(heading: &str) -> String {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let rest = &text[text.find(heading).unwrap_or_else(|| panic!("{heading}"))..];
    let start = rest.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let len = rest[start..].find("```").expect("block end");
    rest[start..start + len].to_string()
}

#[test]
fn native_example_parses() {
    let c = Config::parse(&yaml_block_after("## Configuration"), "README").unwrap();
    assert_eq!(c.services.len(), 1);
    assert_eq!(c.kubernetes.hostname_override.as_deref(), Some("node-a"));
    assert_eq!(
        c.nodeport_addresses().unwrap(),
        ["198.18.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn kube_proxy_configuration_example_parses() {
    let c = Config::parse(&yaml_block_after("## KubeProxyConfiguration"), "README").unwrap();
    assert_eq!(c.eal.lcores, "auto");
    assert_eq!(c.cluster_cidrs.len(), 2);
    // tcpCloseWaitTimeout (1h there) is checked, not applied.
    assert_eq!(
        c.timeouts.tcp_fin,
        control::config::TimeoutsConfig::default().tcp_fin
    );
    assert_eq!(c.timeouts.udp, std::time::Duration::from_secs(30));
    assert_eq!(c.kubernetes.oom_score_adj, Some(-999));
}

#[test]
fn exception_port_example_parses() {
    let c = Config::parse(
        &yaml_block_after("## Node integration (exception path)"),
        "README",
    )
    .unwrap();
    let x = c.exception().expect("an exception path");
    assert_eq!((x.uplink, x.kernel), (0, 1));
}
