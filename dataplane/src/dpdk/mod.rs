//! Safe wrappers over DPDK: EAL, mempools, mbufs, ports, rings, plus the
//! QSBR RCU cell the control thread publishes tables through.
//!
//! This module (with the `dpdk-sys` crate) holds every `unsafe` block of the
//! project; each one states why it is sound.
#![allow(unsafe_code)]

pub mod rcu;

#[cfg(test)]
pub(crate) mod alloc_count;

use crate::packet::MacAddr;
use crate::pipeline::PacketBuf;
use core::ffi::{c_int, c_uint, c_void, CStr};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use dpdk_sys as sys;
use std::ffi::CString;

/// Errors from DPDK calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A DPDK call failed with an errno-style code.
    #[error("{call} failed: {msg} ({code})")]
    Call {
        /// The function that failed.
        call: &'static str,
        /// Negative errno or rte_errno.
        code: i32,
        /// DPDK's message for it.
        msg: String,
    },
    /// EAL was already initialised in this process.
    #[error("EAL can be initialised only once per process")]
    AlreadyInitialised,
    /// A name contained a NUL byte.
    #[error("invalid name {0:?}")]
    BadName(String),
    /// No such port.
    #[error("no DPDK port named {0:?} (is the vdev/PCI device given to EAL?)")]
    NoSuchPort(String),
    /// Something else.
    #[error("{0}")]
    Other(String),
}

/// Result alias.
pub type Result<T> = core::result::Result<T, Error>;

fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    unsafe { CStr::from_ptr(sys::rte_strerror(code.abs())) }
        .to_string_lossy()
        .into_owned()
}

/// Turns a negative return value into an error (the one place that does).
fn check(call: &'static str, rc: c_int) -> Result<c_int> {
    if rc < 0 {
        Err(Error::Call {
            call,
            code: rc,
            msg: strerror(rc),
        })
    } else {
        Ok(rc)
    }
}

/// Error from `rte_errno` after a call that returned NULL.
fn errno_err(call: &'static str) -> Error {
    // SAFETY: reads the calling thread's rte_errno.
    let code = unsafe { sys::rte_shim_errno() };
    Error::Call {
        call,
        code: -code,
        msg: strerror(code),
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::BadName(s.to_owned()))
}

static EAL_INIT: AtomicBool = AtomicBool::new(false);

/// The initialised Environment Abstraction Layer. One per process.
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialises EAL with `args` (as on a DPDK command line, without argv[0]).
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal> {
        if EAL_INIT.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyInitialised);
        }
        let mut owned = vec![cstring("dpdk-kube-proxy")?];
        for a in args {
            owned.push(cstring(a.as_ref())?);
        }
        let mut argv: Vec<*mut core::ffi::c_char> =
            owned.iter().map(|c| c.as_ptr() as *mut _).collect();
        // SAFETY: argv points to NUL-terminated strings that outlive the call;
        // EAL may permute argv but does not keep the pointers after returning.
        let rc = unsafe { sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if rc < 0 {
            // SAFETY: reads rte_errno of this thread.
            let code = unsafe { sys::rte_shim_errno() };
            return Err(Error::Call {
                call: "rte_eal_init",
                code: -code,
                msg: strerror(code),
            });
        }
        Ok(Eal { _private: () })
    }

    /// The worker lcores (every enabled lcore but the main one), in order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut v = Vec::new();
        let mut i: c_uint = u32::MAX; // -1: start from the beginning
        loop {
            // SAFETY: pure query of EAL's lcore configuration.
            i = unsafe { sys::rte_get_next_lcore(i, 1, 0) };
            if i >= sys::RTE_MAX_LCORE {
                break;
            }
            v.push(i);
        }
        v
    }

    /// NUMA socket of an lcore.
    pub fn socket_of(&self, lcore: u32) -> u32 {
        // SAFETY: pure query.
        unsafe { sys::rte_lcore_to_socket_id(lcore) }
    }

    /// Runs `f` on worker lcore `lcore`.
    pub fn launch<F: FnOnce() -> i32 + Send + 'static>(&self, lcore: u32, f: F) -> Result<()> {
        type Job = Box<dyn FnOnce() -> i32 + Send>;
        extern "C" fn trampoline(arg: *mut c_void) -> c_int {
            // SAFETY: arg is the Box<Job> leaked below, handed over exactly once.
            let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or(-1)
        }
        let job: Box<Job> = Box::new(Box::new(f));
        let arg = Box::into_raw(job) as *mut c_void;
        // SAFETY: trampoline has the lcore_function_t signature and owns arg.
        let rc = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if rc < 0 {
            // SAFETY: launch failed, so the job was not taken: reclaim it.
            drop(unsafe { Box::from_raw(arg as *mut Job) });
        }
        check("rte_eal_remote_launch", rc).map(|_| ())
    }

    /// Waits for the job on `lcore` and returns its result.
    pub fn wait(&self, lcore: u32) -> i32 {
        wait_lcore(lcore)
    }

    /// TSC ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: pure query.
        unsafe { sys::rte_get_tsc_hz() }
    }

    /// DPDK's version string.
    pub fn version() -> String {
        // SAFETY: returns a static string.
        unsafe { CStr::from_ptr(sys::rte_version()) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: all ports and pools are released by now (they borrow nothing
        // from Eal, but the binary drops them first).
        unsafe { sys::rte_eal_cleanup() };
    }
}

/// Waits for the job on worker `lcore` (no-op if idle) and returns its result.
/// Only meaningful after EAL initialisation, which any launched job implies.
pub fn wait_lcore(lcore: u32) -> i32 {
    // SAFETY: blocks until the lcore is idle again; harmless if it already is.
    unsafe { sys::rte_eal_wait_lcore(lcore) }
}

/// Reads the TSC.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions.
    unsafe { sys::rte_shim_rdtsc() }
}

