//! dpdk-kube-proxy: a Kubernetes service proxy with a DPDK dataplane.
use anyhow::{bail, Context, Result};
use clap::Parser;
use control::admin::{self, AdminState};
use control::config::Config;
use control::duration::parse_flag as duration;
use control::healthcheck::HealthServers;
use control::heartbeat::Heartbeat;
use control::k8s::NodeInfo;
use control::kernel_routes::{KernelRoute, KernelRoutes, Rtnetlink};
use control::publisher::Publisher;
use control::watch::{self, Change, Model};
use dataplane::dpdk::Eal;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Kubernetes service proxy with a DPDK poll-mode dataplane.
///
/// Settings come from, in order of precedence: these flags, then the
/// `--config` file (native YAML or a KubeProxyConfiguration), then the
/// defaults shown here. A flag that is not given leaves the file's value.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Configuration file: the native YAML (eal, ports, routes, services,
    /// kubernetes, ...) or a KubeProxyConfiguration
    /// (kubeproxy.config.k8s.io/v1alpha1) with a `dpdk:` section.
    #[arg(long)]
    config: Option<String>,
    /// Validate the configuration (file and flags) and exit.
    #[arg(long)]
    check: bool,
    /// How often to look for changes to the configuration file.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    reload_interval: Duration,
    /// kubeconfig of the cluster to watch [file: clientConnection.kubeconfig].
    /// Without one, the proxy watches the cluster only when it runs in a pod
    /// (in-cluster config); otherwise it serves the file's Services alone.
    #[arg(long)]
    kubeconfig: Option<String>,
    /// This node's name [file: hostnameOverride; default: $NODE_NAME, else
    /// the host name].
    #[arg(long)]
    hostname_override: Option<String>,
    /// At most one table publication per period [file: minSyncPeriod;
    /// default 1s]. Go durations: 200ms, 1m0s.
    #[arg(long, value_parser = duration)]
    min_sync_period: Option<Duration>,
    /// Every Service is rebuilt this often, changed or not [file:
    /// syncPeriod; default 30s].
    #[arg(long, value_parser = duration)]
    sync_period: Option<Duration>,
    /// Node addresses NodePorts are served on: CIDRs, `primary` or `all`,
    /// comma separated [file: nodePortAddresses; default: `primary`, the
    /// first dataplane address of each family (or bindAddress), as kube-proxy's nftables mode].
    #[arg(long, value_delimiter = ',')]
    nodeport_addresses: Vec<String>,
    /// Address of the `/healthz` + `/livez` server [file: healthzBindAddress;
    /// default: 0.0.0.0:10256 when watching a cluster, off otherwise].
    #[arg(long)]
    healthz_bind_address: Option<std::net::SocketAddr>,
    /// Address of `/metrics`, `/proxyMode`, `/debug/*` [file:
    /// metricsBindAddress or admin.bind; default 127.0.0.1:10249].
    #[arg(long)]
    metrics_bind_address: Option<std::net::SocketAddr>,
    /// Address the `healthCheckNodePort` servers listen on.
    #[arg(long, default_value = "0.0.0.0")]
    health_check_bind_address: std::net::IpAddr,
    /// Pod CIDRs, comma separated (dual-stack: one of each family); clients
    /// outside them are masqueraded [file: clusterCIDR / cluster_cidrs].
    #[arg(long, value_delimiter = ',')]
    cluster_cidr: Vec<String>,
    /// Service (ClusterIP) CIDRs, comma separated, as given to the API
    /// server: with an exception port they are routed toward it in the host
    /// kernel [file: service_cidrs / dpdk.service_cidrs].
    #[arg(long, value_delimiter = ',')]
    service_cluster_ip_range: Vec<String>,
    /// SNAT all Service traffic [file: masqueradeAll / masquerade_all;
    /// default false]. `--masquerade-all=false` overrides a file's true.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    masquerade_all: Option<bool>,
    /// Idle timeout of established TCP sessions [file:
    /// conntrack.tcpEstablishedTimeout / timeouts.tcp_established; default 24h].
    #[arg(long, value_parser = duration)]
    conntrack_tcp_timeout_established: Option<Duration>,
    /// Accepted for kube-proxy compatibility and ignored: there is no
    /// CLOSE_WAIT state; `timeouts.tcp_fin` (default 2m) applies after a FIN.
    #[arg(long, value_parser = duration)]
    conntrack_tcp_timeout_close_wait: Option<Duration>,
    /// Idle timeout of UDP sessions with traffic in one direction [file:
    /// conntrack.udpTimeout / timeouts.udp; default 30s].
    #[arg(long, value_parser = duration)]
    conntrack_udp_timeout: Option<Duration>,
    /// Idle timeout of UDP sessions with replies [file:
    /// conntrack.udpStreamTimeout / timeouts.udp_stream; default 2m].
    #[arg(long, value_parser = duration)]
    conntrack_udp_timeout_stream: Option<Duration>,
}

