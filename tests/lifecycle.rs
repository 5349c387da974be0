//! Process lifecycle end to end: a worker that stops making progress is
//! reported unhealthy and healthy again when it moves; SIGTERM stops the
//! proxy within the shutdown timeout; a restarted proxy serves again, with
//! only the DaemonSet's capabilities; a worker stuck at SIGTERM does not
//! make the exit hang.
//!
//! A worker is stopped for real: the test attaches to its thread with
//! ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT stop that one thread, not the
//! process) and lets it go with PTRACE_DETACH. Needs root.
use serde_json::Value;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;
use support::*;

/// Threads of `pid` that run DPDK workers (EAL names them rte-worker-N).
fn worker_tids(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let e = e.unwrap();
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.starts_with("rte-worker-") {
            out.push(e.file_name().to_string_lossy().parse().unwrap());
        }
    }
    out.sort_unstable();
    out
}

/// One thread of another process held in a ptrace stop until dropped. The
/// tracer is a thread of its own (ptrace requests must come from the thread
/// that attached); if the traced process exits meanwhile, it reaps the
/// thread so the process's exit is not held up.
struct Frozen {
    release: Option<mpsc::Sender<()>>,
    tracer: Option<std::thread::JoinHandle<()>>,
}

fn freeze(tid: i32) -> Frozen {
    let (stopped_tx, stopped_rx) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let tracer = std::thread::spawn(move || {
        let nul = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: plain ptrace/waitpid syscalls on a thread id; no memory
        // of ours is passed besides the status word.
        unsafe {
            if libc::ptrace(libc::PTRACE_SEIZE, tid, nul, nul) != 0 {
                let _ = stopped_tx.send(Err(std::io::Error::last_os_error()));
                return;
            }
            libc::ptrace(libc::PTRACE_INTERRUPT, tid, nul, nul);
            let mut st = 0;
            let r = libc::waitpid(tid, &mut st, libc::__WALL);
            let _ = stopped_tx.send(if r == tid && libc::WIFSTOPPED(st) {
                Ok(())
            } else {
                Err(std::io::Error::other(format!("waitpid {r} status {st:#x}")))
            });
            loop {
                match release_rx.recv_timeout(Duration::from_millis(20)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // Killed meanwhile (the process exited): reap it.
                        let r = libc::waitpid(tid, &mut st, libc::__WALL | libc::WNOHANG);
                        if r == tid && (libc::WIFEXITED(st) || libc::WIFSIGNALED(st)) {
                            return;
                        }
                        if r < 0 {
                            return;
                        }
                    }
                    _ => {
                        if libc::ptrace(libc::PTRACE_DETACH, tid, nul, nul) != 0 {
                            // Not in a stop any more: it is exiting.
                            libc::waitpid(tid, &mut st, libc::__WALL);
                        }
                        return;
                    }
                }
            }
        }
    });
    stopped_rx
        .recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot stop thread {tid}: {e}"));
    Frozen {
        release: Some(release),
        tracer: Some(tracer),
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.tracer.take() {
            let _ = t.join();
        }
    }
}