/// Prefetches the cache line holding `*p` for reading (a hint: pure Rust,
/// no DPDK call, so the unit-tested tables can use it).
#[inline(always)]
pub fn prefetch_read<T>(p: &T) {
    prefetch_addr(p as *const T as *const u8);
}

/// Prefetches the first line of `m`'s packet data, inline (a call into the
/// C shim per packet cost the call and the registers it clobbers).
#[inline(always)]
fn prefetch_data(m: &sys::rte_mbuf) {
    prefetch_addr((m.buf_addr as *const u8).wrapping_add(m.data_off as usize));
}

/// Prefetches the cache line holding address `p` for reading. Safe: a
/// prefetch is a hint that never dereferences or faults, whatever `p` is.
#[inline(always)]
pub fn prefetch_addr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: _mm_prefetch never faults and reads nothing architecturally.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A CPU pause hint for spin loops.
#[inline(always)]
pub fn pause() {
    // SAFETY: no preconditions.
    unsafe { sys::rte_shim_pause() }
}

/// A packet-buffer pool.
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
}

impl core::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mempool")
            .field("in_use", &self.in_use())
            .field("available", &self.available())
            .finish()
    }
}

// SAFETY: rte_mempool is multi-thread safe (per-lcore caches, lock-free ring).
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pktmbuf pool of `n` buffers of `data_room` bytes (plus headroom) on `socket`.
    pub fn new(name: &str, n: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool> {
        let cname = cstring(name)?;
        // SAFETY: cname is a valid C string; the call fails cleanly (NULL + rte_errno) without EAL.
        let p =
            unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket) };
        NonNull::new(p)
            .map(|ptr| Mempool { ptr })
            .ok_or_else(|| errno_err("rte_pktmbuf_pool_create"))
    }

    /// Allocates one mbuf.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid for self's lifetime.
        NonNull::new(unsafe { sys::rte_shim_pktmbuf_alloc(self.ptr.as_ptr()) }).map(Mbuf)
    }

    /// Buffers taken out of the pool now (in rx/tx rings, hand-off rings,
    /// held packets; buffers in per-lcore caches count as free). Control
    /// rate: it walks the lcore caches.
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is valid for self's lifetime; read-only.
        unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// Buffers free now (in the pool and the per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: as above.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    fn raw(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool was created by us; callers drop ports (which hold
        // mbufs) before the pool.
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}

