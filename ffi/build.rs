//! Finds DPDK with pkg-config, compiles the C shim and generates bindings.
use std::{env, path::PathBuf, process::Command};

fn pkg_config(args: &[&str]) -> String {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .expect("pkg-config not found: install Debian's pkg-config");
    if !out.status.success() {
        panic!(
            "pkg-config {:?} libdpdk failed (install libdpdk-dev >= 22.11): {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout)
        .expect("pkg-config output is not UTF-8")
        .trim()
        .to_owned()
}

fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/bindings.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let version = pkg_config(&["--modversion"]);
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (22, 11) {
        panic!("DPDK {version} found, 22.11 or newer required");
    }

    // Raw cflags: the `pkg-config` crate drops `-include rte_config.h -march=...`,
    // which DPDK's headers need, so we pass them through untouched.
    let cflags: Vec<String> = pkg_config(&["--cflags"])
        .split_whitespace()
        .map(str::to_owned)
        .collect();

    let mut build = cc::Build::new();
    build.file("src/shim.c").opt_level(2).warnings(true);
    for f in &cflags {
        build.flag(f);
    }
    build.compile("dpdk_shim");

    // Link the DPDK libraries. `--no-as-needed` keeps libraries whose only
    // use is their constructors (bus/mempool drivers) in the link.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for tok in pkg_config(&["--libs"]).split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = tok.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
    // rte_eth_from_rings (used to build ring-backed ports in tests).
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");

    let mut builder = bindgen::Builder::default()
        .header("src/bindings.h")
        // Strict allowlists: the functions we call and the types they pull in.
        .allowlist_function("rte_(eal|eth|pktmbuf|mempool|ring|lcore|socket|shim|get_tsc|get_next_lcore|get_main_lcore|version|strerror|thread|dev|vdev)_?.*")
        .allowlist_type("rte_(mbuf|eth_conf|eth_dev_info|eth_rxconf|eth_txconf|eth_stats|ether_addr|lcore_state_t)")
        .allowlist_var("RTE_(ETH|MBUF|MAX|PKTMBUF|LCORE|MEMPOOL|ETHER|VER)_.*")
        .allowlist_var("RING_F_.*")
        .allowlist_var("SOCKET_ID_ANY")
        .blocklist_function("rte_eth_dev_(get|set)_.*(dcb|reta|rss_reta).*")
        .derive_debug(false)
        .opaque_type("rte_flow.*")
        .opaque_type("rte_arp_.*")
        .generate_comments(false)
        .layout_tests(false)
        .derive_default(true)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for f in &cflags {
        builder = builder.clang_arg(f);
    }
    let bindings = builder.generate().expect("bindgen failed on DPDK headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("cannot write bindings");
}
