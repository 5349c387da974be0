//! Per-core NAT connection table.
//!
//! Each worker owns one [`SessionTable`]; nothing in it is shared. A session
//! is stored once in a slab and indexed twice in a pre-sized hash map: by the
//! original (client → frontend) tuple and by the reply (backend → client)
//! tuple. Memory is reserved up front for the configured capacity, so inserts
//! on the worker path never allocate; when the table is full new flows are
//! refused (and counted by the caller) while existing flows keep working.
//! Expiry walks a bounded number of slab slots per call, so it never stalls
//! the poll loop.
use crate::addr::{FlowKey, Proto, SockAddr};
use hashbrown::HashMap;

/// Session timeouts in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after the client's SYN, before any reply.
    pub tcp_syn: u64,
    /// TCP once the backend has answered.
    pub tcp_established: u64,
    /// TCP after a FIN in either direction.
    pub tcp_fin: u64,
    /// TCP after an RST.
    pub tcp_closed: u64,
    /// UDP flows that have only seen one direction.
    pub udp: u64,
    /// UDP flows that have seen replies ("stream").
    pub udp_stream: u64,
    /// ICMP echo.
    pub icmp: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        // conntrack-like defaults, with kube-proxy's 24h established timeout.
        Timeouts {
            tcp_syn: 60_000,
            tcp_established: 86_400_000,
            tcp_fin: 120_000,
            tcp_closed: 10_000,
            udp: 30_000,
            udp_stream: 120_000,
            icmp: 30_000,
        }
    }
}

/// TCP connection tracking state (a simplified conntrack machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// SYN seen from the client, no reply yet.
    SynSent,
    /// The backend answered.
    Established,
    /// A FIN was seen.
    Closing,
    /// An RST was seen.
    Closed,
}

/// Which way a packet travels relative to its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client → frontend (the packet is DNATed to the backend).
    Original,
    /// Backend → client (the packet's source is rewritten back to the frontend).
    Reply,
}

/// One translated connection.
#[derive(Clone, Copy, Debug)]
pub struct Session {
    /// The client endpoint (source of the original direction).
    pub client: SockAddr,
    /// The Service frontend the client addressed.
    pub frontend: SockAddr,
    /// The chosen backend.
    pub backend: SockAddr,
    /// Masquerade: the node address and port the client's source becomes
    /// (`None` for DNAT-only sessions, which preserve the client address).
    pub snat: Option<SockAddr>,
    /// Protocol.
    pub proto: Proto,
    /// TCP state (unused for other protocols).
    pub tcp: TcpState,
    /// Whether a reply has been seen.
    pub replied: bool,
    /// Expiry time (ms, worker clock).
    pub expires: u64,
    /// Table version against which the backend was last known to be valid.
    pub validated: u64,
}

impl Session {
    /// The key of the original direction.
    #[inline]
    pub fn original_key(&self) -> FlowKey {
        FlowKey {
            src: self.client.addr,
            dst: self.frontend.addr,
            sport: self.client.port,
            dport: self.frontend.port,
            proto: self.proto,
        }
    }
    /// The key of the reply direction.
    #[inline]
    pub fn reply_key(&self) -> FlowKey {
        let to = self.snat.unwrap_or(self.client);
        FlowKey {
            src: self.backend.addr,
            dst: to.addr,
            sport: self.backend.port,
            dport: to.port,
            proto: self.proto,
        }
    }
}

/// Why a session could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The configured capacity is reached.
    Full,
    /// The reply tuple is already in use by another session.
    Conflict,
}

#[derive(Clone, Copy)]
struct Slot {
    live: bool,
    session: Session,
}

/// A worker's connection table. See the module docs.
pub struct SessionTable {
    map: HashMap<FlowKey, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    capacity: usize,
    active: usize,
    cursor: usize,
    timeouts: Timeouts,
}

/// Map values carry the slot index shifted left by one and the direction in bit 0.
const REPLY_BIT: u32 = 1;

