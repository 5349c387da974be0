//! The control side: configuration, building service tables, publishing them
//! to the workers (RCU), and the admin HTTP server.
#![deny(unsafe_code)] // one exception: the bpf(2) calls of `beside`

pub mod admin;
pub mod beside;
pub mod config;
pub mod duration;
pub mod healthcheck;
pub mod heartbeat;
pub mod k8s;
pub mod kernel_routes;
pub mod kubeproxy;
pub mod publisher;
pub mod watch;

/// Errors of the control crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is not valid YAML or has unknown/mistyped fields.
    #[error("{path}: {msg}")]
    Parse {
        /// The file.
        path: String,
        /// serde's message (names the field and position).
        msg: String,
    },
    /// A value is out of range or inconsistent; names the field.
    #[error("invalid config: {field}: {msg}")]
    Invalid {
        /// Dotted path of the offending field.
        field: String,
        /// What is wrong.
        msg: String,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
