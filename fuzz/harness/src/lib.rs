//! What the fuzz targets run (issue 6, "Bad input"), on stable Rust so the
//! committed corpus is replayed by `cargo test` in CI without nightly:
//!
//! - [`packet_views`]: every packet view of `dataplane::packet` over
//!   arbitrary bytes, every getter, the IPv6 extension-header walk, SCTP
//!   chunks, NDP options, and the setters over a copy.
//! - [`pipeline`]: the whole worker pipeline (classification, NAT, hand-off,
//!   ARP/ND, ICMP errors) of two workers over a realistic table, fed a
//!   sequence of frames ([`frames`] encodes it).
//! - [`control_translate`]: the configuration parser (native and
//!   `KubeProxyConfiguration`) and the Kubernetes translation (Service,
//!   EndpointSlice, Node JSON through the watch model into a table).
//!
//! All of them may return errors; none may panic. The pipeline target also
//! checks that each frame gets one final verdict and that transmitted frames
//! go to a known port.
#![forbid(unsafe_code)]

#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub mod corpus;
mod k8s;
mod packet;
pub mod table;

pub use k8s::control_translate;
pub use k8s::translate;
pub use packet::packet_views;
pub use table::{pipeline, run_pipeline, Tally};

/// Splits a pipeline input into records: `[ctl, len_hi, len_lo, frame..]`.
/// `ctl`: bit 0-1 receiving worker, bit 2-3 port (3 is unknown), bit 4-7
/// time step. A short last record takes what is left.
pub fn frames(data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 3 {
            return None;
        }
        let ctl = rest[0];
        let len = (usize::from(rest[1]) << 8 | usize::from(rest[2])).min(rest.len() - 3);
        let f = &rest[3..3 + len];
        rest = &rest[3 + len..];
        Some((ctl, f))
    })
}

/// Encodes records for [`frames`] (the corpus generator's inverse).
pub fn encode_frames(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (ctl, f) in records {
        v.push(*ctl);
        v.extend_from_slice(&(f.len() as u16).to_be_bytes());
        v.extend_from_slice(f);
    }
    v
}
