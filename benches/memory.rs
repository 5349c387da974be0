//! Memory floor of the session table: what 1M concurrent flows cost over
//! 60,000 with nothing but the table's own memory traffic (issue 5, target 2).
//!
//! ```sh
//! cargo bench --bench memory -- [--quick] [--out FILE] [--cpu N]
//! ```
//!
//! No DPDK, no packets: every scenario walks the flows of a table in a
//! fixed-seed random order, in bursts of 32, with the worker's cross-burst
//! pipeline (`dataplane::worker`): a burst's index lines are prefetched one
//! burst before it is handled, each element's record is prefetched 8
//! elements before it is used. Cycles per element come from the TSC.
//!
//! * `table`: the product's [`SessionTable`], filled with one UDP session
//!   per flow at the replay bench's capacity (1.25 × flows + 1,024): step 1
//!   ([`SessionTable::prefetch`] of the tuple's hash), steps 2 and 2b
//!   ([`SessionTable::prefetch_session`], [`SessionTable::prefetch_session_alt`])
//!   and the fast path's session work ([`SessionTable::confirm_candidate`],
//!   [`SessionTable::touch_established`]) — the session side of an
//!   established packet without parse, rewrite or I/O. The tuples are read
//!   in order from an array already shuffled (as packets arrive: nothing
//!   random to fetch for them). Sessions are stored as 64-byte slots (one
//!   line; 88-byte sessions spanning 2.25 lines on average before step 31
//!   in BENCHMARKS.md, the shape `raw88` models).
//! * `raw88`, `raw80`, `raw64`: the same memory traffic on plain arrays of
//!   the same shapes with no table logic: an index of 64-byte lines (as many
//!   as the table's buckets), a place in one of which names the element's
//!   record, and records of 88 bytes (the session's size before step 31:
//!   2.25 lines on average), 80 (two lines, always) or 64 (one aligned
//!   line, the slot's size now); per element
//!   the index line is read (a burst after
//!   its prefetch), the record's lines prefetched, and 8 elements later one
//!   word of the record read and one written (the expiry).
//!
//! The difference 1M − 60k of `raw88` is what the platform charges for the
//! table's lines coming from DRAM instead of the last-level cache under
//! ideal prefetching; `raw80` and `raw64` show what a quarter of a line and
//! one line fewer per element would save; `table` against `raw88` is what
//! the table's logic adds to that.
use std::time::Instant;

mod common;
use common::permutation;

use dataplane::addr::{fmix64, Addr, FlowKey, Proto, SockAddr};
use dataplane::dpdk::{prefetch_addr, prefetch_read, rdtsc};
use dataplane::hugemem::HugeVec;
use dataplane::session::{
    key_hash, SctpState, Session, SessionTable, TcpState, Timeouts, NO_CANDIDATE,
};

/// Elements per burst (the worker's `dpdk::BURST`).
const BURST: usize = 32;
/// How far ahead a record is prefetched (the worker's `SESSION_AHEAD`).
const AHEAD: usize = 8;
/// How far ahead step 2b runs (the worker's `ALT_AHEAD`).
const ALT_AHEAD: usize = 6;

/// Flow `i`'s session: client 198.18.x.y:port, VIP 198.18.128.z:80,
/// backend 198.19.x.y:8080 (the replay bench's address plan).
fn session(i: u32) -> Session {
    let c = i / 50_000;
    let client = SockAddr {
        addr: Addr::v4([198, 18, (c >> 8) as u8 & 0x7f, c as u8]),
        port: 10_000 + (i % 50_000) as u16,
    };
    let svc = i % 16;
    let be = i % 128;
    Session {
        client,
        frontend: SockAddr {
            addr: Addr::v4([198, 18, 128, svc as u8]),
            port: 80,
        },
        backend: SockAddr {
            addr: Addr::v4([198, 19, 1, be as u8]),
            port: 8080,
        },
        snat: None,
        proto: Proto::Udp,
        tcp: TcpState::Established,
        sctp: SctpState::Closed,
        replied: false,
        expires: 1,
        validated: 0,
    }
}