/// An invalid flag value, named like a configuration field.
fn bad_flag(flag: &str, msg: String) -> control::Error {
    control::Error::Invalid {
        field: flag.into(),
        msg,
    }
}

impl Cli {
    /// Loads the configuration file and lays the flags over it.
    fn load(&self, path: &str) -> control::Result<Config> {
        let mut cfg = Config::load(path)?;
        self.apply(&mut cfg)?;
        Ok(cfg)
    }

    /// Flags override the file: every flag that is given replaces the
    /// file's value. The result is validated again.
    fn apply(&self, cfg: &mut Config) -> control::Result<()> {
        let k = &mut cfg.kubernetes;
        if let Some(v) = &self.kubeconfig {
            k.kubeconfig = Some(v.clone());
        }
        if let Some(v) = &self.hostname_override {
            k.hostname_override = Some(v.clone());
        }
        if let Some(v) = self.sync_period {
            if v.is_zero() {
                return Err(bad_flag("--sync-period", "must be > 0".into()));
            }
            k.sync_period = v;
        }
        if let Some(v) = self.min_sync_period {
            k.min_sync_period = v;
        }
        if !self.nodeport_addresses.is_empty() {
            for (i, a) in self.nodeport_addresses.iter().enumerate() {
                control::config::parse_nodeport_address(a, &format!("--nodeport-addresses[{i}]"))?;
            }
            k.nodeport_addresses = self.nodeport_addresses.clone();
        }
        if let Some(v) = self.healthz_bind_address {
            k.healthz_bind_address = Some(v);
        }
        if let Some(v) = self.metrics_bind_address {
            cfg.admin.bind = v;
        }
        if !self.cluster_cidr.is_empty() {
            cfg.cluster_cidrs.clear();
            for c in self
                .cluster_cidr
                .iter()
                .map(|c| c.trim())
                .filter(|c| !c.is_empty())
            {
                control::config::parse_prefix(c, "--cluster-cidr")?;
                cfg.cluster_cidrs.push(c.to_string());
            }
        }
        if !self.service_cluster_ip_range.is_empty() {
            cfg.service_cidrs.clear();
            for c in self
                .service_cluster_ip_range
                .iter()
                .map(|c| c.trim())
                .filter(|c| !c.is_empty())
            {
                control::config::parse_prefix(c, "--service-cluster-ip-range")?;
                cfg.service_cidrs.push(c.to_string());
            }
        }
        if let Some(v) = self.masquerade_all {
            cfg.masquerade_all = v;
        }
        if self.conntrack_tcp_timeout_close_wait.is_some() {
            tracing::info!("--conntrack-tcp-timeout-close-wait is accepted and ignored (no CLOSE_WAIT state; timeouts.tcp_fin applies after a FIN)");
        }
        let t = &mut cfg.timeouts;
        for (flag, v, slot) in [
            (
                "--conntrack-tcp-timeout-established",
                self.conntrack_tcp_timeout_established,
                &mut t.tcp_established,
            ),
            (
                "--conntrack-udp-timeout",
                self.conntrack_udp_timeout,
                &mut t.udp,
            ),
            (
                "--conntrack-udp-timeout-stream",
                self.conntrack_udp_timeout_stream,
                &mut t.udp_stream,
            ),
        ] {
            match v {
                Some(d) if d.is_zero() => return Err(bad_flag(flag, "must be > 0".into())),
                Some(d) => *slot = d,
                None => {}
            }
        }
        cfg.validate()
    }
}

