//! Each runtime's own share of a figure: its time minus the floor's (the null runtime,
//! measured in the same run, interleaved), i.e. what is left once containerd's own work
//! is taken out, and Stockade's own share as a ratio of runc's.

use crate::model::Section;
use crate::report::{fmt, fmt_ratio, summary, Figure};
use crate::runtimes::FLOOR;
use crate::stats::{summarize, Summary};
use crate::svg;
use std::fmt::Write as _;

/// Metrics whose own share is plotted (the start path, where the goals are).
const PLOTTED: &[&str] = &[
    "start_total",
    "run_pod_sandbox",
    "create_container",
    "start_container",
    "total",
];

#[derive(Debug, Clone)]
pub struct Own {
    /// The own share's median.
    pub p50: f64,
    /// p10-p90 of the per-round differences (paired samples only).
    pub spread: Option<(f64, f64)>,
    /// Per-round differences (runtime sample i minus floor sample i), when paired.
    pub paired: Vec<f64>,
}

/// `rt`'s own share of `metric`. Samples are paired round by round when both series
/// have the same length and the section interleaves runtimes (sample i of each was taken
/// in the same round): the median of the differences. Otherwise the difference of the
/// medians.
pub fn own_share(sec: &Section, rt: &str, metric: &str) -> Option<Own> {
    let a = sec.samples(rt, metric)?;
    let f = sec.samples(FLOOR, metric)?;
    if a.samples.is_empty() || f.samples.is_empty() {
        return None;
    }
    if a.samples.len() == f.samples.len() && !sec.runtimes_in_turn {
        let paired: Vec<f64> = a
            .samples
            .iter()
            .zip(&f.samples)
            .map(|(x, y)| x - y)
            .collect();
        let s: Summary = summarize(&paired)?;
        return Some(Own {
            p50: s.p50,
            spread: Some((s.p10, s.p90)),
            paired,
        });
    }
    let (sa, sf) = (summarize(&a.samples)?, summarize(&f.samples)?);
    Some(Own {
        p50: sa.p50 - sf.p50,
        spread: None,
        paired: Vec::new(),
    })
}

/// `own / runc_own`, when runc's own share is positive (else the ratio means nothing).
pub fn own_ratio(own: f64, runc_own: f64) -> Option<f64> {
    (runc_own > 0.0).then(|| own / runc_own)
}

/// Whether the section has floor samples at all.
pub fn has_floor(sec: &Section) -> bool {
    sec.series.iter().any(|s| s.runtime == FLOOR)
}

/// The own-share table: per metric, the floor's median, then each runtime's median,
/// own share with spread, and own share ÷ runc's own share.
pub fn table(out: &mut String, sec: &Section, known: &[String]) {
    let runtimes: Vec<String> = sec
        .runtimes(known)
        .into_iter()
        .filter(|r| r != FLOOR)
        .collect();
    let pairing = if sec.runtimes_in_turn {
        "runtimes one after the other: the difference of the medians"
    } else {
        "rounds interleaved; median of the per-round differences, p10–p90 of them"
    };
    let _ = writeln!(
        out,
        "Own share = time minus the floor's ({FLOOR}: containerd's own share), same run, \
         {pairing}.\n\n\
         | metric | floor median | runtime | median | own share | own p10–p90 | own ÷ runc's own |\n\
         |---|---:|---|---:|---:|---|---:|"
    );
    for m in sec.metrics() {
        let Some(floor) = summary(sec, FLOOR, &m) else {
            continue;
        };
        let unit = sec
            .samples(FLOOR, &m)
            .map(|s| s.unit.clone())
            .unwrap_or_default();
        let runc_own = own_share(sec, "runc", &m);
        for r in &runtimes {
            let (Some(s), Some(own)) = (summary(sec, r, &m), own_share(sec, r, &m)) else {
                continue;
            };
            let spread = own
                .spread
                .map(|(lo, hi)| format!("{}–{}", fmt(lo), fmt(hi)))
                .unwrap_or_else(|| "(unpaired)".into());
            let ratio = match (&runc_own, r.as_str()) {
                (_, "runc") => String::new(),
                (Some(b), _) => own_ratio(own.p50, b.p50)
                    .map(fmt_ratio)
                    .unwrap_or_else(|| "—".into()),
                (None, _) => "—".into(),
            };
            let _ = writeln!(
                out,
                "| {m} ({unit}) | {} | {r} | {} | {} | {spread} | {ratio} |",
                fmt(floor.p50),
                fmt(s.p50),
                fmt(own.p50),
            );
        }
    }
}

