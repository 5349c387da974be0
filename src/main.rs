//! dpdk-kube-proxy: a Kubernetes service proxy with a DPDK dataplane.
use anyhow::{bail, Context, Result};
use clap::Parser;
use control::admin::{self, AdminState};
use control::config::Config;
use control::publisher::Publisher;
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
                if backends.is_empty() {
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

    let ready = Arc::new(AtomicBool::new(true));
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

async fn control_loop(
    cli: Cli,
    mut cfg: Config,
    state: AdminState,
    publisher: Arc<Mutex<Publisher>>,
) -> Result<()> {
    let path = cli.config.clone().unwrap_or_default();
    let listener = tokio::net::TcpListener::bind(cfg.admin.bind)
        .await
        .with_context(|| format!("admin.bind {}", cfg.admin.bind))?;
    tracing::info!(addr = %cfg.admin.bind, "admin server listening");
    let metrics = state.control.clone();
    let server = tokio::spawn(admin::serve(listener, state));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(cli.reload_interval);
    let mut last_text = std::fs::read_to_string(&path).unwrap_or_default();
    loop {
        let forced = tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM"); break; }
            _ = int.recv() => { tracing::info!("SIGINT"); break; }
            _ = hup.recv() => true,
            _ = tick.tick() => false,
        };
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            continue;
        };
        if text == last_text && !forced {
            continue;
        }
        last_text = text.clone();
        let new = match Config::parse(&text, &path) {
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
        let spec = match new.table_spec() {
            Ok(s) => s,
            Err(e) => {
                metrics.reload_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("config reload rejected: {e}");
                continue;
            }
        };
        let p = publisher.clone();
        let version = tokio::task::spawn_blocking(move || {
            p.lock().unwrap_or_else(|e| e.into_inner()).publish(spec)
        })
        .await?;
        tracing::info!(
            version,
            services = new.services.len(),
            "published new service table"
        );
        cfg = new;
        if server.is_finished() {
            bail!("admin server stopped");
        }
    }
    server.abort();
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