/// True when Services come from a Kubernetes API server.
fn watches_cluster(cfg: &Config) -> bool {
    cfg.kubernetes.kubeconfig.is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// This node's name: `--hostname-override` / `hostnameOverride`, else
/// `$NODE_NAME`, else the host name.
/// A duration flag that must not be zero.
fn positive_duration(s: &str) -> std::result::Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

/// kube-proxy's `GetHostname`: the override, else `$NODE_NAME`, else the
/// host name; trimmed and lowercased (Node names are lowercase).
fn node_name(cfg: &Config) -> String {
    let norm = |n: String| Some(n.trim().to_lowercase()).filter(|n| !n.is_empty());
    cfg.kubernetes
        .hostname_override
        .clone()
        .and_then(norm)
        .or_else(|| std::env::var("NODE_NAME").ok().and_then(norm))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .and_then(norm)
        })
        .unwrap_or_default()
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
                if let Some(a) = s["loadBalancing"].as_str() {
                    flags.push(format!("lb {a}"));
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
                // Active connections per backend (node-wide, all workers).
                let conns = s["connections"].as_array().cloned().unwrap_or_default();
                let active = |b: &str| {
                    conns.iter().find(|c| c["backend"] == b).map(|c| {
                        (
                            c["active"].as_u64().unwrap_or(0),
                            c["total"].as_u64().unwrap_or(0),
                        )
                    })
                };
                for b in backends {
                    let b = b.as_str().unwrap_or("?");
                    match active(b) {
                        Some((a, t)) => println!("  -> {b:<26} active {a:<6} total {t}"),
                        None => println!("  -> {b}"),
                    }
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
    let cfg = cli.load(&path)?;
    if cli.check {
        let k = &cfg.kubernetes;
        println!(
            "{path}: OK ({} services, {} ports; kubeconfig {}, metrics {}, min sync period {:?}, sync period {:?})",
            cfg.services.len(),
            cfg.ports.len(),
            k.kubeconfig.as_deref().unwrap_or("-"),
            cfg.admin.bind,
            k.min_sync_period,
            k.sync_period,
        );
        return Ok(());
    }
    if let Some(adj) = cfg.kubernetes.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .with_context(|| format!("setting oom_score_adj to {adj}"))?;
    }
    let mut args = cfg.eal_args_resolved()?;
    // Shared ports (beside the kernel): the af_xdp PMD attaches our XDP
    // program, from a file of this process removed once the ports are up.
    let shared_ifaces = cfg.shared_ports();
    let xdp_file = if shared_ifaces.is_empty() {
        None
    } else {
        let path = control::beside::prepare(&shared_ifaces)
            .context("preparing the shared ports' XDP program")?;
        args = cfg.with_xdp_prog(args, &path.to_string_lossy());
        Some(path)
    };
    tracing::info!(?args, "initialising EAL ({})", Eal::version());
    let eal = Eal::init(&args).context("EAL initialisation failed")?;
    let lcores = eal.worker_lcores();
    if lcores.is_empty() {
        bail!("eal.lcores {:?} leaves no worker lcore: list the main lcore first, then one per worker", args[1]);
    }
    // One RCU reader per worker, plus one for the admin server's /debug views.
    let mut publisher =
        Publisher::with_backend_counters(lcores.len() + 1, cfg.workers.backend_counters);
    publisher.publish(cfg.table_spec()?);
    let mut dp = cfg.dataplane(lcores.clone());
    dp.backend_counters = Some(publisher.backend_counters());
    let running = dataplane::worker::start(&eal, &dp, publisher.rcu());
    if let Some(f) = &xdp_file {
        let _ = std::fs::remove_file(f);
    }
    let running = running.context("starting the dataplane")?;
    for (i, p) in running.port_info.iter().enumerate() {
        tracing::info!(port = i, device = %cfg.ports[i].device, driver = %running.drivers[i], mac = %p.mac, "port up");
    }
    let mib = |b: usize| b.div_ceil(1 << 20);
    let table_mib: usize = running.table_memory.iter().map(|m| mib(m.bytes)).sum();
    let huge_page_mib: usize = running
        .table_memory
        .iter()
        .map(|m| mib(m.huge_page_bytes))
        .sum();
    tracing::info!(
        workers = lcores.len(),
        ?lcores,
        table_mib,
        huge_page_mib,
        "dataplane running (session and next-hop tables: {table_mib} MiB, {huge_page_mib} MiB of it on huge pages)"
    );
    let mut routes = kernel_routes(&cfg, &running, &publisher.metrics);
    let mut shared = if shared_ifaces.is_empty() {
        None
    } else {
        let ports: Vec<(&control::beside::SharedIface, u32)> = shared_ifaces
            .iter()
            .map(|s| (s, running.kernel_ifindex(usize::from(s.port)).unwrap_or(0)))
            .collect();
        let s = control::beside::SharedPorts::open(&ports, publisher.metrics.clone())
            .context("opening the shared ports' XDP maps")?;
        tracing::info!(
            ?shared_ifaces,
            "shared ports: XDP program attached beside the kernel"
        );
        Some(s)
    };

    // Watching a cluster: not ready until Services and EndpointSlices are
    // listed and programmed.
    let ready = Arc::new(AtomicBool::new(!watches_cluster(&cfg)));
    let shutdown_timeout = cfg.workers.shutdown_timeout;
    let heartbeat = Arc::new(Heartbeat::new(
        lcores.len(),
        u64::try_from(cfg.workers.stall_timeout.as_millis()).unwrap_or(u64::MAX),
    ));
    let state = AdminState {
        workers: Arc::new(running.stats.clone()),
        control: publisher.metrics.clone(),
        ready: ready.clone(),
        heartbeat: heartbeat.clone(),
        ports: Arc::new(
            cfg.ports
                .iter()
                .map(|p| p.device.clone())
                .zip(running.port_ids())
                .collect(),
        ),
        pools: Arc::new(running.pools()),
        table: admin::table_reader(publisher.rcu(), lcores.len()),
        per_backend_services: cfg.metrics.per_backend_services,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("control")
        .build()
        .context("tokio runtime")?;
    let publisher = Arc::new(Mutex::new(publisher));
    let result = rt.block_on(control_loop(
        cli,
        cfg,
        state,
        publisher.clone(),
        routes.as_mut(),
        shared.as_mut(),
    ));
    // From here the exit is bounded, whatever a worker does.
    exit_after(shutdown_timeout, heartbeat);
    ready.store(false, Ordering::SeqCst);
    if let Some(r) = routes.as_mut() {
        // The node's own Service traffic stops reaching the dataplane here
        // (as with kube-proxy's rules flushed): nothing of ours is left
        // behind in the kernel.
        let out = r.clear();
        tracing::info!(
            removed = out.removed,
            errors = out.errors,
            "kernel routes toward the exception interface removed"
        );
    }
    tracing::info!("stopping workers");
    let codes = running.shutdown(&eal);
    // Closing the ports detached the shared ports' XDP programs.
    for s in &shared_ifaces {
        control::beside::forget_prog(&s.iface);
    }
    // A publish blocked on a worker must not hold the exit either.
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(publisher);
    tracing::info!(?codes, "stopped");
    drop(eal);
    result
}

/// The reconciler of the kernel routes toward the exception port's
/// interface, when there is an exception port. `kernel_routes.enabled:
/// false` keeps it (it then removes ours), so a reload can turn them on.
fn kernel_routes(
    cfg: &Config,
    running: &dataplane::worker::Running,
    metrics: &Arc<control::publisher::ControlMetrics>,
) -> Option<KernelRoutes<Rtnetlink>> {
    let x = cfg.exception()?;
    let device = &cfg.ports[usize::from(x.kernel)].device;
    let Some(ifindex) = running.kernel_ifindex(usize::from(x.kernel)) else {
        tracing::error!(%device, "the exception port has no kernel interface: no routes toward it are installed");
        return None;
    };
    match Rtnetlink::open() {
        Ok(nl) => {
            tracing::info!(%device, ifindex, protocol = cfg.kernel_routes.protocol, "kernel routes toward the exception interface");
            Some(KernelRoutes::new(
                nl,
                ifindex,
                cfg.kernel_routes.protocol,
                metrics.clone(),
            ))
        }
        Err(e) => {
            metrics.route_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "rtnetlink socket: {e}: no routes toward the exception port are installed"
            );
            None
        }
    }
}

