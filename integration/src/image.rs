//! Test images built locally from the host's static busybox, written as an OCI image
//! archive that `ctr images import` accepts (no registry is reachable here).

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

// The images exist only in the private containerd (nothing is ever pulled). They carry a
// registry.k8s.io name because both Stockade profiles allow that registry; the same
// busybox under a localhost name is what the registry allowlist must refuse.

/// Image with busybox and its applets; default command `sh`.
pub const BUSYBOX_IMAGE: &str = "registry.k8s.io/stockade-test/busybox:latest";
/// Sandbox ("pause") image: a shell that sleeps until SIGTERM/SIGINT.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/stockade-test/pause:latest";
/// The busybox image again, from a registry no profile allows.
pub const UNTRUSTED_BUSYBOX_IMAGE: &str = "localhost/stockade-test/busybox:latest";

const BUSYBOX_HOST_PATH: &str = "/bin/busybox";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Fixed mtime so the same busybox always gives the same digests.
const MTIME: u64 = 1_700_000_000;

/// Sleeps forever; exits 0 on SIGTERM/SIGINT. PID 1 ignores signals it has no handler
/// for, hence the trap, and `wait` so the trap runs without waiting for the sleep.
const PAUSE_SCRIPT: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

/// A blob of the layout: its bytes and descriptor fields.
struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Self {
        let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
        Blob { digest, bytes }
    }
    fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.bytes.len()})
    }
    fn path(&self) -> String {
        format!("blobs/sha256/{}", self.digest.trim_start_matches("sha256:"))
    }
}

/// The OCI architecture name of this machine.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// True when the ELF file has no program interpreter (i.e. runs without a libc on disk).
fn is_static_elf(bytes: &[u8]) -> bool {
    // 64-bit little-endian ELF only (the architectures we build for).
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap_or([0; 2]));
    let phoff = u64_at(0x20) as usize;
    let phentsize = u16_at(0x36) as usize;
    let phnum = u16_at(0x38) as usize;
    (0..phnum).all(|i| {
        let off = phoff + i * phentsize;
        // PT_INTERP = 3
        off + 4 > bytes.len()
            || u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]]) != 3
    })
}

fn busybox_applets() -> Result<Vec<String>> {
    let out = Command::new(BUSYBOX_HOST_PATH)
        .arg("--list")
        .output()
        .with_context(|| format!("running {BUSYBOX_HOST_PATH} --list"))?;
    if !out.status.success() {
        bail!(
            "{BUSYBOX_HOST_PATH} --list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect())
}

/// A tar header owned by root with a fixed mtime, so the same inputs give the same digests.
pub fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

/// The directories every test and bench image has at its root.
const ROOT_DIRS: [(&str, u32); 9] = [
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("var", 0o755),
    ("tmp", 0o1777),
];

/// A single image layer (a tar) being written; entries get [`tar_header`]'s fixed owner
/// and mtime.
pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Layer {
    /// A layer with the root directories and `/bin/busybox` (read from the host), linked
    /// as each of `applets` (None: every applet the host's busybox lists).
    pub fn busybox(applets: Option<&[&str]>) -> Result<Layer> {
        let busybox = std::fs::read(BUSYBOX_HOST_PATH).with_context(|| {
            format!("reading {BUSYBOX_HOST_PATH} (apt-get install busybox-static)")
        })?;
        if !is_static_elf(&busybox) {
            bail!("{BUSYBOX_HOST_PATH} is not statically linked: apt-get install busybox-static");
        }
        Layer::with_busybox(&busybox, applets)
    }

    /// [`Layer::busybox`] with the given busybox binary.
    pub fn with_busybox(busybox: &[u8], applets: Option<&[&str]>) -> Result<Layer> {
        let mut l = Layer {
            builder: tar::Builder::new(Vec::new()),
        };
        for (dir, mode) in ROOT_DIRS {
            l.dir(dir, mode)?;
        }
        l.file("bin/busybox", 0o755, busybox)?;
        let listed;
        let applets: Vec<&str> = match applets {
            Some(a) => a.to_vec(),
            None => {
                listed = busybox_applets()?;
                listed.iter().map(String::as_str).collect()
            }
        };
        for applet in applets {
            l.symlink(&format!("bin/{applet}"), "busybox")?;
        }
        Ok(l)
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let mut h = tar_header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut h, format!("{path}/"), std::io::empty())
            .with_context(|| format!("adding {path}/"))
    }

    pub fn file(&mut self, path: &str, mode: u32, bytes: &[u8]) -> Result<()> {
        let mut h = tar_header(tar::EntryType::Regular, mode, bytes.len() as u64);
        self.builder
            .append_data(&mut h, path, bytes)
            .with_context(|| format!("adding {path}"))
    }

    pub fn symlink(&mut self, path: &str, target: impl AsRef<Path>) -> Result<()> {
        let mut h = tar_header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, path, target)
            .with_context(|| format!("adding {path}"))
    }

    /// /etc/passwd and /etc/group with root and nobody.
    pub fn minimal_etc(&mut self) -> Result<()> {
        self.file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )?;
        self.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")
    }

    pub fn finish(self) -> Result<Vec<u8>> {
        self.builder.into_inner().context("finishing a layer")
    }
}