/// An owned packet buffer, freed on drop.
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one holder at a time; moving it between
// threads is how DPDK hands packets over.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `p` must be a valid mbuf that nothing else owns.
    #[inline(always)]
    pub unsafe fn from_raw(p: *mut sys::rte_mbuf) -> Mbuf {
        Mbuf(NonNull::new_unchecked(p))
    }
    /// Gives up ownership.
    #[inline(always)]
    pub fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        core::mem::forget(self);
        p
    }
    #[inline(always)]
    fn m(&self) -> &sys::rte_mbuf {
        // SAFETY: we own a valid mbuf.
        unsafe { self.0.as_ref() }
    }
    #[inline(always)]
    fn m_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: we own a valid mbuf exclusively.
        unsafe { self.0.as_mut() }
    }
    /// The port the mbuf was received on.
    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }
    /// Sets the port field (used to remember the ingress port across hand-offs).
    #[inline]
    pub fn set_port(&mut self, p: u16) {
        self.m_mut().port = p;
    }
    /// Number of segments.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.m().nb_segs
    }
    /// Packet length.
    #[inline]
    pub fn len(&self) -> usize {
        self.m().data_len as usize
    }
    /// True when empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Room after the data.
    pub fn tailroom(&self) -> usize {
        let m = self.m();
        m.buf_len as usize - m.data_off as usize - m.data_len as usize
    }
    /// Sets the data length (single segment), clamped to the buffer.
    pub fn set_len(&mut self, len: usize) {
        let room = self.len() + self.tailroom();
        let len = len.min(room) as u16;
        let m = self.m_mut();
        m.data_len = len;
        m.pkt_len = len as u32;
    }
    /// Prefetches the packet data.
    #[inline(always)]
    pub fn prefetch(&self) {
        prefetch_data(self.m());
    }
}

