//! The Markdown report (and its SVG figures) rendered from the results: tables of
//! median, spread and ratio against the baseline, and the project's goals beside the
//! figures they judge, with met / not met.

use crate::goals::{goals, GoalCheck, SHIM_PSS_MAX_MB, START_P50_MAX};
use crate::model::{Results, Section};
use crate::stats::{summarize, Summary};
use crate::{flame, floor, phases, scale, svg};
use std::fmt::Write as _;

pub fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Ratios get three decimals: 1.054 must not print as a "1.05" that misses a 1.05 goal.
pub fn fmt_ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}×")
    } else {
        "—".into()
    }
}

pub fn summary(sec: &Section, runtime: &str, metric: &str) -> Option<Summary> {
    sec.samples(runtime, metric)
        .and_then(|s| summarize(&s.samples))
}

pub fn why_missing(sec: &Section, runtime: &str) -> String {
    if let Some(s) = &sec.skipped {
        return format!("section skipped: {s}");
    }
    match sec.failures.get(runtime) {
        Some(e) => format!("{runtime}: failed: {}", shorten(&first_line(e), 140)),
        None => format!("no {runtime} samples"),
    }
}

fn first_line(s: &str) -> String {
    shorten(s.lines().next().unwrap_or(""), 300)
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Metrics plotted as CDFs, per section.
fn cdf_metrics(id: &str) -> &'static [&'static str] {
    match id {
        "lifecycle_serial" => &["start_total", "cycle_total"],
        "lifecycle_parallel" => &["start_total", "cycle_total"],
        "ctr_run" => &["total", "exec"],
        "seccomp" => &["install"],
        _ => &[],
    }
}

/// Notes computed from the samples: for the workload (whose goal compares with runc
/// under its default seccomp profile), Stockade against plain runc too.
fn derived_notes(sec: &Section, known: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if sec.id == "flame" {
        return flame::notes(sec);
    }
    let reference = "runc";
    if sec.id != "workload" || sec.samples(reference, "getppid").is_none() {
        return out;
    }
    for r in sec
        .runtimes(known)
        .iter()
        .filter(|r| r.starts_with("stockade"))
    {
        let ratios: Vec<String> = sec
            .metrics()
            .iter()
            .filter_map(|m| {
                let a = summary(sec, r, m)?;
                let b = summary(sec, reference, m)?;
                Some(format!("{m} {}", fmt_ratio(a.p50 / b.p50)))
            })
            .collect();
        if !ratios.is_empty() {
            out.push(format!(
                "{r} / {reference} without seccomp (medians): {}. Any seccomp filter moves \
                 every system call to the kernel's slower entry path, so the goal compares \
                 with runc-seccomp; these ratios show what the filter itself costs.",
                ratios.join(", ")
            ));
        }
    }
    out
}

/// Short row label of a bar: "mount_50000_files" -> "50000 files".
fn bar_label(metric: &str) -> String {
    let m = metric
        .trim_start_matches("create_start_")
        .trim_start_matches("mount_");
    match m.strip_suffix("_files") {
        Some(n) => format!("{n} files"),
        None if m == "shim_pss_each" => "shim PSS".into(),
        None => m.to_string(),
    }
}

/// A figure: file name and SVG text.
pub type Figure = (String, String);

fn figures(sec: &Section, known: &[String]) -> Vec<Figure> {
    let mut out = Vec::new();
    let runtimes = sec.runtimes(known);
    for m in cdf_metrics(&sec.id) {
        let series: Vec<(String, Vec<f64>)> = runtimes
            .iter()
            .filter_map(|r| sec.samples(r, m).map(|s| (r.clone(), s.samples.clone())))
            .collect();
        if series.is_empty() {
            continue;
        }
        let unit = sec
            .series
            .iter()
            .find(|s| &s.metric == m)
            .map(|s| s.unit.clone())
            .unwrap_or_default();
        let mut marks = Vec::new();
        if m == &"start_total" {
            if let Some(b) = summary(sec, "runc", m) {
                marks.push((
                    b.p50 * START_P50_MAX,
                    format!("goal p50 ≤ {} {unit}", fmt(b.p50 * START_P50_MAX)),
                ));
            }
        }
        out.push((
            format!("{}_{m}.svg", sec.id),
            svg::ecdf(
                &format!("{} — {m}", sec.title),
                unit.as_str(),
                &series,
                &marks,
            ),
        ));
    }
    let bar_metrics: Vec<String> = match sec.id.as_str() {
        "memory" => vec!["shim_pss_each".into()],
        "rootfs_library" => sec
            .metrics()
            .into_iter()
            .filter(|m| m.starts_with("mount_"))
            .collect(),
        "rootfs_cri" => sec
            .metrics()
            .into_iter()
            .filter(|m| m.starts_with("create_start_"))
            .collect(),
        "idrange" => sec.metrics(),
        _ => Vec::new(),
    };
    let rows: Vec<(String, String, Vec<f64>)> = bar_metrics
        .iter()
        .flat_map(|m| {
            runtimes.iter().filter_map(move |r| {
                sec.samples(r, m).map(|s| {
                    (
                        format!("{r} · {}", bar_label(m)),
                        r.clone(),
                        s.samples.clone(),
                    )
                })
            })
        })
        .collect();
    if !rows.is_empty() {
        let unit = sec
            .series
            .iter()
            .find(|s| bar_metrics.contains(&s.metric))
            .map(|s| s.unit.clone())
            .unwrap_or_default();
        let goal =
            (sec.id == "memory").then(|| (SHIM_PSS_MAX_MB, format!("goal {SHIM_PSS_MAX_MB} MB")));
        out.push((
            format!("{}.svg", sec.id),
            svg::bars(&sec.title, &unit, &rows, goal),
        ));
    }
    if floor::has_floor(sec) {
        out.extend(floor::figure(sec, known));
    }
    match sec.id.as_str() {
        "scale" => out.extend(scale::figures(sec)),
        "shim_phases" | "shim_phases_scale" => out.extend(phases::figure(sec)),
        "flame" => out.extend(flame::figures(sec)),
        _ => {}
    }
    out
}

