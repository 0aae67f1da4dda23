//! Test images built locally from the host's static busybox, written as an OCI image
//! archive that `ctr images import` accepts (no registry is reachable here). Configs,
//! manifests, the index and the layout are oci-spec's image types.

use anyhow::{bail, Context, Result};
use oci_spec::image::{
    Arch, Config, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, HistoryBuilder,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType,
    OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

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
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Fixed mtime so the same busybox always gives the same digests.
const MTIME: u64 = 1_700_000_000;

/// Sleeps forever; exits 0 on SIGTERM/SIGINT. PID 1 ignores signals it has no handler
/// for, hence the trap, and `wait` so the trap runs without waiting for the sleep.
const PAUSE_SCRIPT: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

/// A blob of the layout: its bytes and digest.
struct Blob {
    digest: Digest,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Result<Self> {
        let digest = Digest::from_str(&format!("sha256:{:x}", Sha256::digest(&bytes)))
            .context("a sha256 digest")?;
        Ok(Blob { digest, bytes })
    }

    fn json(value: &impl serde::Serialize) -> Result<Self> {
        Blob::new(serde_json::to_vec(value).context("serializing an image document")?)
    }

    fn descriptor(&self, media_type: MediaType) -> Result<Descriptor> {
        DescriptorBuilder::default()
            .media_type(media_type)
            .digest(self.digest.clone())
            .size(self.bytes.len() as u64)
            .build()
            .context("an OCI descriptor")
    }

    fn path(&self) -> String {
        format!("blobs/{}/{}", self.digest.algorithm(), self.digest.digest())
    }
}

/// The OCI architecture of this machine (oci-spec's default is the build target's).
fn oci_arch() -> Arch {
    Arch::default()
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

/// An image's config: `process` with PATH and `/` as working directory where it sets none.
fn image_config(layer_diff_id: &Digest, mut process: Config) -> Result<Blob> {
    if process.env().is_none() {
        process.set_env(Some(vec![DEFAULT_PATH.to_string()]));
    }
    if process.working_dir().is_none() {
        process.set_working_dir(Some("/".into()));
    }
    let config = ImageConfigurationBuilder::default()
        .architecture(oci_arch())
        .os(Os::Linux)
        .config(process)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer_diff_id.to_string()])
                .build()?,
        )
        .history(vec![HistoryBuilder::default()
            .created_by("stockade-integration image builder")
            .build()?])
        .build()
        .context("an image configuration")?;
    Blob::json(&config)
}

/// One image of an OCI archive: its name, its single layer (a tar), and the process
/// settings of its config (`Cmd`, `Entrypoint`, `Labels`, ...).
pub struct OciImage<'a> {
    pub name: &'a str,
    pub layer: &'a [u8],
    pub process: Config,
}

/// Process settings: `cmd` and `labels`.
pub fn process(cmd: &[&str], labels: &[(&str, &str)]) -> Config {
    let mut config = Config::default();
    config.set_cmd(Some(cmd.iter().map(|s| s.to_string()).collect()));
    if !labels.is_empty() {
        let labels: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config.set_labels(Some(labels));
    }
    config
}

