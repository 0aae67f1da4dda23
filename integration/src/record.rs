//! Record mode as tests use it: the record test image (busybox and `/forker`, a static C
//! program that forks and execs, built with gcc at test time) and `stockade profile
//! record` as a child of the test, stopped by PID with SIGTERM.

use crate::containerd::Containerd;
use crate::image::{process, write_oci_archive, Layer, OciImage};
use crate::paths;
use crate::probes::gcc_static;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// busybox plus `/forker`.
pub const RECORD_IMAGE: &str = "registry.k8s.io/stockade-test/record:latest";

/// Compiles integration/record/forker.c statically into `dir`.
pub fn build_forker(dir: &Path) -> Result<PathBuf> {
    let out = dir.join("forker");
    gcc_static(
        &[Path::new(env!("CARGO_MANIFEST_DIR")).join("record/forker.c")],
        &out,
    )?;
    Ok(out)
}

/// Builds [`RECORD_IMAGE`] and imports it into `c`'s own namespace.
pub fn install_record_image(c: &Containerd) -> Result<()> {
    let dir = c.dir.join("record-image");
    std::fs::create_dir_all(&dir)?;
    let forker = std::fs::read(build_forker(&dir)?)?;
    let mut layer = Layer::busybox(None)?;
    layer.file("forker", 0o755, &forker)?;
    layer.dir("www", 0o755)?;
    layer.file("www/index.html", 0o644, b"recorded page\n")?;
    let layer = layer.finish()?;
    let archive = dir.join("record-image.tar");
    write_oci_archive(
        &archive,
        &[OciImage {
            name: RECORD_IMAGE,
            layer: &layer,
            process: process(&["sh"], &[("org.stockade.test", "record")]),
        }],
    )?;
    let out = c.ctr(&["images", "import", &archive.display().to_string()]);
    if !out.status.success() {
        bail!(
            "importing {RECORD_IMAGE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `stockade profile record` for the containers of `c`, writing to `out`.
pub struct Recorder {
    child: Option<Child>,
    pub out: PathBuf,
}

/// What a finished recording printed and wrote.
#[derive(Debug)]
pub struct Recorded {
    pub stdout: String,
    pub stderr: String,
    /// `recording.json`.
    pub summary: serde_json::Value,
}

impl Recorded {
    /// The summary entry of container `id` (a ctr container is its own pod).
    pub fn container(&self, id: &str) -> Option<&serde_json::Value> {
        self.summary["containers"]
            .as_array()?
            .iter()
            .find(|c| c["container"] == id)
    }
}

impl Recorder {
    /// Starts recording; returns once the recorder reads records.
    pub fn start(c: &Containerd, out: &Path) -> Result<Recorder> {
        let bin = paths::shim_dir()?.join("stockade");
        let mut child = Command::new(&bin)
            .args(["profile", "record", "--out"])
            .arg(out)
            .arg("--profile")
            .arg(paths::profile("record.toml")?)
            .arg("--state-dir")
            .arg(c.stockade_state.root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut recorder = Recorder {
            child: None,
            out: out.to_path_buf(),
        };
        let mut line = String::new();
        if let Some(stdout) = child.stdout.as_mut() {
            // One byte at a time: the rest of stdout is read by `finish`.
            let mut byte = [0u8; 1];
            while !line.ends_with('\n') && stdout.read(&mut byte)? == 1 {
                line.push(byte[0] as char);
            }
        }
        recorder.child = Some(child);
        if !line.starts_with("stockade profile record: recording") {
            let stderr = recorder.finish().map(|r| r.stderr).unwrap_or_default();
            bail!("the recorder did not start: {line:?} {stderr}");
        }
        Ok(recorder)
    }

    /// Stops the recorder (SIGTERM to its pid) and reads what it wrote.
    pub fn finish(mut self) -> Result<Recorded> {
        let mut child = self.child.take().context("recorder already finished")?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .context("signalling the recorder")?;
        let mut stdout = String::new();
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines() {
                stdout.push_str(&line?);
                stdout.push('\n');
            }
        }
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            err.read_to_string(&mut stderr)?;
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("the recorder failed ({status}): {stdout}{stderr}");
        }
        let path = self.out.join("recording.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Recorded {
            stdout,
            stderr,
            summary: serde_json::from_str(&text)?,
        })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