fn table(out: &mut String, sec: &Section, known: &[String]) {
    let runtimes = sec.runtimes(known);
    let _ = writeln!(
        out,
        "| metric | runtime | n | median | p10–p90 | p99 | max | median ratio | p99 ratio |\n|---|---|---:|---:|---|---:|---:|---:|---:|"
    );
    for m in sec.metrics() {
        let unit = sec
            .series
            .iter()
            .find(|s| s.metric == m)
            .map(|s| s.unit.clone())
            .unwrap_or_default();
        let base = summary(sec, &sec.baseline, &m);
        for r in &runtimes {
            match summary(sec, r, &m) {
                Some(s) => {
                    let (rm, r99) = match (&base, r == &sec.baseline) {
                        (Some(b), false) => (fmt_ratio(s.p50 / b.p50), fmt_ratio(s.p99 / b.p99)),
                        _ => ("".into(), "".into()),
                    };
                    let _ = writeln!(
                        out,
                        "| {m} ({unit}) | {r} | {} | {} | {}–{} | {} | {} | {rm} | {r99} |",
                        s.n,
                        fmt(s.p50),
                        fmt(s.p10),
                        fmt(s.p90),
                        fmt(s.p99),
                        fmt(s.max)
                    );
                }
                None if sec.failures.contains_key(r) => {
                    let _ = writeln!(out, "| {m} ({unit}) | {r} | 0 | failed | | | | | |");
                }
                None => {}
            }
        }
    }
}

fn goal_table(out: &mut String, checks: &[GoalCheck]) {
    let _ = writeln!(
        out,
        "| goal | figure | runtime | value | verdict |\n|---|---|---|---|---|"
    );
    for g in checks {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            g.goal,
            g.figure,
            g.runtime,
            g.value,
            g.verdict.text()
        );
    }
}

