//! stockade-conformance-report: the markdown report of `make conformance`.
//!
//!     stockade-conformance-report RESULTS_DIR [TITLE_NOTE]
//!
//! RESULTS_DIR holds one directory per critest run, `c<containerd>-<handler>` (e.g.
//! `c2-stockade-strict`), each with run.sh's `junit.xml` and `summary.txt`. The report
//! (stdout) compares each Stockade handler with runc on the same containerd.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use stockade_integration::conformance::{parse_junit, parse_summary_line, render_containerd, Run};

fn load(dir: &Path, handler: &str) -> Result<Run> {
    let junit = dir.join("junit.xml");
    let text =
        std::fs::read_to_string(&junit).with_context(|| format!("reading {}", junit.display()))?;
    let specs = parse_junit(&text).with_context(|| format!("in {}", junit.display()))?;
    let summary = std::fs::read_to_string(dir.join("summary.txt")).unwrap_or_default();
    let meta = parse_summary_line(summary.lines().next().unwrap_or(""));
    let get = |k: &str| meta.get(k).cloned().unwrap_or_else(|| "?".into());
    Ok(Run {
        containerd: get("containerd"),
        critest: get("critest"),
        handler: handler.to_string(),
        seconds: meta.get("seconds").and_then(|s| s.parse().ok()),
        specs,
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().map(Path::new) else {
        bail!("usage: stockade-conformance-report RESULTS_DIR [NOTE]");
    };
    // containerd kind -> handler -> run directory
    let mut kinds: BTreeMap<String, BTreeMap<String, std::path::PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((kind, handler)) = name.strip_prefix('c').and_then(|n| n.split_once('-')) else {
            continue;
        };
        if entry.path().join("junit.xml").is_file() {
            kinds
                .entry(kind.to_string())
                .or_default()
                .insert(handler.to_string(), entry.path());
        }
    }
    if kinds.is_empty() {
        bail!(
            "no c<containerd>-<handler>/junit.xml under {}",
            dir.display()
        );
    }
    let mut out = String::from("# CRI conformance: runc and Stockade on the same containerd\n\n");
    if let Some(note) = args.get(1) {
        out.push_str(note);
        out.push_str("\n\n");
    }
    out.push_str(
        "critest (cri-tools) from the offline kit (../shared/critest/run.sh), once per runtime \
         handler, each run against its own private containerd; containerd 2 keeps its CRI \
         defaults. Every spec runc passes is listed for Stockade as passed, refused by a named \
         policy rule (the rule is read from the error), an expectation that contradicts \
         hardening Stockade always applies, skipped, or failed.\n\n",
    );
    for (kind, handlers) in &kinds {
        let Some(runc_dir) = handlers.get("runc") else {
            out.push_str(&format!(
                "## containerd {kind}\n\nNo runc run: nothing to compare.\n\n"
            ));
            continue;
        };
        let runc = load(runc_dir, "runc")?;
        let stockade = handlers
            .iter()
            .filter(|(h, _)| *h != "runc")
            .map(|(h, d)| load(d, h))
            .collect::<Result<Vec<_>>>()?;
        out.push_str(&render_containerd(&runc, &stockade));
    }
    print!("{out}");
    Ok(())
}
