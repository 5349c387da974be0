//! Replays the committed seed corpus (and whatever crashes were committed
//! as regressions under `fuzz/regressions/<target>/`) through the targets'
//! functions on stable Rust, and checks that the committed corpus is what
//! `gen_corpus` generates.
use std::path::{Path, PathBuf};

fn dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(sub)
}

fn files(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(d)
        .map(|r| r.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let mut n = 0;
    for sub in ["corpus", "regressions"] {
        for p in files(&dir(sub).join(target)) {
            let b = std::fs::read(&p).unwrap();
            f(&b);
            n += 1;
        }
    }
    n
}

#[test]
fn packet_views_corpus_replays() {
    assert!(replay("packet_views", dkp_fuzz_harness::packet_views) > 10);
}

#[test]
fn pipeline_corpus_replays() {
    assert!(replay("pipeline", dkp_fuzz_harness::pipeline) > 10);
}

#[test]
fn control_translate_corpus_replays() {
    assert!(replay("control_translate", dkp_fuzz_harness::control_translate) > 5);
}

#[test]
fn committed_corpus_is_the_generated_one() {
    for (target, name, bytes) in dkp_fuzz_harness::corpus::all() {
        let p = dir("corpus").join(target).join(&name);
        let on_disk =
            std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run gen_corpus)", p.display()));
        assert!(
            on_disk == bytes,
            "{} differs from gen_corpus's (run it)",
            p.display()
        );
    }
}

/// The seeds get deep: frames are translated and answered, not just
/// dropped; configurations and clusters parse and build tables.
#[test]
fn seeds_reach_the_interesting_code() {
    let mut total = dkp_fuzz_harness::Tally::default();
    for (name, recs) in dkp_fuzz_harness::corpus::pipeline_seeds() {
        let t = dkp_fuzz_harness::run_pipeline(&dkp_fuzz_harness::encode_frames(&recs));
        println!("{name}: {t:?}");
        total.tx += t.tx;
        total.dropped += t.dropped;
        total.consumed += t.consumed;
        total.handed_off += t.handed_off;
    }
    println!("total: {total:?}");
    assert!(total.tx > 30, "{total:?}");
    assert!(total.handed_off > 0, "{total:?}");
    for (name, b) in dkp_fuzz_harness::corpus::control_seeds() {
        let r = dkp_fuzz_harness::translate(&b);
        println!("{name}: {r:?}");
        match name {
            "config_empty" => {}
            "cluster" | "object_service" | "object_nodeport" | "config_native" => {
                assert!(r.is_some_and(|n| n > 0), "{name}: {r:?}")
            }
            n if n.starts_with("config_") => assert!(r.is_some(), "{name}: {r:?}"),
            _ => {}
        }
    }
}