impl SessionTable {
    /// A table for up to `capacity` sessions; all memory is reserved now.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Self {
        let capacity = capacity.clamp(1, (u32::MAX >> 1) as usize);
        SessionTable {
            // Two keys per session; twice that again so that hashbrown can
            // always clean tombstones by rehashing in place instead of
            // growing (it rehashes in place while items <= capacity / 2).
            map: HashMap::with_capacity(capacity * 4),
            slots: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            capacity,
            active: 0,
            cursor: 0,
            timeouts,
        }
    }

    /// Configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Live sessions.
    pub fn len(&self) -> usize {
        self.active
    }
    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.active == 0
    }
    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Finds the session a packet with tuple `key` belongs to.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<(u32, Dir)> {
        self.map.get(key).map(|&v| {
            let dir = if v & REPLY_BIT != 0 {
                Dir::Reply
            } else {
                Dir::Original
            };
            (v >> 1, dir)
        })
    }

    /// The session in slot `idx`.
    #[inline]
    pub fn get(&self, idx: u32) -> &Session {
        &self.slots[idx as usize].session
    }

    /// Mutable access to the session in slot `idx`.
    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut Session {
        &mut self.slots[idx as usize].session
    }

    /// Inserts a new session under both keys; `session.expires` should be set.
    pub fn insert(&mut self, session: Session) -> Result<u32, InsertError> {
        if self.active >= self.capacity {
            return Err(InsertError::Full);
        }
        let ok = session.original_key();
        let rk = session.reply_key();
        if self.map.contains_key(&ok) || self.map.contains_key(&rk) || ok == rk {
            return Err(InsertError::Conflict);
        }
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Slot {
                    live: true,
                    session,
                };
                i
            }
            None => {
                // Within the reserved capacity: never reallocates.
                self.slots.push(Slot {
                    live: true,
                    session,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.map.insert(ok, idx << 1);
        self.map.insert(rk, (idx << 1) | REPLY_BIT);
        self.active += 1;
        Ok(idx)
    }

    /// Removes the session in slot `idx`.
    pub fn remove(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if !slot.live {
            return;
        }
        slot.live = false;
        let s = slot.session;
        self.map.remove(&s.original_key());
        self.map.remove(&s.reply_key());
        self.free.push(idx);
        self.active -= 1;
    }

    /// Updates state and expiry of session `idx` for a packet travelling in
    /// `dir` with TCP `flags` (0 for other protocols) at time `now` (ms).
    #[inline]
    pub fn touch(&mut self, idx: u32, dir: Dir, tcp_flags: u8, now: u64) {
        let t = self.timeouts;
        let s = &mut self.slots[idx as usize].session;
        if dir == Dir::Reply {
            s.replied = true;
        }
        s.expires = now
            + match s.proto {
                Proto::Tcp => {
                    s.tcp = next_tcp_state(s.tcp, dir, tcp_flags);
                    tcp_timeout(&t, s.tcp)
                }
                Proto::Udp => {
                    if s.replied {
                        t.udp_stream
                    } else {
                        t.udp
                    }
                }
                Proto::Icmp | Proto::Icmp6 => t.icmp,
            };
    }

    /// The initial timeout for a new session of `proto` opened with `tcp_flags`.
    pub fn initial_state(&self, proto: Proto, tcp_flags: u8, now: u64) -> (TcpState, u64) {
        let t = &self.timeouts;
        match proto {
            Proto::Tcp => {
                let st = if tcp_flags & tcp::SYN != 0 && tcp_flags & tcp::ACK == 0 {
                    TcpState::SynSent
                } else {
                    // Picked up mid-stream (conntrack's liberal pickup).
                    TcpState::Established
                };
                (st, now + tcp_timeout(t, st))
            }
            Proto::Udp => (TcpState::Closed, now + t.udp),
            Proto::Icmp | Proto::Icmp6 => (TcpState::Closed, now + t.icmp),
        }
    }

    /// Examines up to `budget` slots and removes the expired ones; returns the
    /// number removed. Call once per poll loop iteration.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        let n = self.slots.len();
        if n == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            if self.cursor >= n {
                self.cursor = 0;
            }
            let i = self.cursor;
            self.cursor += 1;
            let slot = &self.slots[i];
            if slot.live && slot.session.expires <= now {
                self.remove(i as u32);
                removed += 1;
            }
        }
        removed
    }

    /// Iterates over live sessions.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.slots.iter().filter(|s| s.live).map(|s| &s.session)
    }
}

