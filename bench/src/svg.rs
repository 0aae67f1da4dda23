//! Plots as hand-written SVG: empirical CDFs of latency samples per runtime, and bars of
//! medians with p10-p90 whiskers. No plotting dependency; the output is plain text a
//! browser or GitHub renders.

use crate::stats::{quantile_sorted, summarize};
use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 380.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 56.0;

pub fn color(label: &str) -> &'static str {
    match label {
        "runc" => "#1f77b4",
        "stockade" => "#d62728",
        "stockade-strict" => "#2ca02c",
        "no filter" => "#1f77b4",
        "runc-seccomp" => "#9467bd",
        "null" => "#8c564b",
        _ => "#7f7f7f",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Round tick step (1, 2 or 5 times a power of ten) giving about `n` ticks up to `max`.
pub fn tick_step(max: f64, n: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / n;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}").trim_end_matches(".0").to_string()
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn frame(out: &mut String, title: &str, subtitle: &str, height: f64) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{height}" fill="white"/>
<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{}</text>
<text x="{LEFT}" y="37" fill="#555">{}</text>
"##,
        esc(title),
        esc(subtitle)
    );
}

/// Ticks, grid lines and the unit of an x axis from 0 to `max`, for a plot area starting
/// at `left` in a chart `height` high.
fn x_axis(out: &mut String, max: f64, unit: &str, left: f64, height: f64) {
    let (pw, ph) = (W - left - RIGHT, height - TOP - BOTTOM);
    let step = tick_step(max, 6.0);
    let mut v = 0.0;
    while v <= max * 1.0001 {
        let x = left + v / max * pw;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            fmt_tick(v)
        );
        v += step;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        height - 14.0,
        esc(unit)
    );
}

