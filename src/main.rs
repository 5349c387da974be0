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
    /// YAML configuration file (EAL, ports, routes, services).
    #[arg(long)]
    config: String,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// How often to look for changes to the configuration file.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    reload_interval: Duration,
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
    let cfg = Config::load(&cli.config)?;
    if cli.check {
        println!(
            "{}: OK ({} services, {} ports)",
            cli.config,
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
    let mut publisher = Publisher::new(lcores.len());
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
    let mut last_text = std::fs::read_to_string(&cli.config).unwrap_or_default();
    loop {
        let forced = tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM"); break; }
            _ = int.recv() => { tracing::info!("SIGINT"); break; }
            _ = hup.recv() => true,
            _ = tick.tick() => false,
        };
        let Ok(text) = tokio::fs::read_to_string(&cli.config).await else {
            continue;
        };
        if text == last_text && !forced {
            continue;
        }
        last_text = text.clone();
        let new = match Config::parse(&text, &cli.config) {
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