/// TCP flag bits used by the state machine.
pub mod tcp {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

#[inline]
fn next_tcp_state(cur: TcpState, dir: Dir, flags: u8) -> TcpState {
    if flags & tcp::RST != 0 {
        return TcpState::Closed;
    }
    if flags & tcp::FIN != 0 {
        return TcpState::Closing;
    }
    match (cur, dir) {
        (TcpState::SynSent, Dir::Reply) => TcpState::Established,
        (s, _) => s,
    }
}

#[inline]
fn tcp_timeout(t: &Timeouts, s: TcpState) -> u64 {
    match s {
        TcpState::SynSent => t.tcp_syn,
        TcpState::Established => t.tcp_established,
        TcpState::Closing => t.tcp_fin,
        TcpState::Closed => t.tcp_closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Addr;

    fn sess(cport: u16, proto: Proto) -> Session {
        Session {
            client: SockAddr::new(Addr::v4([198, 18, 0, 2]), cport),
            frontend: SockAddr::new(Addr::v4([198, 18, 100, 1]), 80),
            backend: SockAddr::new(Addr::v4([198, 18, 1, 10]), 8080),
            snat: None,
            proto,
            tcp: TcpState::SynSent,
            replied: false,
            expires: 0,
            validated: 0,
        }
    }

    fn table(cap: usize) -> SessionTable {
        SessionTable::new(cap, Timeouts::default())
    }

    fn open(t: &mut SessionTable, cport: u16, proto: Proto, flags: u8, now: u64) -> u32 {
        let mut s = sess(cport, proto);
        let (st, exp) = t.initial_state(proto, flags, now);
        s.tcp = st;
        s.expires = exp;
        t.insert(s).unwrap()
    }

    #[test]
    fn both_directions_find_the_session() {
        let mut t = table(16);
        let i = open(&mut t, 40000, Proto::Tcp, tcp::SYN, 0);
        let s = *t.get(i);
        assert_eq!(t.lookup(&s.original_key()), Some((i, Dir::Original)));
        assert_eq!(t.lookup(&s.reply_key()), Some((i, Dir::Reply)));
        assert_eq!(t.lookup(&s.original_key().reversed()), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn tcp_timeouts_follow_state() {
        let to = Timeouts::default();
        let mut t = table(16);
        let i = open(&mut t, 40000, Proto::Tcp, tcp::SYN, 1000);
        assert_eq!(t.get(i).tcp, TcpState::SynSent);
        assert_eq!(t.get(i).expires, 1000 + to.tcp_syn);
        t.touch(i, Dir::Reply, tcp::SYN | tcp::ACK, 2000);
        assert_eq!(t.get(i).tcp, TcpState::Established);
        assert_eq!(t.get(i).expires, 2000 + to.tcp_established);
        t.touch(i, Dir::Original, tcp::FIN | tcp::ACK, 3000);
        assert_eq!(t.get(i).tcp, TcpState::Closing);
        assert_eq!(t.get(i).expires, 3000 + to.tcp_fin);
        t.touch(i, Dir::Reply, tcp::RST, 4000);
        assert_eq!(t.get(i).tcp, TcpState::Closed);
        assert_eq!(t.get(i).expires, 4000 + to.tcp_closed);
        // Not expired one ms before, gone at the deadline.
        assert_eq!(t.expire(4000 + to.tcp_closed - 1, 100), 0);
        assert_eq!(t.expire(4000 + to.tcp_closed, 100), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn mid_stream_pickup_is_established() {
        let mut t = table(4);
        let i = open(&mut t, 1, Proto::Tcp, tcp::ACK, 0);
        assert_eq!(t.get(i).tcp, TcpState::Established);
    }

    #[test]
    fn udp_becomes_stream_after_reply() {
        let to = Timeouts::default();
        let mut t = table(4);
        let i = open(&mut t, 5353, Proto::Udp, 0, 0);
        assert_eq!(t.get(i).expires, to.udp);
        t.touch(i, Dir::Original, 0, 10);
        assert_eq!(t.get(i).expires, 10 + to.udp);
        t.touch(i, Dir::Reply, 0, 20);
        assert_eq!(t.get(i).expires, 20 + to.udp_stream);
        let j = open(&mut t, 7, Proto::Icmp, 0, 0);
        assert_eq!(t.get(j).expires, to.icmp);
    }

    #[test]
    fn full_table_refuses_new_but_keeps_old() {
        let mut t = table(2);
        let a = open(&mut t, 1, Proto::Udp, 0, 0);
        open(&mut t, 2, Proto::Udp, 0, 0);
        let mut s = sess(3, Proto::Udp);
        s.expires = 10;
        assert_eq!(t.insert(s), Err(InsertError::Full));
        let k = t.get(a).original_key();
        assert_eq!(t.lookup(&k), Some((a, Dir::Original)));
        t.remove(a);
        assert_eq!(t.lookup(&k), None);
        assert!(t.insert(s).is_ok());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn conflicting_reply_tuple_is_refused() {
        let mut t = table(4);
        open(&mut t, 1, Proto::Tcp, tcp::SYN, 0);
        // Same client endpoint and same backend through another frontend.
        let mut s = sess(1, Proto::Tcp);
        s.frontend.port = 81;
        assert_eq!(t.insert(s), Err(InsertError::Conflict));
    }

    #[test]
    fn expiry_is_bounded_per_call() {
        let mut t = table(1000);
        for p in 0..1000 {
            open(&mut t, p, Proto::Udp, 0, 0);
        }
        let to = Timeouts::default();
        assert_eq!(t.expire(to.udp, 10), 10);
        assert_eq!(t.len(), 990);
        let mut total = 10;
        while !t.is_empty() {
            total += t.expire(to.udp, 64);
        }
        assert_eq!(total, 1000);
    }

    #[test]
    fn inserts_lookups_and_expiry_never_allocate() {
        let mut t = table(1024);
        let (n, _) = crate::dpdk::alloc_count::allocations(|| {
            for round in 0..5u64 {
                for p in 0..1024 {
                    let i = open(&mut t, p, Proto::Udp, 0, round * 1_000_000);
                    let k = t.get(i).original_key();
                    assert!(t.lookup(&k).is_some());
                }
                // Full: refused without allocating.
                assert_eq!(t.insert(sess(9999, Proto::Tcp)), Err(InsertError::Full));
                while !t.is_empty() {
                    t.expire(u64::MAX, 4096);
                }
            }
        });
        assert_eq!(n, 0, "the session table allocated on the packet path");
    }
}