/// The report text and its figures.
pub fn render(results: &Results) -> (String, Vec<Figure>) {
    let mut out = String::new();
    let mut figs = Vec::new();
    let known: Vec<String> = results.runtimes.iter().map(|r| r.label.clone()).collect();
    let m = &results.machine;
    let s = |k: &str| {
        m.get(k)
            .map(|v| v.to_string().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let _ = writeln!(out, "# Stockade vs runc — benchmark report\n");
    let _ = writeln!(
        out,
        "{} run, started {}, {:.0} s. Git {}. Every sample: [results.json](results.json).\n",
        if results.quick { "**Quick**" } else { "Full" },
        results.started_utc,
        results.duration_s,
        s("git_rev")
    );
    let _ = writeln!(
        out,
        "Reproduce: `make bench` (full; this file is bench/results/latest/report.md) or \
         `make bench-quick`; `stockade-bench --help` for the sample counts.\n"
    );
    if results.quick {
        let _ = writeln!(
            out,
            "> Quick run (CI smoke test of the harness): a few samples per figure; the numbers \
             are indicative only and the verdicts below are not meaningful.\n"
        );
    }
    if let Some(a) = &results.aborted {
        let _ = writeln!(out, "> **Run incomplete:** {a}\n");
    }
    let _ = writeln!(out, "## Runtimes\n");
    for r in &results.runtimes {
        let status = match &r.failed {
            Some(e) => format!("**{}: failed: {}**", r.label, first_line(e)),
            None => {
                let failed_in: Vec<&str> = results
                    .sections
                    .iter()
                    .filter(|s| s.failures.contains_key(&r.label))
                    .map(|s| s.id.as_str())
                    .collect();
                if failed_in.is_empty() {
                    format!("{}: ok", r.label)
                } else {
                    format!("{}: ran; **failed in** {}", r.label, failed_in.join(", "))
                }
            }
        };
        let _ = writeln!(
            out,
            "- {status} — {} (CRI handler `{}`)",
            r.description, r.cri_handler
        );
    }
    let all_goals: Vec<GoalCheck> = results
        .sections
        .iter()
        .flat_map(|s| goals(s, results))
        .collect();
    let _ = writeln!(out, "\n## Goals\n");
    goal_table(&mut out, &all_goals);
    let _ = writeln!(out, "\n## Machine\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    for (k, label) in [
        ("kernel", "kernel"),
        ("os", "OS"),
        ("cpu", "CPU"),
        ("cpus", "CPUs"),
        ("mem_total_kb", "memory (kB)"),
        ("cgroups", "cgroups"),
        ("containerd", "containerd"),
        ("runtime_state", "runtime state"),
        ("runc", "runc"),
        ("rustc", "rustc"),
        ("bench_build", "stockade-bench build"),
        ("loadavg_start", "load average at start"),
        ("loadavg_end", "load average at end"),
    ] {
        let _ = writeln!(out, "| {label} | {} |", s(k));
    }
    if let Some(shim) = m.get("stockade_shim") {
        let text = match (shim.get("path"), shim.get("build"), shim.get("size_bytes")) {
            (Some(p), Some(b), Some(sz)) => format!(
                "`{}` ({} build, {:.1} MB)",
                p.as_str().unwrap_or(""),
                b.as_str().unwrap_or(""),
                sz.as_f64().unwrap_or(0.0) / 1e6
            ),
            _ => format!("`{shim}`"),
        };
        let _ = writeln!(out, "| Stockade shim | {} |", text.replace('|', "/"));
    }
    let _ = writeln!(out, "\nSettings: `{}`", results.settings);

    for (i, sec) in results.sections.iter().enumerate() {
        let _ = writeln!(out, "\n## {}. {}\n", i + 1, sec.title);
        let _ = writeln!(out, "{}\n", sec.method);
        if let Some(skip) = &sec.skipped {
            let _ = writeln!(out, "**Skipped:** {skip}");
            continue;
        }
        for (r, e) in &sec.failures {
            let _ = writeln!(
                out,
                "**{r}: failed:** `{}`\n",
                first_line(e).replace('`', "'")
            );
        }
        table(&mut out, sec, &known);
        if floor::has_floor(sec) {
            let _ = writeln!(out, "\n### Own share (minus the floor)\n");
            floor::table(&mut out, sec, &known);
        }
        for n in sec.notes.iter().chain(derived_notes(sec, &known).iter()) {
            let _ = writeln!(out, "\n- {n}");
        }
        let checks = goals(sec, results);
        if !checks.is_empty() {
            let _ = writeln!(out, "\nGoals for this figure:\n");
            goal_table(&mut out, &checks);
        }
        for (name, text) in figures(sec, &known) {
            let _ = writeln!(out, "\n![{name}]({name})");
            figs.push((name, text));
        }
        let _ = writeln!(out, "\n_Section time: {:.1} s._", sec.duration_s);
    }
    closing_note(&mut out, &all_goals);
    (out, figs)
}

/// Every goal once more, as sentences: figure, value, verdict.
fn closing_note(out: &mut String, checks: &[GoalCheck]) {
    let _ = writeln!(out, "\n## Closing note\n");
    let met = checks
        .iter()
        .filter(|g| g.verdict == crate::goals::Verdict::Met)
        .count();
    let _ = writeln!(out, "{met} of {} goal checks met.\n", checks.len());
    for g in checks {
        let _ = writeln!(
            out,
            "- {} — {} ({}): {} → {}",
            g.goal,
            g.figure,
            g.runtime,
            g.value,
            g.verdict.text()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RuntimeStatus;
    use crate::runtimes::FLOOR;

    fn results(sections: Vec<Section>) -> Results {
        let rt = |l: &str| RuntimeStatus {
            label: l.into(),
            cri_handler: l.into(),
            description: String::new(),
            ctr_args: Vec::new(),
            failed: None,
        };
        Results {
            tool: "t".into(),
            quick: true,
            started_utc: String::new(),
            finished_utc: String::new(),
            duration_s: 0.0,
            machine: serde_json::json!({}),
            settings: serde_json::json!({}),
            runtimes: vec![rt("runc"), rt("stockade"), rt(FLOOR)],
            sections,
            aborted: None,
        }
    }

    #[test]
    fn report_names_failures_and_links_every_figure() {
        let mut sec = Section::new("lifecycle_serial", "L", "");
        for v in [100.0, 120.0] {
            sec.push("runc", "start_total", "ms", v);
            sec.push(FLOOR, "start_total", "ms", v / 2.0);
        }
        sec.fail("stockade", &anyhow::anyhow!("no shim"));
        let mut r = results(vec![sec]);
        r.runtimes[1].failed = Some("no shim".into());
        let (md, figs) = render(&r);
        assert!(md.contains("**stockade: failed: no shim**"), "{md}");
        assert!(md.contains("### Own share (minus the floor)"), "{md}");
        assert!(md.contains("## Closing note"), "{md}");
        assert!(figs
            .iter()
            .any(|(n, _)| n == "lifecycle_serial_own_share.svg"));
        for (name, svg) in &figs {
            assert!(md.contains(&format!("]({name})")), "{name} not linked");
            assert!(
                svg.starts_with("<svg") || svg.starts_with("<?xml"),
                "{name}"
            );
        }
    }
}
