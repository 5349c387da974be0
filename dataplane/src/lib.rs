//! The dataplane: zero-copy packet views, stateful Service NAT with per-core
//! connection tables, Maglev backend selection, and the DPDK poll-mode worker.
//!
//! Everything outside [`dpdk`] and [`hugemem`] (the tables' memory
//! mapping) is safe Rust, and everything but [`dpdk`] is testable without DPDK.
#![deny(unsafe_code)]

pub mod addr;
pub mod affinity;
pub mod dpdk;
pub mod hugemem;
pub mod lbcount;
pub mod maglev;
pub mod neigh;
pub mod packet;
pub mod pipeline;
pub mod session;
pub mod stats;
pub mod table;
pub mod worker;
