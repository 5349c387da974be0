//! dpdk-kube-proxy: a Kubernetes service proxy with a DPDK dataplane.
use anyhow::{bail, Context, Result};
use clap::Parser;
use control::admin::{self, AdminState};
use control::config::Config;
use control::healthcheck::HealthServers;
use control::k8s::NodeInfo;
use control::publisher::Publisher;
use control::watch::{self, Change, Model};
use dataplane::dpdk::Eal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Kubernetes service proxy with a DPDK poll-mode dataplane.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// YAML configuration file (EAL, ports, routes, services).
    #[arg(long)]
    config: Option<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// How often to look for changes to the configuration file.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    reload_interval: Duration,
    /// kubeconfig of the cluster to watch. Without it, the proxy watches the
    /// cluster only when it runs in a pod (in-cluster config); otherwise it
    /// serves the Services of the configuration file alone.
    #[arg(long)]
    kubeconfig: Option<String>,
    /// This node's name (default: $NODE_NAME, else the host name).
    #[arg(long)]
    hostname_override: Option<String>,
    /// Changes are coalesced: at most one table publication per period.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    min_sync_period: Duration,
    /// Every Service is rebuilt this often, whether it changed or not.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    sync_period: Duration,
    /// CIDRs of the node addresses NodePorts are served on (comma separated;
    /// default: every address of the dataplane's ports).
    #[arg(long, value_delimiter = ',')]
    nodeport_addresses: Vec<String>,
    /// Address of the `/healthz` + `/livez` server (kube-proxy's 10256).
    /// Default: 0.0.0.0:10256 when watching a cluster, off otherwise.
    #[arg(long)]
    healthz_bind_address: Option<std::net::SocketAddr>,
    /// Overrides `admin.bind`: `/metrics`, `/proxyMode`, `/debug/*`.
    #[arg(long)]
    metrics_bind_address: Option<std::net::SocketAddr>,
    /// Address the `healthCheckNodePort` servers listen on.
    #[arg(long, default_value = "0.0.0.0")]
    health_check_bind_address: std::net::IpAddr,
}

impl Cli {
    /// True when Services come from a Kubernetes API server.
    fn watches_cluster(&self) -> bool {
        self.kubeconfig.is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
    }

    fn node_name(&self) -> String {
        self.hostname_override
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok())
            .filter(|n| !n.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_lowercase())
            })
            .unwrap_or_default()
    }
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Ask a running proxy (its admin address) what it does, like `ipvsadm -Ln`.
    Inspect {
        /// The proxy's admin address.
        #[arg(long, default_value = "127.0.0.1:10249")]
        admin: String,
        #[command(subcommand)]
        what: Option<Inspect>,
    },
}

#[derive(clap::Subcommand, Debug)]
enum Inspect {
    /// List Services: frontends, backends, masquerade, affinity (default).
    Services,
    /// Which backend a new connection SRC -> DST would get, and why.
    Lookup {
        /// Client `IP:PORT` (`[IPv6]:PORT`).
        src: String,
        /// Destination `IP:PORT`.
        dst: String,
        /// `tcp`, `udp` or `sctp`.
        #[arg(default_value = "tcp")]
        proto: String,
    },
}

