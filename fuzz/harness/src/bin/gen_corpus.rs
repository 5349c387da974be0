//! Writes the seed corpus to `fuzz/corpus/<target>/<name>` (replacing what
//! is there): `cargo run --manifest-path fuzz/Cargo.toml -p dkp-fuzz-harness
//! --bin gen_corpus`.
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    for t in ["packet_views", "pipeline", "control_translate"] {
        let d = root.join(t);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        std::fs::create_dir_all(&d)?;
    }
    let all = dkp_fuzz_harness::corpus::all();
    for (target, name, bytes) in &all {
        std::fs::write(root.join(target).join(name), bytes)?;
    }
    println!(
        "{} corpus files written under {}",
        all.len(),
        root.display()
    );
    Ok(())
}