/// Flow `i`'s original-direction tuple (`session(i).original_key()`).
#[inline(always)]
fn key_of(i: u32) -> FlowKey {
    let c = i / 50_000;
    FlowKey {
        src: Addr::v4([198, 18, (c >> 8) as u8 & 0x7f, c as u8]),
        dst: Addr::v4([198, 18, 128, (i % 16) as u8]),
        sport: 10_000 + (i % 50_000) as u16,
        dport: 80,
        proto: Proto::Udp,
    }
}

/// One measured scenario.
struct Row {
    scenario: &'static str,
    flows: usize,
    elements: u64,
    cycles_per_element: f64,
    table_bytes: usize,
    huge_page_bytes: usize,
}

fn cycles_per(elements: u64, f: impl FnOnce()) -> f64 {
    let t0 = rdtsc();
    f();
    (rdtsc() - t0) as f64 / elements as f64
}

/// The `table` scenario: `passes` walks over `n` flows.
fn run_table(n: usize, passes: usize) -> Row {
    let cap = n + n / 4 + 1024;
    let mut t = SessionTable::new(cap, Timeouts::default());
    for i in 0..n as u32 {
        t.insert(session(i)).expect("insert");
    }
    // The flows in packet order; each tuple is built from its flow number
    // when used (an array of 1M tuples would stream 40 MB more from DRAM
    // per pass: the packets' bytes, which are in the mbufs in the worker).
    let order = permutation(n as u32, 7);
    let key = |b: usize, i: usize| key_of(order[b * BURST + i]);
    let bursts = n / BURST;
    let hashes_of = |b: usize, out: &mut [u64; BURST], t: &SessionTable| {
        for (i, h) in out.iter_mut().enumerate() {
            *h = key_hash(&key(b, i));
            t.prefetch(*h);
        }
    };
    let mut found = 0u64;
    let mut now = 2u64;
    let pass = |t: &mut SessionTable, found: &mut u64, now: u64| {
        let mut staged = [0u64; BURST];
        let mut next = [0u64; BURST];
        hashes_of(0, &mut staged, t);
        for b in 0..bursts {
            // Step 1 for the next burst while this one is handled.
            if b + 1 < bursts {
                hashes_of(b + 1, &mut next, t);
            }
            let mut cands = [NO_CANDIDATE; BURST];
            for i in 0..AHEAD {
                cands[i] = t.prefetch_session(staged[i]);
            }
            for i in 0..ALT_AHEAD {
                if cands[i] == NO_CANDIDATE {
                    cands[i] = t.prefetch_session_alt(staged[i]);
                }
            }
            for i in 0..BURST {
                if i + AHEAD < BURST {
                    cands[i + AHEAD] = t.prefetch_session(staged[i + AHEAD]);
                }
                if i + ALT_AHEAD < BURST && cands[i + ALT_AHEAD] == NO_CANDIDATE {
                    cands[i + ALT_AHEAD] = t.prefetch_session_alt(staged[i + ALT_AHEAD]);
                }
                let k = &key(b, i);
                let (idx, dir) = match t.confirm_candidate(cands[i], k) {
                    Some(hit) => {
                        *found += 1;
                        hit
                    }
                    // A tag collision: the general path would look up.
                    None => t.lookup(k).expect("every flow has its session"),
                };
                t.touch_established(idx, dir, now);
            }
            core::mem::swap(&mut staged, &mut next);
        }
    };
    // Warm-up pass (steady state: lines and pages touched once).
    pass(&mut t, &mut found, now);
    found = 0;
    let elements = (passes * bursts * BURST) as u64;
    let cpe = cycles_per(elements, || {
        for _ in 0..passes {
            now += 1;
            pass(&mut t, &mut found, now);
        }
    });
    assert!(
        found * 1000 >= elements * 999,
        "only {found} of {elements} candidates confirmed"
    );
    // The touches landed: a flow's expiry is from the last pass.
    let (i0, _) = t.lookup(&key_of(order[0])).expect("session");
    assert_eq!(t.get(i0).expires, now + t.timeouts().udp);
    Row {
        scenario: "table",
        flows: n,
        elements,
        cycles_per_element: cpe,
        table_bytes: t.memory_bytes(),
        huge_page_bytes: t.huge_page_bytes(),
    }
}