impl PacketBuf for Mbuf {
    #[inline(always)]
    fn rx_ip_checksum(&self) -> crate::pipeline::RxChecksum {
        use crate::pipeline::RxChecksum;
        match self.m().ol_flags & u64::from(sys::RTE_MBUF_F_RX_IP_CKSUM_MASK) {
            f if f == u64::from(sys::RTE_MBUF_F_RX_IP_CKSUM_GOOD) => RxChecksum::Good,
            f if f == u64::from(sys::RTE_MBUF_F_RX_IP_CKSUM_BAD) => RxChecksum::Bad,
            f if f == u64::from(sys::RTE_MBUF_F_RX_IP_CKSUM_NONE) => RxChecksum::None,
            _ => RxChecksum::Unknown,
        }
    }
    #[inline(always)]
    fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: [data_off, data_off + data_len) lies inside the mbuf's buffer, which we own.
        unsafe {
            core::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as above, and we hold the only reference.
        unsafe {
            core::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        let m = self.m_mut();
        if n > m.data_off as usize {
            return false;
        }
        m.data_off -= n as u16;
        m.data_len += n as u16;
        m.pkt_len += n as u32;
        true
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        let m = self.m_mut();
        if n > m.data_len as usize {
            return false;
        }
        m.data_off += n as u16;
        m.data_len -= n as u16;
        m.pkt_len -= n as u32;
        true
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        let m = self.m_mut();
        if len < m.data_len as usize {
            m.data_len = len as u16;
            m.pkt_len = len as u32;
        }
    }
    #[inline]
    fn extend(&mut self, n: usize) -> bool {
        if n > self.tailroom() {
            return false;
        }
        let m = self.m_mut();
        m.data_len += n as u16;
        m.pkt_len += n as u32;
        true
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is returned to its pool.
        unsafe { sys::rte_shim_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Maximum burst size.
pub const BURST: usize = 32;

/// A received burst; yields owned mbufs.
pub struct RxBurst {
    ptrs: [*mut sys::rte_mbuf; BURST],
    n: usize,
    next: usize,
}

impl Default for RxBurst {
    fn default() -> Self {
        RxBurst {
            ptrs: [core::ptr::null_mut(); BURST],
            n: 0,
            next: 0,
        }
    }
}

impl RxBurst {
    /// Packets left in the burst.
    pub fn remaining(&self) -> usize {
        self.n - self.next
    }

    /// The bytes of the `i`-th packet not yet taken (empty past
    /// `remaining()`), for a burst-wide pre-pass before the packets are handled.
    #[inline]
    pub fn peek(&self, i: usize) -> &[u8] {
        let k = self.next + i;
        if k >= self.n {
            return &[];
        }
        // SAFETY: ptrs[k] is a valid single-owner mbuf of this burst, not yet
        // yielded; the slice lives as long as &self, during which it cannot be
        // taken (next() needs &mut self).
        unsafe {
            let m = &*self.ptrs[k];
            core::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// Prefetches the first cache line of every packet left in the burst.
    #[inline]
    pub fn prefetch_all(&self) {
        for &p in &self.ptrs[self.next..self.n] {
            // SAFETY: p is a valid mbuf of this burst (read for its data
            // address); the prefetch itself never faults.
            unsafe { prefetch_data(&*p) }
        }
    }
}

impl Iterator for RxBurst {
    type Item = Mbuf;
    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next >= self.n {
            return None;
        }
        let p = self.ptrs[self.next];
        self.next += 1;
        if self.next < self.n {
            // SAFETY: ptrs[next] is a valid mbuf received in this burst; prefetch never faults.
            unsafe { prefetch_data(&*self.ptrs[self.next]) }
        }
        // SAFETY: each pointer in [0, n) is a valid mbuf we own, yielded once.
        Some(unsafe { Mbuf::from_raw(p) })
    }
}

impl Drop for RxBurst {
    fn drop(&mut self) {
        for p in self.by_ref() {
            drop(p);
        }
    }
}

/// Mbufs waiting to be sent on one queue.
pub struct TxBuffer {
    ptrs: [*mut sys::rte_mbuf; BURST],
    n: usize,
}

// SAFETY: holds owned mbufs only.
unsafe impl Send for TxBuffer {}

impl Default for TxBuffer {
    fn default() -> Self {
        TxBuffer {
            ptrs: [core::ptr::null_mut(); BURST],
            n: 0,
        }
    }
}

impl TxBuffer {
    /// Buffered packets.
    pub fn len(&self) -> usize {
        self.n
    }
    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// True when full (flush before pushing).
    pub fn is_full(&self) -> bool {
        self.n == BURST
    }
    /// Buffers a packet; the caller flushes when full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) {
        debug_assert!(self.n < BURST);
        if self.n < BURST {
            self.ptrs[self.n] = m.into_raw();
            self.n += 1;
        }
    }
    /// Sends the buffered packets on `port`/`queue`; frees what the queue did
    /// not take. Returns `(sent, bytes_sent, dropped)`.
    #[inline]
    pub fn flush(&mut self, port: u16, queue: u16) -> (usize, u64, usize) {
        if self.n == 0 {
            return (0, 0, 0);
        }
        let mut bytes = 0u64;
        for p in &self.ptrs[..self.n] {
            // SAFETY: valid owned mbufs.
            bytes += unsafe { (**p).pkt_len } as u64;
        }
        // SAFETY: ptrs[..n] are valid mbufs; tx_burst takes ownership of the first `sent`.
        let sent =
            unsafe { sys::rte_shim_tx_burst(port, queue, self.ptrs.as_mut_ptr(), self.n as u16) }
                as usize;
        for p in &self.ptrs[sent..self.n] {
            // SAFETY: not taken by the driver: still ours to free.
            bytes -= unsafe { (**p).pkt_len } as u64;
            unsafe { sys::rte_shim_pktmbuf_free(*p) };
        }
        let dropped = self.n - sent;
        self.n = 0;
        (sent, bytes, dropped)
    }
    /// Enqueues the buffered packets on `ring`; frees the rest. Returns `(enqueued, dropped)`.
    #[inline]
    pub fn flush_ring(&mut self, ring: &Ring) -> (usize, usize) {
        if self.n == 0 {
            return (0, 0);
        }
        // SAFETY: ring is valid; pointers are owned mbufs, handed over on success.
        let done = unsafe {
            sys::rte_shim_ring_sp_enqueue_burst(
                ring.raw(),
                self.ptrs.as_ptr() as *const *mut c_void,
                self.n as c_uint,
            )
        } as usize;
        for p in &self.ptrs[done..self.n] {
            // SAFETY: not enqueued: still ours.
            unsafe { sys::rte_shim_pktmbuf_free(*p) };
        }
        let dropped = self.n - done;
        self.n = 0;
        (done, dropped)
    }
}

impl Drop for TxBuffer {
    fn drop(&mut self) {
        for p in &self.ptrs[..self.n] {
            // SAFETY: owned mbufs.
            unsafe { sys::rte_shim_pktmbuf_free(*p) };
        }
    }
}

/// A DPDK ring of pointers.
pub struct Ring {
    ptr: NonNull<sys::rte_ring>,
}

// SAFETY: rte_ring is designed for cross-thread use; SP/SC rings are used by
// exactly one producer and one consumer thread by construction (see worker).
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Creates a single-producer single-consumer ring of `count` (power of two) slots.
    pub fn new(name: &str, count: u32, socket: i32) -> Result<Ring> {
        let cname = cstring(name)?;
        let flags = sys::RING_F_SP_ENQ | sys::RING_F_SC_DEQ;
        // SAFETY: valid C string; EAL initialised.
        let p = unsafe { sys::rte_ring_create(cname.as_ptr(), count, socket, flags) };
        NonNull::new(p)
            .map(|ptr| Ring { ptr })
            .ok_or_else(|| errno_err("rte_ring_create"))
    }
    fn raw(&self) -> *mut sys::rte_ring {
        self.ptr.as_ptr()
    }
    /// Dequeues up to `BURST` mbufs.
    #[inline]
    pub fn dequeue(&self, out: &mut RxBurst) -> usize {
        // SAFETY: the ring only ever carries owned mbuf pointers.
        let n = unsafe {
            sys::rte_shim_ring_sc_dequeue_burst(
                self.raw(),
                out.ptrs.as_mut_ptr() as *mut *mut c_void,
                BURST as c_uint,
            )
        } as usize;
        out.n = n;
        out.next = 0;
        n
    }
    /// Enqueues one mbuf; gives it back when the ring is full.
    pub fn enqueue(&self, m: Mbuf) -> core::result::Result<(), Mbuf> {
        let p = m.into_raw();
        let arr = [p as *mut c_void];
        // SAFETY: ring carries owned mbufs; on success ownership passes to the ring.
        let n = unsafe { sys::rte_shim_ring_sp_enqueue_burst(self.raw(), arr.as_ptr(), 1) };
        if n == 1 {
            Ok(())
        } else {
            // SAFETY: not enqueued: still ours.
            Err(unsafe { Mbuf::from_raw(p) })
        }
    }
    /// Entries in the ring.
    pub fn count(&self) -> u32 {
        // SAFETY: read-only query.
        unsafe { sys::rte_shim_ring_count(self.raw()) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let mut b = RxBurst::default();
        while self.dequeue(&mut b) > 0 {
            for m in b.by_ref() {
                drop(m);
            }
        }
        // SAFETY: created by us, no longer used by any thread.
        unsafe { sys::rte_ring_free(self.raw()) }
    }
}

/// `RTE_ETH_RX_OFFLOAD_IPV4_CKSUM` (`RTE_BIT64(1)`, a function-like macro
/// bindgen does not expand).
const RX_OFFLOAD_IPV4_CKSUM: u64 = 1 << 1;

/// What a port can do, as reported by its driver.
#[derive(Clone, Debug)]
pub struct PortCaps {
    /// Driver name.
    pub driver: String,
    /// Max rx queues.
    pub max_rx_queues: u16,
    /// Max tx queues.
    pub max_tx_queues: u16,
    /// RSS hash functions supported.
    pub rss_offloads: u64,
    /// Whether RSS was enabled.
    pub rss_enabled: bool,
    /// Receive offloads the driver reports (`rx_offload_capa`).
    pub rx_offloads: u64,
    /// Whether IPv4 header checksum checking on receive was enabled (the
    /// driver reports it): the fast path then trusts the mbufs'
    /// `RTE_MBUF_F_RX_IP_CKSUM_GOOD` flags.
    pub rx_ip_checksum: bool,
    /// The host kernel interface the port is bound to (TAP, af_packet), 0
    /// if none.
    pub if_index: u32,
}

/// Port queue sizing.
#[derive(Clone, Copy, Debug)]
pub struct PortConfig {
    /// Rx and tx queues (one per worker).
    pub queues: u16,
    /// Rx descriptors per queue.
    pub rx_desc: u16,
    /// Tx descriptors per queue.
    pub tx_desc: u16,
    /// Enable promiscuous mode.
    pub promiscuous: bool,
}

/// A port's driver counters (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Packets the NIC dropped because rx queues were full.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// Rx mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// An ethdev port.
#[derive(Debug)]
pub struct Port {
    id: u16,
    started: bool,
}

/// RSS over IPv4/IPv6 and their TCP/UDP ports (RTE_ETH_RSS_IP | TCP | UDP bits).
const RSS_WANT: u64 = (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 7)
    | (1 << 8)
    | (1 << 9)
    | (1 << 10)
    | (1 << 11)
    | (1 << 13);

impl Port {
    /// Finds a port by device name (the vdev name, e.g. `net_af_packet0`, or a PCI address).
    pub fn by_name(name: &str) -> Result<Port> {
        let cname = cstring(name)?;
        let mut id = 0u16;
        // SAFETY: valid C string and out pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc < 0 {
            return Err(Error::NoSuchPort(name.to_owned()));
        }
        Ok(Port { id, started: false })
    }

    /// Creates a port whose queues are DPDK rings (ring PMD), for tests and benchmarks.
    pub fn from_rings(name: &str, rx: &[&Ring], tx: &[&Ring], socket: u32) -> Result<Port> {
        let cname = cstring(name)?;
        let rxp: Vec<*mut sys::rte_ring> = rx.iter().map(|r| r.raw()).collect();
        let txp: Vec<*mut sys::rte_ring> = tx.iter().map(|r| r.raw()).collect();
        // SAFETY: arrays of valid rings; the rings must outlive the port (caller keeps them).
        let rc = unsafe {
            sys::rte_eth_from_rings(
                cname.as_ptr(),
                rxp.as_ptr(),
                rxp.len() as c_uint,
                txp.as_ptr(),
                txp.len() as c_uint,
                socket,
            )
        };
        if rc < 0 {
            return Err(errno_err("rte_eth_from_rings"));
        }
        Ok(Port {
            id: rc as u16,
            started: false,
        })
    }

    /// The port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The port's NUMA socket (0 when unknown).
    pub fn socket(&self) -> i32 {
        // SAFETY: pure query.
        unsafe { sys::rte_eth_dev_socket_id(self.id) }.max(0)
    }

    /// Driver capabilities.
    pub fn caps(&self) -> Result<PortCaps> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid out pointer.
        check("rte_eth_dev_info_get", unsafe {
            sys::rte_eth_dev_info_get(self.id, &mut info)
        })?;
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: driver names are static C strings.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(PortCaps {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads,
            rss_enabled: false,
            rx_offloads: info.rx_offload_capa,
            rx_ip_checksum: false,
            if_index: info.if_index,
        })
    }

    /// Configures queues (RSS when the device supports it), sets up every
    /// queue with `pool`, and starts the port.
    pub fn configure_and_start(&mut self, cfg: &PortConfig, pool: &Mempool) -> Result<PortCaps> {
        let mut caps = self.caps()?;
        let q = cfg.queues.max(1);
        if q > caps.max_rx_queues || q > caps.max_tx_queues {
            return Err(Error::Other(format!(
                "port {} ({}) supports {} rx / {} tx queues, {} workers need {q}",
                self.id, caps.driver, caps.max_rx_queues, caps.max_tx_queues, q
            )));
        }
        let mut conf = sys::rte_eth_conf::default();
        let rss_hf = caps.rss_offloads & RSS_WANT;
        if q > 1 && rss_hf != 0 {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            caps.rss_enabled = true;
        }
        // Receive: IPv4 header checksum checking when the driver offers it
        // (the fast path skips its own check of packets flagged good).
        // Nothing else: checksums are updated in software, so the port
        // works on every PMD.
        if caps.rx_offloads & RX_OFFLOAD_IPV4_CKSUM != 0 {
            conf.rxmode.offloads |= RX_OFFLOAD_IPV4_CKSUM;
            caps.rx_ip_checksum = true;
        }
        // SAFETY: conf is a valid, fully initialised struct.
        check("rte_eth_dev_configure", unsafe {
            sys::rte_eth_dev_configure(self.id, q, q, &conf)
        })?;
        let (mut rxd, mut txd) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid out pointers.
        check("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut rxd, &mut txd)
        })?;
        let socket = self.socket() as c_uint;
        for i in 0..q {
            // SAFETY: NULL conf = driver defaults; pool is valid for the port's life.
            check("rte_eth_rx_queue_setup", unsafe {
                sys::rte_eth_rx_queue_setup(self.id, i, rxd, socket, core::ptr::null(), pool.raw())
            })?;
            // SAFETY: NULL conf = driver defaults.
            check("rte_eth_tx_queue_setup", unsafe {
                sys::rte_eth_tx_queue_setup(self.id, i, txd, socket, core::ptr::null())
            })?;
        }
        if cfg.promiscuous {
            // Not every PMD supports it; a failure is not fatal.
            // SAFETY: plain call.
            let _ = unsafe { sys::rte_eth_promiscuous_enable(self.id) };
        }
        // SAFETY: plain call.
        check("rte_eth_dev_start", unsafe {
            sys::rte_eth_dev_start(self.id)
        })?;
        self.started = true;
        Ok(caps)
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<MacAddr> {
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: valid out pointer.
        check("rte_eth_macaddr_get", unsafe {
            sys::rte_eth_macaddr_get(self.id, &mut a)
        })?;
        Ok(MacAddr(a.addr_bytes))
    }

    /// Sets the port's MAC address (`rte_eth_dev_default_mac_addr_set`; on
    /// a TAP port this is the kernel interface's address).
    pub fn set_mac(&mut self, mac: MacAddr) -> Result<()> {
        let mut a = sys::rte_ether_addr { addr_bytes: mac.0 };
        // SAFETY: valid pointer to an initialised address, read during the call.
        check("rte_eth_dev_default_mac_addr_set", unsafe {
            sys::rte_eth_dev_default_mac_addr_set(self.id, &mut a)
        })
        .map(|_| ())
    }

    /// Sets the port's MTU (`rte_eth_dev_set_mtu`; on a TAP port this is the
    /// kernel interface's MTU). The port must be configured.
    pub fn set_mtu(&mut self, mtu: u16) -> Result<()> {
        // SAFETY: plain call on our port.
        check("rte_eth_dev_set_mtu", unsafe {
            sys::rte_eth_dev_set_mtu(self.id, mtu)
        })
        .map(|_| ())
    }

    /// Receives up to `BURST` packets from `queue` into `out`.
    #[inline]
    pub fn rx_burst(&self, queue: u16, out: &mut RxBurst) -> usize {
        rx_burst(self.id, queue, out)
    }

    /// Hardware/driver statistics.
    pub fn stats(&self) -> Result<PortCounters> {
        port_counters(self.id)
    }
}

/// Driver statistics of port `id` (safe to call from any thread).
pub fn port_counters(id: u16) -> Result<PortCounters> {
    let mut s = sys::rte_eth_stats::default();
    // SAFETY: valid out pointer; ethdev stats reads are thread-safe.
    check("rte_eth_stats_get", unsafe {
        sys::rte_eth_stats_get(id, &mut s)
    })?;
    Ok(PortCounters {
        ipackets: s.ipackets,
        opackets: s.opackets,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    })
}

impl Port {
    /// Stops and closes the port.
    pub fn close(&mut self) {
        if self.started {
            // SAFETY: plain calls on our port.
            unsafe {
                sys::rte_eth_dev_stop(self.id);
                sys::rte_eth_dev_close(self.id);
            }
            self.started = false;
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.close();
    }
}

/// Receives up to `BURST` packets from `port`/`queue` into `out`.
#[inline]
pub fn rx_burst(port: u16, queue: u16, out: &mut RxBurst) -> usize {
    // SAFETY: out.ptrs has room for BURST pointers; each filled one is an owned mbuf.
    let n = unsafe { sys::rte_shim_rx_burst(port, queue, out.ptrs.as_mut_ptr(), BURST as u16) }
        as usize;
    out.n = n;
    out.next = 0;
    if n > 0 {
        // SAFETY: ptrs[0] is valid.
        unsafe { prefetch_data(&*out.ptrs[0]) }
    }
    n
}
