//! The bench's own images, written as one OCI image archive for `ctr images import`:
//! the workload image (static busybox + stockade-load) and the rootfs-size images (a
//! handful of files vs. tens of thousands). Names use registry.k8s.io because both
//! Stockade profiles allow that registry; nothing is ever pulled.

use anyhow::{bail, Context, Result};
use std::path::Path;
use stockade_integration::image::{process, write_oci_archive, Layer, OciImage};

pub const LOAD_IMAGE: &str = "registry.k8s.io/stockade-bench/load:latest";
const BUSYBOX: &str = "/bin/busybox";
/// Entries of the base layer that count as files (busybox, 4 symlinks, passwd, group).
pub const BASE_FILES: usize = 7;

/// The static workload program built by build.rs (empty if it could not be built).
pub const LOAD_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stockade-load"));

/// Name of the image holding `files` files in all.
pub fn files_image(files: usize) -> String {
    format!("registry.k8s.io/stockade-bench/files-{files}:latest")
}

/// Directories, busybox with sh/sleep/true/ls, passwd and group: [`BASE_FILES`] files.
fn base_layer(busybox: &[u8]) -> Result<Layer> {
    let mut l = Layer::with_busybox(busybox, Some(&["sh", "sleep", "true", "ls"]))?;
    l.dir("bench-work", 0o755)?;
    l.minimal_etc()?;
    Ok(l)
}

/// Base layer plus `files - BASE_FILES` empty files under /data, 1,000 per directory.
fn files_layer(busybox: &[u8], files: usize) -> Result<Vec<u8>> {
    let mut l = base_layer(busybox)?;
    let extra = files.saturating_sub(BASE_FILES);
    l.dir("data", 0o755)?;
    for i in 0..extra {
        if i % 1000 == 0 {
            l.dir(&format!("data/d{}", i / 1000), 0o755)?;
        }
        l.file(&format!("data/d{}/f{i}", i / 1000), 0o644, b"")?;
    }
    l.finish()
}

/// Write an archive with the workload image (if stockade-load was built) and the
/// `small`- and `big`-file images to `out`.
pub fn write_bench_images(out: &Path, small: usize, big: usize) -> Result<Vec<String>> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (apt-get install busybox-static)"))?;
    if small < BASE_FILES {
        bail!("the small image needs at least {BASE_FILES} files");
    }
    let mut layers: Vec<(String, Vec<u8>)> = Vec::new();
    if !LOAD_BINARY.is_empty() {
        let mut l = base_layer(&busybox)?;
        l.file("stockade-load", 0o755, LOAD_BINARY)?;
        layers.push((LOAD_IMAGE.to_string(), l.finish()?));
    }
    for n in [small, big] {
        layers.push((files_image(n), files_layer(&busybox, n)?));
    }

    let images: Vec<OciImage<'_>> = layers
        .iter()
        .map(|(name, layer)| OciImage {
            name,
            layer,
            process: process(&["/bin/sh"], &[]),
        })
        .collect();
    write_oci_archive(out, &images)?;
    Ok(layers.into_iter().map(|(name, _)| name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(layer: &[u8]) -> Vec<(tar::EntryType, String)> {
        let mut a = tar::Archive::new(layer);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.header().entry_type(),
                    e.path().unwrap().display().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn files_layer_has_exactly_the_asked_number_of_files() {
        for n in [BASE_FILES, 10, 2_345] {
            let layer = files_layer(b"not really busybox", n).unwrap();
            let files = entries(&layer)
                .into_iter()
                .filter(|(t, _)| !t.is_dir())
                .count();
            assert_eq!(files, n, "image for {n} files");
        }
    }

    #[test]
    fn load_binary_is_a_static_elf_when_built() {
        if LOAD_BINARY.is_empty() {
            return; // build.rs said why (cargo warning); the bench reports the skip
        }
        assert_eq!(&LOAD_BINARY[..4], b"\x7fELF");
    }
}