/// A plain record of `W` 8-byte words.
#[derive(Clone, Copy)]
#[repr(C)]
struct Rec<const W: usize>([u64; W]);

/// One 64-byte index line (8 places, each naming a record).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u64; 8]);

/// The `raw88` / `raw80` / `raw64` scenarios: `W` words per record.
fn run_raw<const W: usize>(name: &'static str, n: usize, passes: usize) -> Row {
    let cap = n + n / 4 + 1024;
    // As many index lines as the table has buckets (SessionTable::new).
    let lines = ((2 * cap) as f64 / 0.9 / 8.0).ceil() as usize;
    let lines = lines.next_power_of_two();
    // Every word 0, but not known to the compiler to be: each record
    // index is read from its index line (a real dependency).
    let mut index = HugeVec::from_elem(Line([std::hint::black_box(0); 8]), lines);
    let mut recs: HugeVec<Rec<W>> = HugeVec::with_capacity(cap);
    for i in 0..cap as u64 {
        if recs.push(Rec([i; W])).is_err() {
            unreachable!("capacity reserved");
        }
    }
    // Flow `f` (record `f`, as sessions fill the slab in order) sits in a
    // random place of a random index line.
    let seq: Vec<(u32, u32)> = permutation(n as u32, 7)
        .into_iter()
        .map(|f| {
            let r = fmix64(u64::from(f) ^ 0x11);
            ((r as usize & (lines - 1)) as u32, f << 3 | (r >> 61) as u32)
        })
        .collect();
    let bursts = n / BURST;
    let mut sum = 0u64;
    let pass = |index: &mut HugeVec<Line>, recs: &mut HugeVec<Rec<W>>, now: u64, sum: &mut u64| {
        for b in 0..bursts {
            if b + 1 < bursts {
                for &(l, _) in &seq[(b + 1) * BURST..(b + 2) * BURST] {
                    prefetch_read(&index[l as usize]);
                }
            }
            let mut cand = [0usize; BURST];
            let prefetch_rec = |recs: &HugeVec<Rec<W>>, r: usize| {
                let p = &recs[r] as *const Rec<W> as *const u8;
                let first = p.wrapping_sub(p as usize % 64);
                let last = p.wrapping_add(core::mem::size_of::<Rec<W>>() - 1);
                let mut a = first;
                while a <= last {
                    prefetch_addr(a);
                    a = a.wrapping_add(64);
                }
            };
            // Step 2: the record the index line names.
            let name = |index: &HugeVec<Line>, i: usize| {
                let (l, v) = seq[b * BURST + i];
                (v >> 3) as usize + index[l as usize].0[(v & 7) as usize] as usize
            };
            for (i, c) in cand.iter_mut().enumerate().take(AHEAD) {
                *c = name(index, i);
                prefetch_rec(recs, *c);
            }
            for i in 0..BURST {
                if i + AHEAD < BURST {
                    cand[i + AHEAD] = name(index, i + AHEAD);
                    prefetch_rec(recs, cand[i + AHEAD]);
                }
                let r = &mut recs[cand[i]];
                *sum = sum.wrapping_add(r.0[0] ^ r.0[W - 1]);
                r.0[W - 2] = now;
            }
        }
    };
    pass(&mut index, &mut recs, 1, &mut sum);
    let elements = (passes * bursts * BURST) as u64;
    let cpe = cycles_per(elements, || {
        for p in 0..passes {
            pass(&mut index, &mut recs, 2 + p as u64, &mut sum);
        }
    });
    std::hint::black_box(sum);
    Row {
        scenario: name,
        flows: n,
        elements,
        cycles_per_element: cpe,
        table_bytes: index.capacity() * 64 + recs.capacity() * core::mem::size_of::<Rec<W>>(),
        huge_page_bytes: index.huge_page_bytes().unwrap_or(0) + recs.huge_page_bytes().unwrap_or(0),
    }
}

fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is valid; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

const SCENARIOS: [&str; 4] = ["table", "raw88", "raw80", "raw64"];
const FLOWS: [usize; 2] = [60_000, 1_000_000];