/// The test image's layer: busybox with every applet, a minimal /etc.
fn build_layer() -> Result<Vec<u8>> {
    let mut l = Layer::busybox(None)?;
    l.minimal_etc()?;
    l.file("etc/hostname", 0o644, b"stockade-test\n")?;
    l.finish()
}

fn image_config(layer_diff_id: &str, process: &serde_json::Value) -> Blob {
    let mut config = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "WorkingDir": "/",
    });
    if let (Some(c), Some(p)) = (config.as_object_mut(), process.as_object()) {
        c.extend(p.clone());
    }
    let doc = json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_diff_id]},
        "history": [{"created_by": "stockade-integration image builder"}],
    });
    Blob::new(doc.to_string().into_bytes())
}

/// One image of an OCI archive: its name, its single layer (a tar), and process settings
/// merged into its config (`Cmd`, `Entrypoint`, `Labels`, ...).
pub struct OciImage<'a> {
    pub name: &'a str,
    pub layer: &'a [u8],
    pub process: serde_json::Value,
}

/// Write an OCI image archive (for `ctr images import`) holding `images`; identical
/// layers are stored once.
pub fn write_oci_archive(out: &Path, images: &[OciImage<'_>]) -> Result<()> {
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    for image in images {
        let layer = Blob::new(image.layer.to_vec());
        let config = image_config(&layer.digest, &image.process);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.descriptor(MEDIA_CONFIG),
            "layers": [layer.descriptor(MEDIA_LAYER)],
        });
        let manifest = Blob::new(manifest.to_string().into_bytes());
        let tag = image
            .name
            .rsplit_once(':')
            .map(|(_, t)| t)
            .unwrap_or("latest");
        let mut desc = manifest.descriptor(MEDIA_MANIFEST);
        desc["annotations"] = json!({
            "io.containerd.image.name": image.name,
            "org.opencontainers.image.ref.name": tag,
        });
        desc["platform"] = json!({"architecture": oci_arch(), "os": "linux"});
        manifests.push(desc);
        blobs.extend([layer, config, manifest]);
    }
    let index = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests});

    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
    let mut add = |path: &str, bytes: &[u8]| -> Result<()> {
        let mut h = tar_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        archive
            .append_data(&mut h, path, bytes)
            .with_context(|| format!("writing {path} to {}", out.display()))
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", index.to_string().as_bytes())?;
    let mut seen = std::collections::BTreeSet::new();
    for blob in &blobs {
        if seen.insert(blob.digest.clone()) {
            add(&blob.path(), &blob.bytes)?;
        }
    }
    archive
        .into_inner()
        .context("finishing the image archive")?
        .into_inner()
        .map_err(|e| anyhow::anyhow!("flushing {}: {}", out.display(), e.error()))?;
    Ok(())
}

/// Write an OCI image archive holding [`BUSYBOX_IMAGE`] and [`PAUSE_IMAGE`] to `out`.
pub fn write_test_images_archive(out: &Path) -> Result<()> {
    let layer = build_layer()?;
    let image = |name, process| OciImage {
        name,
        layer: &layer,
        process,
    };
    write_oci_archive(
        out,
        &[
            image(BUSYBOX_IMAGE, json!({"Cmd": ["sh"]})),
            // A distinct image (its own config, so its own ID): containerd 1.6 annotates a
            // container with the first of its image's names, so the untrusted name must not
            // share an image with a trusted one.
            image(
                UNTRUSTED_BUSYBOX_IMAGE,
                json!({"Cmd": ["sh"], "Labels": {"org.stockade.test": "untrusted-registry"}}),
            ),
            image(
                PAUSE_IMAGE,
                json!({"Entrypoint": ["/bin/sh", "-c", PAUSE_SCRIPT], "StopSignal": "SIGTERM"}),
            ),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_busybox_is_static() {
        let bytes = std::fs::read(BUSYBOX_HOST_PATH).unwrap();
        assert!(is_static_elf(&bytes));
    }

    #[test]
    fn dynamic_binary_is_not_static() {
        let bytes = std::fs::read("/bin/ls").unwrap();
        assert!(!is_static_elf(&bytes));
    }
}