/// `/healthz` status and body from the admin server.
fn healthz(t: &Topology) -> (u16, Value) {
    let out = Command::new("ip")
        .args(["netns", "exec", &t.ns("proxy"), "python3"])
        .arg(root().join("tests/e2e/peer.py"))
        .args(["http-get", "--status"])
        .arg(format!("http://{}/healthz", t.admin))
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let (code, body) = s.trim().split_once(' ').unwrap_or((s.trim(), ""));
    (
        code.parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn wait_healthz(t: &Topology, what: &str, ok: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, v) = healthz(t);
        if ok(code, &v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: last {code} {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIGTERM and waits (at most `limit`) for the proxy to exit.
fn terminate(t: &mut Topology, limit: Duration) -> (ExitStatus, Duration) {
    let mut p = t.proxy.take().expect("proxy running");
    let start = Instant::now();
    sh(Command::new("kill").args(["-TERM", &p.id().to_string()]));
    loop {
        if let Some(st) = p.try_wait().unwrap() {
            return (st, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = p.kill();
            let _ = p.wait();
            panic!("proxy still running {limit:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn e2e_worker_stall_sigterm_and_restart() {
    require_root();
    let prefix = format!("dl{}", std::process::id() % 100_000);
    let mut t = Topology::up(&prefix);
    let cfg = t.demo_config().replace(
        "  idle_sleep_us: 100\n",
        "  idle_sleep_us: 100\n  stall_timeout: 1s\n  shutdown_timeout: 3s\n",
    );
    assert!(
        cfg.contains("stall_timeout: 1s"),
        "demo.yaml's workers section"
    );
    t.write_config_text(&cfg);
    t.start_proxy();
    t.wait_version(1);
    let vip = "198.18.100.1";
    assert_spread(&clients(&t, vip, 60), "tcp", 60, &["be1", "be2", "be3"]);
    wait_healthz(&t, "healthy at start", |c, _| c == 200);

    // One worker thread stopped: unhealthy within the stall timeout (1 s)
    // plus a sampling period, naming that worker; the other keeps looping.
    let pid = t.proxy.as_ref().unwrap().id();
    let tids = worker_tids(pid);
    assert_eq!(tids.len(), 2, "two worker threads in /proc/{pid}/task");
    let frozen = freeze(tids[1]);
    let stopped_at = Instant::now();
    let v = wait_healthz(&t, "stalled worker reported", |c, v| {
        c == 503 && v["stalledWorkers"].as_array().is_some_and(|a| a.len() == 1)
    });
    let waited = stopped_at.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "reported after {waited:?}: {v}"
    );
    assert_eq!(
        t.metric_sum("dpdk_kube_proxy_worker_stalled", ""),
        1,
        "{}",
        t.try_get("/metrics").unwrap_or_default()
    );
    assert!(
        t.log_text().contains("worker stopped making progress"),
        "{}",
        t.log_text()
    );
    // Let it go: healthy again, and it forwards.
    drop(frozen);
    wait_healthz(&t, "worker moving again", |c, v| {
        c == 200 && v.get("stalledWorkers").is_none()
    });
    assert_eq!(t.metric_sum("dpdk_kube_proxy_worker_stalled", ""), 0);
    assert!(t.log_text().contains("worker making progress again"));
    assert_spread(&clients(&t, vip, 60), "tcp", 60, &["be1", "be2", "be3"]);

    // SIGTERM: a clean, prompt exit (status 0, well inside the 3 s timeout).
    let (st, took) = terminate(&mut t, Duration::from_secs(10));
    assert!(st.success(), "exit status {st}: {}", t.log_text());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let log = t.log_text();
    assert!(log.contains("SIGTERM: stopping"), "{log}");
    assert!(log.contains("stopped codes=[0, 0]"), "{log}");

    // A restart comes back serving — with only the capabilities the
    // DaemonSet grants (deploy/README.md): NET_ADMIN, NET_RAW, IPC_LOCK.
    t.start_proxy_wrapped(
        &[
            "setpriv",
            "--bounding-set=-all,+net_admin,+net_raw,+ipc_lock",
            "--no-new-privs",
            "--",
        ],
        &[],
    );
    // CAP_NET_ADMIN 12, CAP_NET_RAW 13, CAP_IPC_LOCK 14.
    assert_eq!(cap_eff(t.proxy.as_ref().unwrap().id()), 0x7000);
    t.wait_version(1);
    assert_spread(&clients(&t, vip, 60), "tcp", 60, &["be1", "be2", "be3"]);
    assert_spread(&clients(&t, vip, 60), "udp", 60, &["be1", "be2", "be3"]);

    // A worker stuck when SIGTERM comes: the exit does not hang; it comes
    // at the shutdown timeout, with status 1 and the stuck worker named.
    let tids = worker_tids(t.proxy.as_ref().unwrap().id());
    assert_eq!(tids.len(), 2);
    let frozen = freeze(tids[0]);
    wait_healthz(&t, "stalled before SIGTERM", |c, _| c == 503);
    let (st, took) = terminate(&mut t, Duration::from_secs(10));
    drop(frozen);
    assert_eq!(st.code(), Some(1), "exit status {st}: {}", t.log_text());
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "took {took:?}"
    );
    let log = t.log_text();
    assert!(log.contains("shutdown did not finish in time"), "{log}");
    assert!(
        log.contains("stalled_workers=[0]") || log.contains("stalled_workers=[1]"),
        "{log}"
    );
}