fn usage(u: &str) -> ! {
    eprintln!("{u}");
    std::process::exit(2)
}

fn main() {
    const USAGE: &str = "usage: cargo bench --bench memory -- [--quick] [--cpu N] [--out FILE]";
    let (mut quick, mut out, mut cpu) = (false, None, 1usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            // Passed by `cargo bench`.
            "--bench" => {}
            "--out" => out = Some(args.next().unwrap_or_else(|| usage(USAGE))),
            "--cpu" => {
                cpu = args
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or_else(|| usage(USAGE))
            }
            _ => usage(USAGE),
        }
    }
    let pinned = pin(cpu);
    // Elements per measurement, and rounds: every scenario once per round,
    // in the same order, so that other load on a shared host spreads over
    // all of them; medians over the rounds.
    let (target, rounds) = if quick {
        (10_000_000, 3)
    } else {
        (40_000_000, 7)
    };
    let t0 = Instant::now();
    let c0 = rdtsc();
    let mut rows = Vec::new();
    for _ in 0..rounds {
        for n in FLOWS {
            let passes = (target / n).max(3);
            rows.push(run_table(n, passes));
            rows.push(run_raw::<11>("raw88", n, passes));
            rows.push(run_raw::<10>("raw80", n, passes));
            rows.push(run_raw::<8>("raw64", n, passes));
        }
    }
    let tsc_hz = (rdtsc() - c0) as f64 / t0.elapsed().as_secs_f64();
    let cycles = |s: &str, n: usize| -> Vec<f64> {
        rows.iter()
            .filter(|r| r.scenario == s && r.flows == n)
            .map(|r| r.cycles_per_element)
            .collect()
    };
    println!(
        "memory floor: cpu {cpu} ({}), TSC {:.3} GHz, {rounds} rounds, cycles per element",
        if pinned { "pinned" } else { "not pinned" },
        tsc_hz / 1e9
    );
    println!(
        "{:<8} {:>9} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "scenario", "flows", "median", "min", "max", "MiB", "huge MiB"
    );
    let mut summary = Vec::new();
    for s in SCENARIOS {
        for n in FLOWS {
            let v = cycles(s, n);
            let r = rows
                .iter()
                .find(|r| r.scenario == s && r.flows == n)
                .expect("row");
            let (min, max) = v
                .iter()
                .fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
            let med = median(v);
            println!(
                "{:<8} {:>9} {:>8.1} {:>8.1} {:>8.1} {:>10.1} {:>10.1}",
                s,
                n,
                med,
                min,
                max,
                r.table_bytes as f64 / (1 << 20) as f64,
                r.huge_page_bytes as f64 / (1 << 20) as f64
            );
            summary.push(serde_json::json!({
                "scenario": s,
                "flows": n,
                "median_cycles": med,
                "min_cycles": min,
                "max_cycles": max,
                "elements": r.elements,
                "table_bytes": r.table_bytes,
                "huge_page_bytes": r.huge_page_bytes,
            }));
        }
    }
    for s in SCENARIOS {
        let (a, b) = (median(cycles(s, 60_000)), median(cycles(s, 1_000_000)));
        println!("{s}: 1M - 60k = {:+.1} cycles per element (medians)", b - a);
    }
    if let Some(path) = out {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_default();
        let git_rev = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let date = std::process::Command::new("date")
            .args(["-u", "+%FT%TZ"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let json = serde_json::json!({
            "env": {
                "cpu_model": cpu_model,
                "pinning": if pinned { format!("CPU {cpu}") } else { format!("CPU {cpu} (pinning failed)") },
                "git_rev": git_rev,
                "date": date,
                "tsc_hz": tsc_hz,
                "quick": quick,
                "rounds": rounds,
                "burst": BURST,
                "ahead": AHEAD,
            },
            "summary": summary,
            "rounds": rows.iter().map(|r| serde_json::json!({
                "scenario": r.scenario,
                "flows": r.flows,
                "elements": r.elements,
                "cycles_per_element": r.cycles_per_element,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).expect("json") + "\n",
        )
        .unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}
