//! `healthCheckNodePort` servers: for every `externalTrafficPolicy: Local`
//! LoadBalancer Service, an HTTP server on its health-check port that tells
//! the load balancer whether this node has ready endpoints, with kube-proxy's
//! answer (`pkg/proxy/healthcheck/service_health.go`): status 200 when the
//! node has at least one and the proxy is healthy, else 503, and the body
//!
//! ```json
//! {"service":{"namespace":"ns","name":"svc"},"localEndpoints":1,"serviceProxyHealthy":true}
//! ```
//!
//! The servers listen on kernel sockets of the node (like kube-proxy's).
use crate::watch::HealthCheck;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tokio::task::JoinHandle;

type Shared = Arc<RwLock<BTreeMap<u16, HealthCheck>>>;

/// The running health-check servers.
pub struct HealthServers {
    bind: IpAddr,
    checks: Shared,
    servers: HashMap<u16, JoinHandle<()>>,
    proxy_healthy: Arc<AtomicBool>,
    /// Ports that could not be bound (retried on the next update).
    pub bind_errors: u64,
}

impl HealthServers {
    /// Servers will listen on `bind` (e.g. `0.0.0.0`); `proxy_healthy` is the
    /// proxy's own health (`serviceProxyHealthy`).
    pub fn new(bind: IpAddr, proxy_healthy: Arc<AtomicBool>) -> Self {
        HealthServers {
            bind,
            checks: Arc::default(),
            servers: HashMap::new(),
            proxy_healthy,
            bind_errors: 0,
        }
    }

    /// Serves exactly `checks`: starts servers for new ports, stops those of
    /// ports no longer wanted, and updates the counts the others answer with.
    pub async fn update(&mut self, checks: &BTreeMap<u16, HealthCheck>) {
        *self.checks.write().unwrap_or_else(|e| e.into_inner()) = checks.clone();
        self.servers.retain(|port, h| {
            let keep = checks.contains_key(port) && !h.is_finished();
            if !keep {
                h.abort();
            }
            keep
        });
        for port in checks.keys() {
            if self.servers.contains_key(port) {
                continue;
            }
            let addr = SocketAddr::new(self.bind, *port);
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    let checks = self.checks.clone();
                    let healthy = self.proxy_healthy.clone();
                    let port = *port;
                    let app = axum::Router::new().fallback(move || {
                        let r = answer(&checks, port, healthy.load(Ordering::Relaxed));
                        async move { r }
                    });
                    self.servers.insert(
                        port,
                        tokio::spawn(async move {
                            if let Err(e) = axum::serve(l, app).await {
                                tracing::warn!("health check server {addr}: {e}");
                            }
                        }),
                    );
                    tracing::info!(%addr, "health check node port serving");
                }
                Err(e) => {
                    self.bind_errors += 1;
                    tracing::warn!("health check node port {addr}: {e}");
                }
            }
        }
    }

    /// Ports being served.
    pub fn ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.servers.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for h in self.servers.values() {
            h.abort();
        }
    }
}

fn answer(checks: &Shared, port: u16, proxy_healthy: bool) -> Response {
    let g = checks.read().unwrap_or_else(|e| e.into_inner());
    let Some(c) = g.get(&port) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = serde_json::json!({
        "service": {"namespace": c.namespace, "name": c.name},
        "localEndpoints": c.local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    });
    let code = if c.local_endpoints > 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(port: u16) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn serves_counts_and_follows_updates() {
        let healthy = Arc::new(AtomicBool::new(true));
        let mut hs = HealthServers::new("127.0.0.1".parse().unwrap(), healthy.clone());
        let port = free_port();
        let mut checks = BTreeMap::new();
        checks.insert(
            port,
            HealthCheck {
                namespace: "ns".into(),
                name: "web".into(),
                local_endpoints: 2,
            },
        );
        hs.update(&checks).await;
        assert_eq!(hs.ports(), [port]);
        let r = get(port).await.unwrap();
        assert!(r.starts_with("HTTP/1.0 200"), "{r}");
        assert!(r.contains("x-content-type-options: nosniff"), "{r}");
        let body: serde_json::Value =
            serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"service": {"namespace": "ns", "name": "web"},
                               "localEndpoints": 2, "serviceProxyHealthy": true})
        );
        // No local endpoint: 503.
        checks.get_mut(&port).unwrap().local_endpoints = 0;
        hs.update(&checks).await;
        let r = get(port).await.unwrap();
        assert!(r.starts_with("HTTP/1.0 503"), "{r}");
        assert!(r.contains(r#""localEndpoints":0"#), "{r}");
        // Proxy unhealthy: 503 even with endpoints.
        checks.get_mut(&port).unwrap().local_endpoints = 1;
        hs.update(&checks).await;
        healthy.store(false, Ordering::Relaxed);
        let r = get(port).await.unwrap();
        assert!(r.starts_with("HTTP/1.0 503"), "{r}");
        assert!(r.contains(r#""serviceProxyHealthy":false"#), "{r}");
        // Removed: the port closes.
        hs.update(&BTreeMap::new()).await;
        assert!(hs.ports().is_empty());
        let mut closed = false;
        for _ in 0..100 {
            if get(port).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(closed, "health check port still answers after removal");
    }

    #[tokio::test]
    async fn a_port_in_use_is_counted_not_fatal() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut hs = HealthServers::new(
            "127.0.0.1".parse().unwrap(),
            Arc::new(AtomicBool::new(true)),
        );
        let mut checks = BTreeMap::new();
        checks.insert(
            port,
            HealthCheck {
                namespace: "ns".into(),
                name: "web".into(),
                local_endpoints: 1,
            },
        );
        hs.update(&checks).await;
        assert_eq!(hs.bind_errors, 1);
        assert!(hs.ports().is_empty());
        drop(taken);
        hs.update(&checks).await;
        assert_eq!(hs.ports(), [port]);
    }
}
