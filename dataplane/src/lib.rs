//! The dataplane: zero-copy packet views, stateful Service NAT with per-core
//! connection tables, Maglev backend selection, and the DPDK poll-mode worker.
//!
//! Everything outside [`dpdk`] is safe Rust and testable without DPDK.
#![deny(unsafe_code)]

pub mod addr;
pub mod affinity;
pub mod dpdk;
pub mod lbcount;
pub mod maglev;
pub mod neigh;
pub mod packet;
pub mod pipeline;
pub mod session;
pub mod stats;
pub mod table;
pub mod worker;
