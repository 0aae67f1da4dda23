//! The project's goals (issue 14 and the earlier rootfs goal), each judged on the figure
//! it names: met / not met / not measured (with why).

use crate::floor::{own_ratio, own_share};
use crate::model::{Results, Section};
use crate::report::{fmt, fmt_ratio, summary, why_missing};
use crate::runtimes::FLOOR;
use crate::stats::Summary;

/// Largest size ratio (big image / small image, medians) still called "independent of
/// image size": per-layer work plus noise, not per-file work.
pub const SIZE_INDEPENDENT_MAX: f64 = 1.25;
/// CRI start latency against runc, serial and 10-way parallel.
pub const START_P50_MAX: f64 = 0.7;
pub const START_P99_MAX: f64 = 0.8;
/// Stockade's own share of CRI start (time minus the floor's), p50, against runc's.
pub const OWN_SHARE_MAX: f64 = 0.5;
/// Shim-internal Create + Start of one container, p50.
pub const SHIM_CREATE_START_MAX_MS: f64 = 5.0;
pub const SHIM_PSS_MAX_MB: f64 = 2.0;
/// Shim RSS per pod against runc's shim.
pub const SHIM_RSS_MAX_RATIO: f64 = 1.0;
/// Workload figures against runc with containerd's default seccomp profile.
pub const WORKLOAD_MAX: f64 = 1.0;
/// Start latency with the most pods running against an empty node.
pub const SCALE_MAX: f64 = 1.2;

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Met,
    NotMet,
    NotMeasured(String),
}

impl Verdict {
    /// Met when `value` is at most `max`.
    pub fn at_most(value: f64, max: f64) -> Verdict {
        if value <= max {
            Verdict::Met
        } else {
            Verdict::NotMet
        }
    }

