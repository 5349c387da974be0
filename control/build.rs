//! Compiles the XDP program of shared ports (`bpf/dkp_xdp.c`) with clang
//! into `$OUT_DIR/dkp_xdp.o`, embedded in the binary
//! (`control::beside::XDP_OBJECT`).
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/dkp_xdp.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("dkp_xdp.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => panic!("no multiarch include directory known for {other}"),
    };
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", src, "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!("running {clang} (Debian: apt-get install clang libbpf-dev): {e}")
        });
    assert!(
        status.success(),
        "{clang} failed to compile {src} (needs libbpf-dev for bpf/bpf_helpers.h)"
    );
}