/// A minimal HTTP/1.0 GET against the admin server.
fn admin_get(addr: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)
        .with_context(|| format!("connecting to admin server {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("{path}: {}: {body}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

fn inspect(admin: &str, what: Option<Inspect>) -> Result<()> {
    match what.unwrap_or(Inspect::Services) {
        Inspect::Services => {
            let v: serde_json::Value = serde_json::from_str(&admin_get(admin, "/debug/services")?)?;
            println!("table version {}", v["tableVersion"]);
            for s in v["services"].as_array().into_iter().flatten() {
                let mut flags = Vec::new();
                if s["masquerade"] == true {
                    flags.push("masquerade".to_string());
                }
                if let Some(t) = s["sessionAffinityTimeoutSeconds"].as_u64() {
                    flags.push(format!("affinity ClientIP {t}s"));
                }
                if let Some(r) = s["sourceRanges"].as_array().filter(|r| !r.is_empty()) {
                    let r: Vec<&str> = r.iter().filter_map(|x| x.as_str()).collect();
                    flags.push(format!("sources {}", r.join(",")));
                }
                let fe = s["frontend"].as_str().unwrap_or("?");
                let name = s["name"].as_str().unwrap_or("?");
                println!("{fe:<28} {name}  {}", flags.join("  "));
                let backends = s["backends"].as_array().cloned().unwrap_or_default();
                if backends.is_empty() && s["noEndpoints"] == "drop" {
                    println!("  -> (no local endpoints: DROP)");
                } else if backends.is_empty() {
                    println!("  -> (no endpoints: REJECT)");
                }
                for b in backends {
                    println!("  -> {}", b.as_str().unwrap_or("?"));
                }
            }
        }
        Inspect::Lookup { src, dst, proto } => {
            let q = format!(
                "/debug/lookup?src={}&dst={}&proto={proto}",
                urlencode(&src),
                urlencode(&dst)
            );
            let v: serde_json::Value = serde_json::from_str(&admin_get(admin, &q)?)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Some(Cmd::Inspect { admin, what }) = cli.cmd {
        return inspect(&admin, what);
    }
    let path = cli.config.clone().context("--config is required")?;
    let cfg = Config::load(&path)?;
    if cli.check {
        println!(
            "{path}: OK ({} services, {} ports)",
            cfg.services.len(),
            cfg.ports.len()
        );
        return Ok(());
    }
    let args = cfg.eal_args();
    tracing::info!(?args, "initialising EAL ({})", Eal::version());
    let eal = Eal::init(&args).context("EAL initialisation failed")?;
    let lcores = eal.worker_lcores();
    if lcores.is_empty() {
        bail!("eal.lcores {:?} leaves no worker lcore: list the main lcore first, then one per worker", cfg.eal.lcores);
    }
    // One RCU reader per worker, plus one for the admin server's /debug views.
    let mut publisher = Publisher::new(lcores.len() + 1);
    publisher.publish(cfg.table_spec()?);
    let running = dataplane::worker::start(&eal, &cfg.dataplane(lcores.clone()), publisher.rcu())
        .context("starting the dataplane")?;
    for (i, p) in running.port_info.iter().enumerate() {
        tracing::info!(port = i, device = %cfg.ports[i].device, driver = %running.drivers[i], mac = %p.mac, "port up");
    }
    tracing::info!(workers = lcores.len(), ?lcores, "dataplane running");

    // Watching a cluster: not ready until Services and EndpointSlices are
    // listed and programmed.
    let ready = Arc::new(AtomicBool::new(!cli.watches_cluster()));
    let state = AdminState {
        workers: Arc::new(running.stats.clone()),
        control: publisher.metrics.clone(),
        ready: ready.clone(),
        ports: Arc::new(
            cfg.ports
                .iter()
                .map(|p| p.device.clone())
                .zip(running.port_ids())
                .collect(),
        ),
        table: admin::table_reader(publisher.rcu(), lcores.len()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("control")
        .build()
        .context("tokio runtime")?;
    let publisher = Arc::new(Mutex::new(publisher));
    let result = rt.block_on(control_loop(cli, cfg, state, publisher.clone()));
    ready.store(false, Ordering::SeqCst);
    tracing::info!("stopping workers");
    let codes = running.shutdown(&eal);
    drop(rt);
    drop(publisher);
    tracing::info!(?codes, "stopped");
    drop(eal);
    result
}

/// The node addresses NodePorts are served on: the dataplane's addresses,
/// filtered by `--nodeport-addresses` when given.
fn nodeport_addresses(cfg: &Config, cidrs: &[String]) -> Result<Vec<std::net::IpAddr>> {
    let mut filter = Vec::new();
    for (i, c) in cidrs.iter().enumerate() {
        filter.push(control::config::parse_prefix(
            c.trim(),
            &format!("--nodeport-addresses[{i}]"),
        )?);
    }
    Ok(cfg
        .table_spec()?
        .interfaces
        .iter()
        .map(|i| i.addr)
        .filter(|a| filter.is_empty() || filter.iter().any(|(p, l)| a.in_prefix(p, *l)))
        .map(|a| a.ip())
        .collect())
}

async fn kube_client(kubeconfig: Option<&str>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {path}"))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {path}"))?
        }
        None => kube::Config::incluster().context("in-cluster Kubernetes config")?,
    };
    kube::Client::try_from(config).context("Kubernetes client")
}

/// The cluster side of the control loop.
struct Cluster {
    model: Model,
    changes: tokio::sync::mpsc::Receiver<Change>,
    health: HealthServers,
    nodeport_cidrs: Vec<String>,
}

async fn control_loop(
    cli: Cli,
    mut cfg: Config,
    state: AdminState,
    publisher: Arc<Mutex<Publisher>>,
) -> Result<()> {
    let path = cli.config.clone().unwrap_or_default();
    let metrics_addr = cli.metrics_bind_address.unwrap_or(cfg.admin.bind);
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("metrics/admin address {metrics_addr}"))?;
    tracing::info!(addr = %metrics_addr, "admin server listening");
    let metrics = state.control.clone();
    let ready = state.ready.clone();
    let mut servers = vec![tokio::spawn(admin::serve(listener, state.clone()))];
    let healthz = cli.healthz_bind_address.or_else(|| {
        cli.watches_cluster()
            .then(|| std::net::SocketAddr::from(([0, 0, 0, 0], 10256)))
    });
    if let Some(addr) = healthz {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("healthz address {addr}"))?;
        tracing::info!(%addr, "healthz server listening");
        servers.push(tokio::spawn(admin::serve(l, state)));
    }
    let mut cluster = if cli.watches_cluster() {
        let node = cli.node_name();
        let client = kube_client(cli.kubeconfig.as_deref()).await?;
        let info = NodeInfo {
            name: node.clone(),
            zone: None,
            node_addresses: nodeport_addresses(&cfg, &cli.nodeport_addresses)?,
        };
        tracing::info!(node, nodeport_addresses = ?info.node_addresses, "watching the cluster");
        Some(Cluster {
            model: Model::new(info),
            changes: watch::watch(client, &node),
            health: HealthServers::new(cli.health_check_bind_address, ready.clone()),
            nodeport_cidrs: cli.nodeport_addresses.clone(),
        })
    } else {
        None
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(cli.reload_interval);
    let mut full = tokio::time::interval(cli.sync_period);
    let mut last_text = std::fs::read_to_string(&path).unwrap_or_default();
    // Something changed that is not published yet.
    let mut pending = false;
    let mut last_publish = tokio::time::Instant::now();
    loop {
        // Coalesce bursts: at most one publication per min_sync_period, and
        // nothing from the cluster before both lists are in.
        let can = cluster.as_ref().is_none_or(|c| c.model.synced());
        let due = (pending && can).then(|| last_publish + cli.min_sync_period);
        let mut forced = false;
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM"); break; }
            _ = int.recv() => { tracing::info!("SIGINT"); break; }
            _ = hup.recv() => forced = true,
            _ = tick.tick() => {}
            _ = full.tick(), if cluster.is_some() => {
                if let Some(c) = cluster.as_mut() {
                    c.model.mark_all();
                    pending = true;
                }
                continue;
            }
            Some(ch) = async { cluster.as_mut()?.changes.recv().await }, if cluster.is_some() => {
                match &ch {
                    Change::Service(_) => metrics.service_changes.fetch_add(1, Ordering::Relaxed),
                    Change::Slice(_) => metrics.endpoint_changes.fetch_add(1, Ordering::Relaxed),
                    Change::Node(_) => 0,
                    Change::Error(what, e) => {
                        tracing::warn!("watch {what}: {e} (retrying)");
                        metrics.watch_errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
                if let Some(c) = cluster.as_mut() {
                    c.model.apply(ch);
                    metrics.node_eligible.store(c.model.node_eligible(), Ordering::Relaxed);
                    pending |= c.model.has_changes() || (c.model.synced() && !ready.load(Ordering::Relaxed));
                }
                continue;
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                match sync(&mut cfg, cluster.as_mut(), &publisher).await {
                    Ok(()) => {
                        if cluster.is_some() && !ready.swap(true, Ordering::SeqCst) {
                            tracing::info!("cluster state programmed: ready");
                        }
                    }
                    Err(e) => {
                        metrics.reload_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("sync failed, keeping the current table: {e:#}");
                        if let Some(c) = cluster.as_mut() {
                            c.model.mark_all();
                        }
                    }
                }
                pending = false;
                last_publish = tokio::time::Instant::now();
                continue;
            }
        }
        // The configuration file.
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            continue;
        };
        if text == last_text && !forced {
            continue;
        }
        last_text = text.clone();
        let new = match Config::parse(&text, &path).and_then(|n| n.table_spec().map(|_| n)) {
            Ok(c) => c,
            Err(e) => {
                metrics.reload_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("config reload rejected, keeping the current table: {e}");
                continue;
            }
        };
        if let Some(part) = cfg.restart_needed(&new) {
            tracing::warn!("config section {part:?} changed: takes effect after a restart; services/routes are applied now");
        }
        if let Some(c) = cluster.as_mut() {
            match nodeport_addresses(&new, &c.nodeport_cidrs) {
                Ok(a) => c.model.set_node_addresses(a),
                Err(e) => tracing::error!("{e:#}"),
            }
        }
        cfg = new;
        pending = true;
        if servers.iter().any(|s| s.is_finished()) {
            bail!("admin server stopped");
        }
    }
    for s in servers {
        s.abort();
    }
    Ok(())
}

/// Rebuilds what changed and publishes: the configuration file's table plus
/// the cluster's Services.
async fn sync(
    cfg: &mut Config,
    mut cluster: Option<&mut Cluster>,
    publisher: &Arc<Mutex<Publisher>>,
) -> Result<()> {
    let spec = cfg.table_spec()?;
    let mut built = Vec::new();
    let report = cluster.as_deref_mut().map(|c| {
        let r = c.model.sync();
        built.extend(c.model.entries().cloned());
        r
    });
    let entries = spec.services.len() + built.len();
    let p = publisher.clone();
    let (version, metrics) = tokio::task::spawn_blocking(move || {
        let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
        (p.publish_with(spec, built), p.metrics.clone())
    })
    .await?;
    // The publish returned: every worker is on the new table.
    let now = std::time::SystemTime::now();
    if let (Some(c), Some(r)) = (cluster, &report) {
        for t in &r.triggers {
            if let Ok(d) = now.duration_since(*t) {
                metrics.network_programming.observe(d.as_secs_f64());
            }
        }
        metrics
            .translate_errors
            .store(c.model.translate_errors, Ordering::Relaxed);
        c.health.update(c.model.health_checks()).await;
    }
    tracing::info!(
        version,
        entries,
        rebuilt = report.as_ref().map_or(0, |r| r.rebuilt),
        "published new service table"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["dkp", "--config", "x.yaml"]).unwrap();
        assert_eq!(c.config.as_deref(), Some("x.yaml"));
        let c = Cli::try_parse_from([
            "dkp",
            "inspect",
            "lookup",
            "198.18.0.2:1",
            "198.18.100.1:80",
            "udp",
        ])
        .unwrap();
        assert!(matches!(
            c.cmd,
            Some(Cmd::Inspect {
                what: Some(Inspect::Lookup { .. }),
                ..
            })
        ));
    }

    #[test]
    fn urlencode_escapes_ipv6_brackets() {
        assert_eq!(urlencode("[2001:2::1]:80"), "%5B2001%3A2%3A%3A1%5D%3A80");
    }
}