    pub fn text(&self) -> String {
        match self {
            Verdict::Met => "**met**".into(),
            Verdict::NotMet => "**NOT met**".into(),
            Verdict::NotMeasured(why) => format!("not measured ({why})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GoalCheck {
    pub goal: String,
    pub figure: String,
    pub runtime: String,
    pub value: String,
    pub verdict: Verdict,
}

/// Hardened runtimes (everything but the baseline, its seccomp variant and the floor).
fn candidates(results: &Results) -> Vec<String> {
    results
        .runtimes
        .iter()
        .map(|r| r.label.clone())
        .filter(|l| l.starts_with("stockade"))
        .collect()
}

/// A ratio goal: `num / den` at most `max`, with both figures in the value.
fn ratio_check(
    num: Option<f64>,
    den: Option<f64>,
    unit: &str,
    max: f64,
    missing: impl FnOnce() -> String,
) -> (String, Verdict) {
    let u = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    match (num, den) {
        (Some(a), Some(b)) if b > 0.0 => (
            format!("{}{u} vs {}{u} = {}", fmt(a), fmt(b), fmt_ratio(a / b)),
            Verdict::at_most(a / b, max),
        ),
        (Some(a), Some(b)) => (
            format!("{}{u} vs {}{u}", fmt(a), fmt(b)),
            Verdict::NotMeasured("the reference is not positive".into()),
        ),
        _ => ("—".into(), Verdict::NotMeasured(missing())),
    }
}

/// Which figure of a summary a goal judges (p50, p99).
type Pick = fn(&Summary) -> f64;

fn lifecycle_goals(sec: &Section, cands: &[String], out: &mut Vec<GoalCheck>) {
    let base = summary(sec, "runc", "start_total");
    for r in cands {
        let s = summary(sec, r, "start_total");
        let picks: [(String, Pick, f64); 2] = [
            (
                format!("CRI start p50 ≤ {START_P50_MAX}× runc"),
                |s| s.p50,
                START_P50_MAX,
            ),
            (
                format!("CRI start p99 ≤ {START_P99_MAX}× runc"),
                |s| s.p99,
                START_P99_MAX,
            ),
        ];
        for (goal, pick, max) in picks {
            let who = if s.is_none() { r.as_str() } else { "runc" };
            let (value, verdict) = ratio_check(
                s.as_ref().map(pick),
                base.as_ref().map(pick),
                "ms",
                max,
                || why_missing(sec, who),
            );
            out.push(GoalCheck {
                goal,
                figure: format!("{}: RunPodSandbox → running", sec.title),
                runtime: r.clone(),
                value,
                verdict,
            });
        }
        let own = own_share(sec, r, "start_total");
        let runc_own = own_share(sec, "runc", "start_total");
        let (value, verdict) = match (&own, &runc_own) {
            (Some(a), Some(b)) => match own_ratio(a.p50, b.p50) {
                Some(ratio) => (
                    format!(
                        "{} ms vs runc's {} ms = {}",
                        fmt(a.p50),
                        fmt(b.p50),
                        fmt_ratio(ratio)
                    ),
                    Verdict::at_most(ratio, OWN_SHARE_MAX),
                ),
                None => (
                    format!("{} ms vs runc's {} ms", fmt(a.p50), fmt(b.p50)),
                    Verdict::NotMeasured("runc's own share is not positive".into()),
                ),
            },
            _ => {
                let who = if summary(sec, FLOOR, "start_total").is_none() {
                    FLOOR
                } else if own.is_none() {
                    r.as_str()
                } else {
                    "runc"
                };
                ("—".into(), Verdict::NotMeasured(why_missing(sec, who)))
            }
        };
        out.push(GoalCheck {
            goal: format!("own share of CRI start p50 ≤ {OWN_SHARE_MAX}× runc's own share"),
            figure: format!("{}: start_total minus the floor's", sec.title),
            runtime: r.clone(),
            value,
            verdict,
        });
    }
}

fn phase_goals(sec: &Section, cands: &[String], out: &mut Vec<GoalCheck>) {
    for r in cands {
        for kind in ["app", "sandbox"] {
            let metric = format!("{kind} create+start");
            let (value, verdict) = match summary(sec, r, &metric) {
                Some(s) => (
                    format!("{} ms (n={})", fmt(s.p50), s.n),
                    Verdict::at_most(s.p50, SHIM_CREATE_START_MAX_MS),
                ),
                None if sec.skipped.is_some() || sec.failures.contains_key(r) => {
                    ("—".into(), Verdict::NotMeasured(why_missing(sec, r)))
                }
                None => (
                    "—".into(),
                    Verdict::NotMeasured(
                        "no `create`/`start` span-close lines in the shim log (see the section)"
                            .into(),
                    ),
                ),
            };
            out.push(GoalCheck {
                goal: format!("shim-internal Create + Start ≤ {SHIM_CREATE_START_MAX_MS} ms p50"),
                figure: format!("{}: {kind} containers", sec.title),
                runtime: r.clone(),
                value,
                verdict,
            });
        }
    }
}

fn memory_goals(sec: &Section, cands: &[String], out: &mut Vec<GoalCheck>) {
    let runc_rss = summary(sec, "runc", "shim_rss_per_pod").map(|s| s.p50);
    for r in cands {
        let (value, verdict) = match summary(sec, r, "shim_pss_per_pod") {
            Some(s) => (
                format!("{} MB", fmt(s.p50)),
                Verdict::at_most(s.p50, SHIM_PSS_MAX_MB),
            ),
            None => ("—".into(), Verdict::NotMeasured(why_missing(sec, r))),
        };
        out.push(GoalCheck {
            goal: format!("shim PSS ≤ {SHIM_PSS_MAX_MB} MB per pod"),
            figure: sec.title.clone(),
            runtime: r.clone(),
            value,
            verdict,
        });
        let rss = summary(sec, r, "shim_rss_per_pod").map(|s| s.p50);
        let who = if rss.is_none() { r.as_str() } else { "runc" };
        let (value, verdict) = ratio_check(rss, runc_rss, "MB", SHIM_RSS_MAX_RATIO, || {
            why_missing(sec, who)
        });
        out.push(GoalCheck {
            goal: "shim RSS per pod ≤ runc's shim".into(),
            figure: sec.title.clone(),
            runtime: r.clone(),
            value,
            verdict,
        });
    }
}

fn workload_goals(sec: &Section, cands: &[String], out: &mut Vec<GoalCheck>) {
    let reference = "runc-seccomp";
    for r in cands {
        for m in sec.metrics() {
            let who = if summary(sec, r, &m).is_none() {
                r.as_str()
            } else {
                reference
            };
            let unit = sec
                .samples(reference, &m)
                .map(|s| s.unit.clone())
                .unwrap_or_default();
            let (value, verdict) = ratio_check(
                summary(sec, r, &m).map(|s| s.p50),
                summary(sec, reference, &m).map(|s| s.p50),
                &unit,
                WORKLOAD_MAX,
                || why_missing(sec, who),
            );
            out.push(GoalCheck {
                goal: format!("workload ≤ {WORKLOAD_MAX:.2}× runc with its default seccomp"),
                figure: format!("{m} (median, {r} / {reference})"),
                runtime: r.clone(),
                value,
                verdict,
            });
        }
    }
}

fn scale_goals(sec: &Section, cands: &[String], out: &mut Vec<GoalCheck>) {
    let levels = crate::scale::levels_of(sec);
    let (first, last) = match (levels.first(), levels.last()) {
        (Some(first), Some(last)) if first < last => (first, last),
        _ => {
            for r in cands {
                out.push(GoalCheck {
                    goal: format!("start latency with the most pods ≤ {SCALE_MAX}× an empty node"),
                    figure: sec.title.clone(),
                    runtime: r.clone(),
                    value: "—".into(),
                    verdict: Verdict::NotMeasured(if levels.len() == 1 {
                        "one level only: nothing to compare it with".into()
                    } else {
                        why_missing(sec, r)
                    }),
                });
            }
            return;
        }
    };
    for r in cands {
        let at = |n: usize| summary(sec, r, &crate::scale::start_metric(n)).map(|s| s.p50);
        let (value, verdict) = ratio_check(at(*last), at(*first), "ms", SCALE_MAX, || {
            why_missing(sec, r)
        });
        out.push(GoalCheck {
            goal: format!("start latency at {last} pods ≤ {SCALE_MAX}× at {first} pods"),
            figure: format!("{}: start_total p50", sec.title),
            runtime: r.clone(),
            value,
            verdict,
        });
    }
}

fn rootfs_goals(sec: &Section, cands: &[String], out: &mut Vec<GoalCheck>) {
    let prefix = if sec.id == "rootfs_library" {
        "mount"
    } else {
        "create_start"
    };
    let mut sizes: Vec<usize> = sec
        .metrics()
        .iter()
        .filter_map(|m| {
            m.strip_prefix(&format!("{prefix}_"))
                .and_then(|r| r.strip_suffix("_files"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let who: Vec<String> = if sec.id == "rootfs_library" {
        vec!["stockade".into()]
    } else {
        cands.to_vec()
    };
    for r in &who {
        let (value, verdict) = match (sizes.first(), sizes.last()) {
            (Some(small), Some(big)) if small != big => {
                let a = summary(sec, r, &format!("{prefix}_{small}_files")).map(|s| s.p50);
                let b = summary(sec, r, &format!("{prefix}_{big}_files")).map(|s| s.p50);
                let (v, verdict) =
                    ratio_check(b, a, "ms", SIZE_INDEPENDENT_MAX, || why_missing(sec, r));
                (format!("{big} files vs {small} files: {v}"), verdict)
            }
            _ => ("—".into(), Verdict::NotMeasured(why_missing(sec, r))),
        };
        out.push(GoalCheck {
            goal: format!(
                "rootfs setup independent of image size (big/small ≤ {SIZE_INDEPENDENT_MAX}×)"
            ),
            figure: sec.title.clone(),
            runtime: r.clone(),
            value,
            verdict,
        });
    }
}

/// The goals judged by one section.
pub fn goals(sec: &Section, results: &Results) -> Vec<GoalCheck> {
    let mut out = Vec::new();
    let cands = candidates(results);
    match sec.id.as_str() {
        "lifecycle_serial" | "lifecycle_parallel" => lifecycle_goals(sec, &cands, &mut out),
        "shim_phases" => phase_goals(sec, &cands, &mut out),
        "memory" => memory_goals(sec, &cands, &mut out),
        "workload" => workload_goals(sec, &cands, &mut out),
        "scale" => scale_goals(sec, &cands, &mut out),
        "rootfs_library" | "rootfs_cri" => rootfs_goals(sec, &cands, &mut out),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RuntimeStatus;

    pub fn results(sections: Vec<Section>) -> Results {
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
            runtimes: vec![rt("runc"), rt("stockade"), rt("runc-seccomp"), rt(FLOOR)],
            sections,
            aborted: None,
        }
    }

    fn lifecycle(runc: f64, stockade: f64, floor: Option<f64>) -> Section {
        let mut s = Section::new("lifecycle_serial", "L", "");
        for _ in 0..10 {
            s.push("runc", "start_total", "ms", runc);
            s.push("stockade", "start_total", "ms", stockade);
            if let Some(f) = floor {
                s.push(FLOOR, "start_total", "ms", f);
            }
        }
        s
    }

    fn verdicts(sec: &Section) -> Vec<Verdict> {
        goals(sec, &results(vec![]))
            .into_iter()
            .map(|g| g.verdict)
            .collect()
    }

    #[test]
    fn scale_goal_needs_two_levels() {
        let mut s = Section::new("scale", "S", "");
        for _ in 0..5 {
            s.push("stockade", &crate::scale::start_metric(250), "ms", 100.0);
        }
        assert!(matches!(verdicts(&s)[..], [Verdict::NotMeasured(_)]));
        for _ in 0..5 {
            s.push("stockade", &crate::scale::start_metric(0), "ms", 90.0);
        }
        assert_eq!(verdicts(&s), vec![Verdict::Met]);
    }

    #[test]
    fn start_goals_compare_p50_p99_and_own_share_with_runc() {
        // 65 vs 100: p50 0.65 ≤ 0.7, p99 ≤ 0.8; own share (65-50)/(100-50) = 0.3 ≤ 0.5.
        let v = verdicts(&lifecycle(100.0, 65.0, Some(50.0)));
        assert_eq!(v, vec![Verdict::Met, Verdict::Met, Verdict::Met]);
        // 75 vs 100: p50 misses 0.7, p99 meets 0.8; own 25/50 = 0.5 meets.
        let v = verdicts(&lifecycle(100.0, 75.0, Some(50.0)));
        assert_eq!(v, vec![Verdict::NotMet, Verdict::Met, Verdict::Met]);
        // own 30/50 = 0.6 misses.
        let v = verdicts(&lifecycle(100.0, 80.0, Some(50.0)));
        assert_eq!(v[2], Verdict::NotMet);
    }

    #[test]
    fn own_share_without_the_floor_is_not_measured_and_says_why() {
        let mut sec = lifecycle(100.0, 65.0, None);
        sec.fail(FLOOR, &anyhow::anyhow!("null shim not built"));
        let v = verdicts(&sec);
        match &v[2] {
            Verdict::NotMeasured(why) => assert!(why.contains("null shim not built"), "{why}"),
            other => panic!("expected not measured, got {other:?}"),
        }
    }

    #[test]
    fn failed_runtime_is_not_measured_with_its_error() {
        let mut sec = Section::new("lifecycle_serial", "L", "");
        sec.push("runc", "start_total", "ms", 100.0);
        sec.fail("stockade", &anyhow::anyhow!("shim exploded\nmore"));
        match &verdicts(&sec)[0] {
            Verdict::NotMeasured(why) => assert_eq!(why, "stockade: failed: shim exploded"),
            other => panic!("expected not measured, got {other:?}"),
        }
    }

    #[test]
    fn memory_goals_use_the_absolute_pss_and_runcs_rss() {
        let mut mem = Section::new("memory", "M", "");
        mem.push("stockade", "shim_pss_per_pod", "MB", 2.2);
        mem.push("stockade", "shim_rss_per_pod", "MB", 9.0);
        mem.push("runc", "shim_rss_per_pod", "MB", 12.0);
        assert_eq!(verdicts(&mem), vec![Verdict::NotMet, Verdict::Met]);
    }

    #[test]
    fn workload_is_judged_against_runc_with_seccomp() {
        let mut w = Section::new("workload", "W", "");
        w.push("runc", "getppid", "ns", 50.0);
        w.push("runc-seccomp", "getppid", "ns", 100.0);
        w.push("stockade", "getppid", "ns", 100.0);
        assert_eq!(verdicts(&w), vec![Verdict::Met], "1.00× meets ≤ 1.00×");
        w.push("stockade", "getppid", "ns", 102.0);
        w.push("stockade", "getppid", "ns", 102.0);
        assert_eq!(verdicts(&w), vec![Verdict::NotMet]);
    }

    #[test]
    fn size_goal_uses_the_relative_limit() {
        let mut rootfs = Section::new("rootfs_library", "R", "");
        for _ in 0..5 {
            rootfs.push("stockade", "mount_10_files", "ms", 1.0);
            rootfs.push("stockade", "mount_50000_files", "ms", 1.2);
        }
        assert_eq!(verdicts(&rootfs), vec![Verdict::Met]);
        for _ in 0..6 {
            rootfs.push("stockade", "mount_50000_files", "ms", 9.0);
        }
        assert_eq!(verdicts(&rootfs), vec![Verdict::NotMet]);
    }

    #[test]
    fn phase_goal_without_spans_says_where_to_look() {
        let sec = Section::new("shim_phases", "P", "");
        let v = verdicts(&sec);
        assert_eq!(v.len(), 2);
        assert!(matches!(&v[0], Verdict::NotMeasured(w) if w.contains("span-close")));
        let mut sec = Section::new("shim_phases", "P", "");
        for _ in 0..3 {
            sec.push("stockade", "app create+start", "ms", 4.0);
            sec.push("stockade", "sandbox create+start", "ms", 9.0);
        }
        assert_eq!(verdicts(&sec), vec![Verdict::Met, Verdict::NotMet]);
    }
}