/// The routes wanted toward the exception port for a table with these
/// frontend addresses.
fn wanted_routes(
    cfg: &Config,
    frontends: impl IntoIterator<Item = std::net::IpAddr>,
) -> BTreeSet<KernelRoute> {
    if !cfg.kernel_routes.enabled {
        return BTreeSet::new();
    }
    // Validated with the rest of the file.
    let cidrs = cfg.service_cidrs().unwrap_or_default();
    // The exception SNAT addresses too: local backends' answers to them
    // must reach the dataplane, wherever the address is (a host route onto
    // the TAP also covers one outside the node's subnet).
    let snat = cfg.exception.snat_addresses.iter().copied();
    control::kernel_routes::desired(
        &cidrs,
        frontends.into_iter().chain(snat),
        &cfg.node_addresses(),
    )
}

/// Retries of failed route reconciles: 1 s doubling to 30 s.
struct RouteRetry {
    at: Option<tokio::time::Instant>,
    backoff: Duration,
}

impl RouteRetry {
    fn new() -> Self {
        RouteRetry {
            at: None,
            backoff: Duration::from_secs(1),
        }
    }

    /// Schedules (or cancels) the next retry after a reconcile.
    fn after(&mut self, r: &KernelRoutes<Rtnetlink>) {
        if r.needs_retry() {
            self.at = Some(tokio::time::Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        } else {
            self.at = None;
            self.backoff = Duration::from_secs(1);
        }
    }
}

/// Exits the process with status 1 if it is still running `timeout` from
/// now: shutting down must not hang on a stuck worker or control loop.
fn exit_after(timeout: Duration, heartbeat: Arc<Heartbeat>) {
    let spawned = std::thread::Builder::new()
        .name("exit-deadline".into())
        .spawn(move || {
            std::thread::sleep(timeout);
            tracing::error!(
                ?timeout,
                stalled_workers = ?heartbeat.stalled(),
                "shutdown did not finish in time: exiting anyway"
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::error!("cannot arm the shutdown deadline: {e}");
    }
}

async fn kube_client(kubeconfig: Option<&str>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("kubeconfig {path}"))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {path}"))?
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
}

async fn control_loop(
    cli: Cli,
    mut cfg: Config,
    state: AdminState,
    publisher: Arc<Mutex<Publisher>>,
    mut routes: Option<&mut KernelRoutes<Rtnetlink>>,
    mut shared: Option<&mut control::beside::SharedPorts>,
) -> Result<()> {
    let path = cli.config.clone().unwrap_or_default();
    let metrics_addr = cfg.admin.bind;
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("metrics/admin address {metrics_addr}"))?;
    tracing::info!(addr = %metrics_addr, "admin server listening");
    let metrics = state.control.clone();
    let ready = state.ready.clone();
    let mut servers = vec![tokio::spawn(admin::serve(listener, state.clone()))];
    let healthz = cfg.kubernetes.healthz_bind_address.or_else(|| {
        watches_cluster(&cfg).then(|| std::net::SocketAddr::from(([0, 0, 0, 0], 10256)))
    });
    if let Some(addr) = healthz {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("healthz address {addr}"))?;
        tracing::info!(%addr, "healthz server listening");
        servers.push(tokio::spawn(admin::serve_health(l, state.clone())));
    }
    let mut cluster = if watches_cluster(&cfg) {
        let node = node_name(&cfg);
        let client = kube_client(cfg.kubernetes.kubeconfig.as_deref()).await?;
        let info = NodeInfo {
            name: node.clone(),
            zone: None,
            algorithm: cfg.algorithm()?,
            node_addresses: cfg.nodeport_addresses()?,
        };
        tracing::info!(node, nodeport_addresses = ?info.node_addresses, "watching the cluster");
        Some(Cluster {
            model: Model::new(info),
            changes: watch::watch(client, &node, metrics.clone()),
            health: HealthServers::new(cli.health_check_bind_address, ready.clone()),
        })
    } else {
        None
    };
    // SIGTERM/SIGINT: not ready at once, the exit deadline armed, then the
    // loop ends (from a task of its own, so a loop busy publishing to a
    // stuck worker still gets a bounded exit); a second signal exits now.
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let ready = ready.clone();
        let heartbeat = state.heartbeat.clone();
        let timeout = cfg.workers.shutdown_timeout;
        tokio::spawn(async move {
            let name = |t: bool| if t { "SIGTERM" } else { "SIGINT" };
            let first = tokio::select! {
                _ = term.recv() => true,
                _ = int.recv() => false,
            };
            tracing::info!("{}: stopping (at most {timeout:?})", name(first));
            ready.store(false, Ordering::SeqCst);
            exit_after(timeout, heartbeat);
            let _ = stop_tx.send(true);
            let again = tokio::select! {
                _ = term.recv() => true,
                _ = int.recv() => false,
            };
            tracing::warn!("{} again: exiting now", name(again));
            std::process::exit(1);
        });
    }
    if state.heartbeat.timeout_ms() > 0 {
        let period = Duration::from_millis((state.heartbeat.timeout_ms() / 4).clamp(50, 1000));
        servers.push(tokio::spawn({
            let (h, w) = (state.heartbeat.clone(), state.workers.clone());
            async move {
                h.run(w, period).await;
                Ok::<(), std::io::Error>(())
            }
        }));
    }
    let mut route_retry = RouteRetry::new();
    if let Some(r) = routes.as_deref_mut() {
        // Static Services only: the table published at start is the
        // file's, so the routes follow it now (repairing what a crash left).
        // Watching a cluster, they follow its first publication instead.
        if cluster.is_none() {
            let spec = cfg.table_spec()?;
            let want = wanted_routes(
                &cfg,
                spec.services.iter().map(|s| s.frontend.addr.addr.ip()),
            );
            tokio::task::block_in_place(|| r.update(want));
            route_retry.after(r);
        }
    }
    if let Some(sp) = shared.as_deref_mut() {
        // The table published at start (static Services): the XDP maps
        // follow it now; watching a cluster, its first publication.
        if cluster.is_none() {
            let spec = cfg.table_spec()?;
            let published = Published::of(&spec, &[]);
            tokio::task::block_in_place(|| published.apply(&cfg, sp));
        }
    }
    // The kernel's neighbours (shared ports) are mirrored this often.
    let mut neigh_tick = tokio::time::interval(Duration::from_millis(500));
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(cli.reload_interval);
    // The sync periods in force since start (changes need a restart).
    let (min_sync_period, sync_period) =
        (cfg.kubernetes.min_sync_period, cfg.kubernetes.sync_period);
    let mut full = tokio::time::interval(sync_period);
    // The kernel routes are read back and repaired this often (one dump).
    let mut route_resync = tokio::time::interval(sync_period);
    route_resync.tick().await;
    let mut last_text = std::fs::read_to_string(&path).unwrap_or_default();
    // Something changed that is not published yet.
    let mut pending = false;
    let mut last_publish = tokio::time::Instant::now();
    // kube-proxy's healthz: unhealthy when a change waits longer than
    // 2 × syncPeriod to be programmed.
    metrics.health_timeout_ms.store(
        u64::try_from(2 * sync_period.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    loop {
        if !pending {
            metrics.oldest_pending_ms.store(0, Ordering::Relaxed);
        } else if metrics.oldest_pending_ms.load(Ordering::Relaxed) == 0 {
            metrics
                .oldest_pending_ms
                .store(control::publisher::now_ms(), Ordering::Relaxed);
        }
        // Coalesce bursts: at most one publication per min_sync_period, and
        // nothing from the cluster before both lists are in.
        let can = cluster.as_ref().is_none_or(|c| c.model.synced());
        let due = (pending && can).then(|| last_publish + min_sync_period);
        let mut forced = false;
        tokio::select! {
            _ = stop.changed() => break,
            _ = hup.recv() => forced = true,
            _ = tokio::time::sleep_until(route_retry.at.unwrap_or_else(tokio::time::Instant::now)), if route_retry.at.is_some() => {
                if let Some(r) = routes.as_deref_mut() {
                    tokio::task::block_in_place(|| r.retry());
                    route_retry.after(r);
                }
                continue;
            }
            _ = route_resync.tick(), if routes.is_some() => {
                if let Some(r) = routes.as_deref_mut() {
                    tokio::task::block_in_place(|| r.resync());
                    route_retry.after(r);
                }
                continue;
            }
            _ = tick.tick() => {}
            _ = neigh_tick.tick(), if shared.is_some() => {
                if let Some(sp) = shared.as_deref_mut() {
                    pending |= tokio::task::block_in_place(|| sp.tick());
                }
                continue;
            }
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
                let neighbors = shared.as_deref().map_or(&[][..], |s| s.neighbors()).to_vec();
                match sync(&mut cfg, cluster.as_mut(), &publisher, &neighbors).await {
                    Ok(published) => {
                        if cluster.is_some() && !ready.swap(true, Ordering::SeqCst) {
                            tracing::info!("cluster state programmed: ready");
                        }
                        // The routes follow the table (no netlink call when
                        // their set is unchanged).
                        if let Some(r) = routes.as_deref_mut() {
                            let want = wanted_routes(&cfg, published.frontends.iter().map(|f| f.0));
                            tokio::task::block_in_place(|| r.update(want));
                            route_retry.after(r);
                        }
                        if let Some(sp) = shared.as_deref_mut() {
                            tokio::task::block_in_place(|| published.apply(&cfg, sp));
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
        let new = match Config::parse(&text, &path).and_then(|mut n| {
            cli.apply(&mut n)?;
            n.table_spec().map(|_| n)
        }) {
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
            match new.nodeport_addresses() {
                Ok(a) => c.model.set_node_addresses(a),
                Err(e) => tracing::error!("{e:#}"),
            }
            // Validated with the rest of the file above.
            if let Ok(a) = new.algorithm() {
                c.model.set_algorithm(a);
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

/// What a publication holds that the kernel side follows.
struct Published {
    /// Frontends: (address, protocol, port).
    frontends: BTreeSet<(std::net::IpAddr, dataplane::addr::Proto, u16)>,
    /// Every backend address (next hops to resolve on shared ports).
    backends: BTreeSet<dataplane::addr::Addr>,
    interfaces: Vec<dataplane::table::Interface>,
    routes: Vec<dataplane::table::Route>,
}

impl Published {
    fn of(spec: &dataplane::table::TableSpec, built: &[Arc<dataplane::table::Service>]) -> Self {
        let fe = |f: &dataplane::table::Frontend| (f.addr.addr.ip(), f.proto, f.addr.port);
        let file = spec.services.iter();
        Published {
            frontends: file
                .clone()
                .map(|s| fe(&s.frontend))
                .chain(built.iter().map(|s| fe(&s.frontend)))
                .collect(),
            backends: file
                .flat_map(|s| s.backends.iter().chain(s.short_circuit.iter()))
                .chain(built.iter().flat_map(|s| {
                    s.backends
                        .iter()
                        .chain(s.short_circuit.iter().flat_map(|c| c.backends.iter()))
                }))
                .map(|b| b.addr)
                .collect(),
            interfaces: spec.interfaces.clone(),
            routes: spec.routes.clone(),
        }
    }

    /// The shared ports' XDP maps and wanted next hops follow it.
    fn apply(&self, cfg: &Config, sp: &mut control::beside::SharedPorts) {
        sp.update(
            &self.frontends,
            &cfg.node_addresses(),
            &self.interfaces,
            &self.routes,
            &self.backends,
        );
    }
}

/// Rebuilds what changed and publishes: the configuration file's table plus
/// the cluster's Services, with `neighbors` (the kernel's, of shared ports)
/// added to the file's static neighbours.
async fn sync(
    cfg: &mut Config,
    mut cluster: Option<&mut Cluster>,
    publisher: &Arc<Mutex<Publisher>>,
    neighbors: &[dataplane::table::StaticNeighbor],
) -> Result<Published> {
    // This node's pods (the Node's spec.podCIDRs) are behind the kernel.
    let pods = cluster.as_deref().map_or(&[][..], |c| c.model.pod_cidrs());
    let mut spec = cfg.table_spec_with_pods(pods)?;
    for n in neighbors {
        // The file's static neighbours win.
        if !spec.neighbors.iter().any(|s| s.addr == n.addr) {
            spec.neighbors.push(*n);
        }
    }
    let mut built = Vec::new();
    // Rebuilding is CPU work (every Service on a full resync): off the
    // async workers' hot path.
    let report = cluster.as_deref_mut().map(|c| {
        tokio::task::block_in_place(|| {
            let r = c.model.sync();
            built.extend(c.model.entries().cloned());
            r
        })
    });
    let entries = spec.services.len() + built.len();
    let published = Published::of(&spec, &built);
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
        metrics
            .annotation_errors
            .store(c.model.annotation_errors, Ordering::Relaxed);
        c.health.update(c.model.health_checks()).await;
    }
    tracing::info!(
        version,
        entries,
        rebuilt = report.as_ref().map_or(0, |r| r.rebuilt),
        "published new service table"
    );
    Ok(published)
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

    const NATIVE: &str = "ports: [{device: a, addresses: [198.18.0.1/24, 2001:2::1/64]}]\ncluster_cidrs: [198.18.128.0/17]\ntimeouts: {udp: 10s}\nkubernetes: {kubeconfig: /file/kubeconfig, sync_period: 1m, min_sync_period: 2s}\n";
    const KPC: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclientConnection: {kubeconfig: /file/kubeconfig}\nhostnameOverride: file-node\nclusterCIDR: 198.18.128.0/17\nmasqueradeAll: true\nmetricsBindAddress: 127.0.0.1:20249\nhealthzBindAddress: 127.0.0.1:20256\nnodePortAddresses: [primary]\nconntrack: {udpTimeout: 10s, tcpEstablishedTimeout: 1h0m0s}\niptables: {syncPeriod: 1m0s, minSyncPeriod: 2s}\ndpdk:\n  ports: [{device: a, addresses: [198.18.0.1/24, 2001:2::1/64]}]\n";

    /// Writes `text` to a file of this test process and loads it with `args`.
    fn load(name: &str, text: &str, args: &[&str]) -> control::Result<Config> {
        let path = std::env::temp_dir().join(format!("dkp-cli-{}-{name}.yaml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let path = path.to_string_lossy().into_owned();
        let mut argv = vec!["dkp", "--config", &path];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let r = cli.load(&path);
        std::fs::remove_file(&path).unwrap();
        r
    }

    const ALL_FLAGS: [&str; 22] = [
        "--kubeconfig=/flag/kubeconfig",
        "--hostname-override=flag-node",
        "--sync-period=5m0s",
        "--min-sync-period=200ms",
        "--nodeport-addresses=2001:2::/64",
        "--healthz-bind-address=127.0.0.1:30256",
        "--metrics-bind-address=127.0.0.1:30249",
        "--cluster-cidr=198.18.64.0/18,2001:2:0:8000::/56",
        "--service-cluster-ip-range=198.18.96.0/20,2001:2:0:9000::/112",
        "--masquerade-all=false",
        "--conntrack-tcp-timeout-established",
        "2h30m",
        "--conntrack-tcp-timeout-close-wait",
        "1h0m0s",
        "--conntrack-udp-timeout",
        "45s",
        "--conntrack-udp-timeout-stream",
        "5m",
        "--health-check-bind-address",
        "127.0.0.1",
        "--reload-interval",
        "2s",
    ];

    #[test]
    fn flags_override_either_file_format() {
        let s = Duration::from_secs;
        for (name, text) in [("native", NATIVE), ("kpc", KPC)] {
            // No flags: the file's values.
            let c = load(name, text, &[]).unwrap();
            let k = &c.kubernetes;
            assert_eq!(k.kubeconfig.as_deref(), Some("/file/kubeconfig"), "{name}");
            assert_eq!((k.sync_period, k.min_sync_period), (s(60), s(2)), "{name}");
            assert_eq!(c.cluster_cidrs, ["198.18.128.0/17"], "{name}");
            assert_eq!(c.timeouts.udp, s(10), "{name}");
            // Every flag: the flags' values.
            let c = load(name, text, &ALL_FLAGS).unwrap();
            let k = &c.kubernetes;
            assert_eq!(k.kubeconfig.as_deref(), Some("/flag/kubeconfig"), "{name}");
            assert_eq!(k.hostname_override.as_deref(), Some("flag-node"), "{name}");
            assert_eq!(node_name(&c), "flag-node");
            assert!(watches_cluster(&c));
            assert_eq!(
                (k.sync_period, k.min_sync_period),
                (s(300), Duration::from_millis(200))
            );
            assert_eq!(
                c.nodeport_addresses().unwrap(),
                ["2001:2::1".parse::<std::net::IpAddr>().unwrap()]
            );
            assert_eq!(
                k.healthz_bind_address.unwrap().to_string(),
                "127.0.0.1:30256"
            );
            assert_eq!(c.admin.bind.to_string(), "127.0.0.1:30249");
            assert_eq!(c.cluster_cidrs, ["198.18.64.0/18", "2001:2:0:8000::/56"]);
            assert_eq!(c.service_cidrs, ["198.18.96.0/20", "2001:2:0:9000::/112"]);
            assert!(!c.masquerade_all, "{name}");
            let t = &c.timeouts;
            assert_eq!(
                (t.tcp_established, t.tcp_fin, t.udp, t.udp_stream),
                (
                    s(9000),
                    control::config::TimeoutsConfig::default().tcp_fin,
                    s(45),
                    s(300)
                )
            );
        }
        let c = load("kpc-file", KPC, &[]).unwrap();
        assert!(c.masquerade_all);
        assert_eq!(node_name(&c), "file-node");
        assert_eq!(c.admin.bind.to_string(), "127.0.0.1:20249");
        assert_eq!(c.timeouts.tcp_established, s(3600));
        assert!(
            load("native-m", NATIVE, &["--masquerade-all"])
                .unwrap()
                .masquerade_all
        );
    }

    #[test]
    fn bad_flag_values_are_named() {
        for (args, want) in [
            (&["--cluster-cidr=198.18.0.0/33"][..], "--cluster-cidr"),
            (
                &["--service-cluster-ip-range=198.18.0.0/24,x"],
                "--service-cluster-ip-range",
            ),
            (
                &["--nodeport-addresses=primary,localhost"],
                "--nodeport-addresses[1]",
            ),
            (&["--sync-period=0s"], "--sync-period: must be > 0"),
            (
                &["--conntrack-udp-timeout=0s"],
                "--conntrack-udp-timeout: must be > 0",
            ),
        ] {
            let e = load("bad", NATIVE, args).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = Cli::try_parse_from(["dkp", "--conntrack-udp-timeout", "3x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"3x\" is not a duration"), "{e}");
        let e = Cli::try_parse_from(["dkp", "--reload-interval", "0s"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be greater than zero"), "{e}");
        let e = Cli::try_parse_from(["dkp", "--masquerade-all=maybe"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("maybe"), "{e}");
        // The file's own errors still name its fields.
        let e = load("bad-file", &KPC.replace("10s", "3x"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("conntrack.udpTimeout: \"3x\" is not a duration"),
            "{e}"
        );
    }

    #[test]
    fn urlencode_escapes_ipv6_brackets() {
        assert_eq!(urlencode("[2001:2::1]:80"), "%5B2001%3A2%3A%3A1%5D%3A80");
    }
}
