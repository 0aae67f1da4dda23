//! Builds `load/stockade-load.c` as a static executable; the bench embeds it in the
//! workload image. Without a static C toolchain the file is left empty and the bench
//! reports the workload section as skipped (the build itself never fails for this).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=load/stockade-load.c");
    println!("cargo:rerun-if-env-changed=CC");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let out = out_dir.join("stockade-load");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .args(["-O2", "-static", "-Wall", "-o"])
        .arg(&out)
        .arg("load/stockade-load.c")
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => {
            println!(
                "cargo:warning=could not build stockade-load statically with {cc} ({other:?}); \
                 the workload section will be skipped"
            );
            if let Err(e) = std::fs::write(&out, b"") {
                panic!("writing {}: {e}", out.display());
            }
        }
    }
}