/// Bars of the own share (per-round differences) of the start-path metrics.
pub fn figure(sec: &Section, known: &[String]) -> Option<Figure> {
    let mut rows = Vec::new();
    for m in sec
        .metrics()
        .iter()
        .filter(|m| PLOTTED.contains(&m.as_str()))
    {
        for r in sec.runtimes(known).iter().filter(|r| *r != FLOOR) {
            if let Some(own) = own_share(sec, r, m).filter(|o| !o.paired.is_empty()) {
                rows.push((format!("{r} · {m}"), r.clone(), own.paired));
            }
        }
    }
    if rows.is_empty() {
        return None;
    }
    let unit = sec
        .series
        .iter()
        .find(|s| s.runtime == FLOOR)
        .map(|s| s.unit.clone())
        .unwrap_or_default();
    Some((
        format!("{}_own_share.svg", sec.id),
        svg::bars(
            &format!("{} — own share (minus the floor)", sec.title),
            &unit,
            &rows,
            None,
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec() -> Section {
        let mut s = Section::new("lifecycle_serial", "L", "");
        for (r, f) in [(100.0, 60.0), (110.0, 61.0), (90.0, 59.0)] {
            s.push("runc", "start_total", "ms", r);
            s.push("stockade", "start_total", "ms", r - 20.0);
            s.push(FLOOR, "start_total", "ms", f);
        }
        s
    }

    #[test]
    fn own_share_pairs_rounds() {
        let s = sec();
        let own = own_share(&s, "runc", "start_total").unwrap();
        assert_eq!(own.paired, vec![40.0, 49.0, 31.0]);
        assert_eq!(own.p50, 40.0);
        let st = own_share(&s, "stockade", "start_total").unwrap();
        assert_eq!(st.p50, 20.0);
        assert_eq!(own_ratio(st.p50, own.p50), Some(0.5));
        assert_eq!(own_ratio(1.0, 0.0), None);
    }

    #[test]
    fn unequal_counts_fall_back_to_the_difference_of_medians() {
        let mut s = sec();
        s.push("runc", "start_total", "ms", 1000.0);
        let own = own_share(&s, "runc", "start_total").unwrap();
        assert!(own.spread.is_none());
        assert_eq!(own.p50, 105.0 - 60.0);
    }

    #[test]
    fn runtimes_in_turn_are_not_paired_round_by_round() {
        let mut s = sec();
        s.runtimes_in_turn = true;
        let own = own_share(&s, "runc", "start_total").unwrap();
        assert!(own.spread.is_none() && own.paired.is_empty());
        assert_eq!(own.p50, 100.0 - 60.0);
        let mut out = String::new();
        table(
            &mut out,
            &s,
            &["runc".into(), "stockade".into(), FLOOR.into()],
        );
        assert!(out.contains("difference of the medians"), "{out}");
        assert!(out.contains("(unpaired)"), "{out}");
    }

    #[test]
    fn table_and_figure_name_every_runtime_but_the_floor() {
        let s = sec();
        let known = vec!["runc".into(), "stockade".into(), FLOOR.into()];
        let mut out = String::new();
        table(&mut out, &s, &known);
        assert!(out.contains("| start_total (ms) | 60.0 | stockade | 80.0 | 20.0 | "));
        assert!(out.contains("| 0.500× |"), "{out}");
        assert!(!out.contains(&format!("| {FLOOR} |")));
        let (name, svg) = figure(&s, &known).unwrap();
        assert_eq!(name, "lifecycle_serial_own_share.svg");
        assert!(svg.contains("stockade · start_total"));
    }
}