/// Write an OCI image archive (for `ctr images import`) holding `images`; identical
/// layers are stored once.
pub fn write_oci_archive(out: &Path, images: &[OciImage<'_>]) -> Result<()> {
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    for image in images {
        let layer = Blob::new(image.layer.to_vec())?;
        let config = image_config(&layer.digest, image.process.clone())?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.descriptor(MediaType::ImageConfig)?)
            .layers(vec![layer.descriptor(MediaType::ImageLayer)?])
            .build()
            .context("an image manifest")?;
        let manifest = Blob::json(&manifest)?;
        let tag = image
            .name
            .rsplit_once(':')
            .map(|(_, t)| t)
            .unwrap_or("latest");
        let mut desc = manifest.descriptor(MediaType::ImageManifest)?;
        desc.set_annotations(Some(HashMap::from([
            (
                "io.containerd.image.name".to_string(),
                image.name.to_string(),
            ),
            (
                "org.opencontainers.image.ref.name".to_string(),
                tag.to_string(),
            ),
        ])));
        desc.set_platform(Some(
            PlatformBuilder::default()
                .architecture(oci_arch())
                .os(Os::Linux)
                .build()?,
        ));
        manifests.push(desc);
        blobs.extend([layer, config, manifest]);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .context("an image index")?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;

    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
    let mut add = |path: &str, bytes: &[u8]| -> Result<()> {
        let mut h = tar_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        archive
            .append_data(&mut h, path, bytes)
            .with_context(|| format!("writing {path} to {}", out.display()))
    };
    add("oci-layout", &serde_json::to_vec(&layout)?)?;
    add("index.json", &serde_json::to_vec(&index)?)?;
    let mut seen = std::collections::BTreeSet::new();
    for blob in &blobs {
        if seen.insert(blob.digest.to_string()) {
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

fn pause_process() -> Result<Config> {
    ConfigBuilder::default()
        .entrypoint(vec!["/bin/sh".into(), "-c".into(), PAUSE_SCRIPT.into()])
        .stop_signal("SIGTERM")
        .build()
        .context("the pause image's config")
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
            image(BUSYBOX_IMAGE, process(&["sh"], &[])),
            // A distinct image (its own config, so its own ID): containerd 1.6 annotates a
            // container with the first of its image's names, so the untrusted name must not
            // share an image with a trusted one.
            image(
                UNTRUSTED_BUSYBOX_IMAGE,
                process(&["sh"], &[("org.stockade.test", "untrusted-registry")]),
            ),
            image(PAUSE_IMAGE, pause_process()?),
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

    /// The archive read back with oci-spec: every descriptor names a blob of that digest
    /// and size, and the configs carry what was asked.
    #[test]
    fn archive_reads_back_as_an_oci_layout() {
        use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("images.tar");
        let layer = Layer::with_busybox(b"not really busybox", Some(&["sh"]))
            .unwrap()
            .finish()
            .unwrap();
        let images = [
            OciImage {
                name: "registry.k8s.io/t/a:v1",
                layer: &layer,
                process: process(&["sh"], &[("k", "v")]),
            },
            OciImage {
                name: "registry.k8s.io/t/b:latest",
                layer: &layer,
                process: pause_process().unwrap(),
            },
        ];
        write_oci_archive(&out, &images).unwrap();
        let mut files = std::collections::BTreeMap::new();
        let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            files.insert(path, bytes);
        }
        let blob = |d: &Descriptor| {
            let bytes = &files[&format!("blobs/sha256/{}", d.digest().digest())];
            assert_eq!(bytes.len() as u64, d.size());
            assert_eq!(format!("{:x}", Sha256::digest(bytes)), d.digest().digest());
            bytes.clone()
        };
        assert!(String::from_utf8_lossy(&files["oci-layout"]).contains("1.0.0"));
        // One layer blob shared by both images.
        assert_eq!(files.keys().filter(|k| k.starts_with("blobs/")).count(), 5);
        let index = ImageIndex::from_reader(&files["index.json"][..]).unwrap();
        assert_eq!(index.manifests().len(), 2);
        let mut cmds = Vec::new();
        for desc in index.manifests() {
            let names = desc.annotations().as_ref().unwrap();
            assert!(names["io.containerd.image.name"]
                .ends_with(&names["org.opencontainers.image.ref.name"]));
            let manifest = ImageManifest::from_reader(&blob(desc)[..]).unwrap();
            assert_eq!(blob(&manifest.layers()[0]), layer);
            let config = ImageConfiguration::from_reader(&blob(manifest.config())[..]).unwrap();
            assert_eq!(
                config.rootfs().diff_ids()[0],
                manifest.layers()[0].digest().to_string()
            );
            let process = config.config().as_ref().unwrap();
            assert_eq!(process.working_dir().as_deref(), Some("/"));
            cmds.push((process.cmd().clone(), process.entrypoint().clone()));
        }
        assert_eq!(cmds[0].0, Some(vec!["sh".to_string()]));
        assert_eq!(cmds[1].1.as_ref().unwrap()[0], "/bin/sh");
    }

    #[test]
    fn dynamic_binary_is_not_static() {
        let bytes = std::fs::read("/bin/ls").unwrap();
        assert!(!is_static_elf(&bytes));
    }
}