/// Empirical CDF of each series; `marks` are labelled vertical lines (e.g. a goal).
pub fn ecdf(
    title: &str,
    unit: &str,
    series: &[(String, Vec<f64>)],
    marks: &[(f64, String)],
) -> String {
    let mut out = String::new();
    let mut sorted: Vec<(String, Vec<f64>)> = series
        .iter()
        .map(|(l, s)| {
            let mut v: Vec<f64> = s.iter().copied().filter(|x| x.is_finite()).collect();
            v.sort_by(f64::total_cmp);
            (l.clone(), v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let max_all = sorted
        .iter()
        .filter_map(|(_, v)| v.last().copied())
        .fold(0.0, f64::max);
    let p99_max = sorted
        .iter()
        .map(|(_, v)| quantile_sorted(v, 0.99))
        .fold(0.0, f64::max);
    // A few huge outliers would squash the distribution: clip the axis, say so.
    let clipped = max_all > 3.0 * p99_max && p99_max > 0.0;
    let xmax_raw = if clipped {
        p99_max * 1.3
    } else {
        max_all * 1.05
    };
    let xmax = marks
        .iter()
        .map(|(x, _)| *x * 1.05)
        .fold(xmax_raw, f64::max)
        .max(1e-9);
    let subtitle = format!(
        "empirical CDF, {}{}",
        sorted
            .iter()
            .map(|(l, v)| format!("{l} n={}", v.len()))
            .collect::<Vec<_>>()
            .join(", "),
        if clipped {
            format!(
                "; x axis clipped at {} (max {})",
                fmt_tick(xmax),
                fmt_tick(max_all)
            )
        } else {
            String::new()
        }
    );
    frame(&mut out, title, &subtitle, H);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    for q in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
        let y = TOP + ph - q * ph;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{q}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0
        );
    }
    x_axis(&mut out, xmax, unit, LEFT, H);
    for (x, label) in marks {
        let px = LEFT + x / xmax * pw;
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#333" stroke-dasharray="5,4"/><text x="{:.1}" y="{:.1}" fill="#333">{}</text>"##,
            TOP + ph,
            px + 4.0,
            TOP + 12.0,
            esc(label)
        );
    }
    for (i, (label, v)) in sorted.iter_mut().enumerate() {
        let n = v.len() as f64;
        let mut pts = String::new();
        let mut prev_y = TOP + ph;
        let _ = write!(pts, "{LEFT:.1},{prev_y:.1} ");
        for (k, x) in v.iter().enumerate() {
            let px = LEFT + (x.min(xmax) / xmax) * pw;
            let y = TOP + ph - (k as f64 + 1.0) / n * ph;
            let _ = write!(pts, "{px:.1},{prev_y:.1} {px:.1},{y:.1} ");
            prev_y = y;
        }
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>
<rect x="{lx:.1}" y="{ly:.1}" width="12" height="12" fill="{c}"/><text x="{tx:.1}" y="{ty:.1}">{l}</text>
"#,
            c = color(label),
            lx = LEFT + pw - 150.0,
            ly = TOP + ph - 60.0 + i as f64 * 18.0,
            tx = LEFT + pw - 132.0,
            ty = TOP + ph - 50.0 + i as f64 * 18.0,
            l = esc(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Horizontal bars: per row, the median with a p10-p90 whisker; `goal` draws a line.
pub fn bars(
    title: &str,
    unit: &str,
    rows: &[(String, String, Vec<f64>)],
    goal: Option<(f64, String)>,
) -> String {
    let mut out = String::new();
    let stats: Vec<(String, String, f64, f64, f64)> = rows
        .iter()
        .filter_map(|(label, runtime, v)| {
            summarize(v).map(|s| (label.clone(), runtime.clone(), s.p50, s.p10, s.p90))
        })
        .collect();
    // Height follows the number of rows, the left margin the longest label.
    let row_h = 32.0;
    let height = TOP + BOTTOM + row_h * stats.len().max(1) as f64;
    frame(&mut out, title, "median, whisker p10-p90", height);
    let max = stats
        .iter()
        .map(|(_, _, _, _, hi)| *hi)
        .chain(goal.iter().map(|(g, _)| *g))
        .fold(0.0, f64::max)
        * 1.1;
    let max = if max > 0.0 { max } else { 1.0 };
    let longest = stats
        .iter()
        .map(|(l, ..)| l.chars().count())
        .max()
        .unwrap_or(0);
    let left = (longest as f64 * 7.0 + 16.0).max(LEFT);
    let pw = W - left - RIGHT;
    let ph = height - TOP - BOTTOM;
    x_axis(&mut out, max, unit, left, height);
    for (i, (label, runtime, med, lo, hi)) in stats.iter().enumerate() {
        let y = TOP + i as f64 * row_h + 4.0;
        let h = row_h - 8.0;
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>
<rect x="{left}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{}" opacity="0.8"/>
<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000"/>
<text x="{:.1}" y="{:.1}" fill="#000">{}</text>
"##,
            left - 6.0,
            y + h / 2.0 + 4.0,
            esc(label),
            med.max(0.0) / max * pw,
            color(runtime),
            left + lo.max(0.0) / max * pw,
            y + h / 2.0,
            left + hi.max(0.0) / max * pw,
            y + h / 2.0,
            left + hi.max(0.0) / max * pw + 4.0,
            y + h / 2.0 + 4.0,
            fmt_tick(*med)
        );
    }
    if let Some((g, label)) = goal {
        let x = left + g / max * pw;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#333" stroke-dasharray="5,4"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            TOP + ph,
            x + 4.0,
            TOP + ph - 4.0,
            esc(&label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One point of a line chart: the median at `x`, with a whisker from `lo` to `hi`.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub points: Vec<Point>,
}

/// Lines (one per label, colored by runtime) over a numeric x axis, with whiskers.
pub fn lines(title: &str, x_unit: &str, y_unit: &str, series: &[Line]) -> String {
    let mut out = String::new();
    frame(&mut out, title, y_unit, H);
    let pts = || series.iter().flat_map(|l| l.points.iter());
    let xmax = pts().map(|p| p.x).fold(0.0, f64::max).max(1.0) * 1.05;
    let ymax = pts().map(|p| p.hi.max(p.y)).fold(0.0, f64::max).max(1e-9) * 1.1;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = |x: f64| LEFT + x / xmax * pw;
    let py = |y: f64| TOP + ph - y.max(0.0) / ymax * ph;
    let step = tick_step(ymax, 5.0);
    let mut v = 0.0;
    while v <= ymax * 1.0001 {
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            py(v) + 4.0,
            fmt_tick(v),
            y = py(v)
        );
        v += step;
    }
    x_axis(&mut out, xmax, x_unit, LEFT, H);
    for (i, l) in series.iter().enumerate() {
        let c = color(&l.label);
        let path: Vec<String> = l
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.x), py(p.y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for p in &l.points {
            let _ = writeln!(
                out,
                r#"<circle cx="{x:.1}" cy="{:.1}" r="3.5" fill="{c}"/><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{c}"/><text x="{:.1}" y="{:.1}" fill="{c}">{}</text>"#,
                py(p.y),
                py(p.lo),
                py(p.hi),
                px(p.x) + 6.0,
                py(p.y) - 6.0,
                fmt_tick(p.y),
                x = px(p.x)
            );
        }
        let _ = writeln!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{c}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 10.0,
            TOP + 6.0 + i as f64 * 18.0,
            LEFT + 28.0,
            TOP + 16.0 + i as f64 * 18.0,
            esc(&l.label)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(600.0, 6.0), 100.0);
        assert_eq!(tick_step(7.0, 6.0), 2.0);
        assert_eq!(tick_step(0.3, 6.0), 0.05);
    }

    #[test]
    fn ecdf_is_well_formed_svg_with_one_line_per_series() {
        let svg = ecdf(
            "t <x>",
            "ms",
            &[
                ("runc".into(), vec![1.0, 2.0, 3.0]),
                ("stockade".into(), vec![2.0, 4.0]),
                ("empty".into(), vec![]),
            ],
            &[(2.5, "goal".into())],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;x&gt;"));
        assert!(svg.contains("stroke-dasharray"));
    }

    #[test]
    fn bars_skip_empty_rows() {
        let svg = bars(
            "m",
            "MB",
            &[
                ("runc".into(), "runc".into(), vec![12.0, 13.0]),
                ("x".into(), "stockade".into(), vec![]),
            ],
            Some((3.0, "goal 3 MB".into())),
        );
        assert_eq!(svg.matches("opacity=\"0.8\"").count(), 1);
    }
}
