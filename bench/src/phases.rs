//! Where a Create and a Start spend their time inside the Stockade shim: the durations of
//! the shim's tracing spans, read back from the shim log, summed per container and phase.
//!
//! # The format this expects
//!
//! The shim's tracing goes to the bundle's `log` fifo, which containerd 1.6 copies line by
//! line into its own output (the bench's containerd.log). A span counts when its close is
//! printed by tracing-subscriber's `fmt` layer with `.with_span_events(FmtSpan::CLOSE)`
//! (the shim's layer already has ANSI and targets off), i.e. lines like
//!
//! ```text
//! 2026-12-01T10:31:00.123456Z DEBUG create{container=3f2a… pod=9c1e…}:create.mount_rootfs: close time.busy=1.20ms time.idle=35.1µs
//! ```
//!
//! - the span's name is the last element of the context before `: close`; it counts when
//!   it is `create` or `start` (the whole Task call) or starts with `create.` / `start.`
//!   (a phase, e.g. `create.decide`, `create.mount_rootfs`, `create.libcontainer`,
//!   `start.exec`);
//! - the container is the `container` field of the innermost span of the context that
//!   has one (so it is enough on the `create` / `start` span);
//! - the duration is `time.busy + time.idle` (creation to close, i.e. wall time, also
//!   for spans of async code that wait), in tracing-subscriber's units (ns, µs, ms, s).
//!
//! A phase that closes more than once for a container is summed.

use crate::model::Section;
use crate::stats::summarize;
use crate::svg;
use std::collections::BTreeMap;

/// One span-close line.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanClose {
    pub name: String,
    pub container: Option<String>,
    pub ms: f64,
}

/// `1.20ms` -> 1.2 (milliseconds).
fn duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "ns" => 1e-6,
        "µs" | "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        _ => return None,
    };
    Some(v * scale)
}

/// Split at `sep` outside `{...}` and quotes.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let (mut out, mut depth, mut quoted, mut start) = (Vec::new(), 0i32, false, 0);
    let mut prev = '\0';
    for (i, c) in s.char_indices() {
        match c {
            '"' if prev != '\\' => quoted = !quoted,
            '{' if !quoted => depth += 1,
            '}' if !quoted => depth -= 1,
            c if c == sep && depth == 0 && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
        prev = c;
    }
    out.push(&s[start..]);
    out
}

/// `container` field of a span context element `name{k=v k2="v 2"}`.
fn field<'a>(element: &'a str, key: &str) -> Option<&'a str> {
    let inner = element.split_once('{')?.1.strip_suffix('}')?;
    split_top(inner, ' ').into_iter().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

/// The span close on this line, if it is one of the shim's create/start spans.
pub fn parse_line(line: &str) -> Option<SpanClose> {
    let (head, tail) = line.split_once(": close time.busy=")?;
    let (busy, rest) = tail.split_once(" time.idle=")?;
    let idle = rest.split_whitespace().next()?;
    let ms = duration_ms(busy.trim())? + duration_ms(idle)?;
    // head: "<timestamp> <LEVEL> <context>"; the level may be padded.
    let ctx = ["TRACE ", "DEBUG ", "INFO ", "WARN ", "ERROR "]
        .iter()
        .find_map(|lvl| head.split_once(lvl).map(|(_, c)| c))?
        .trim();
    let elements = split_top(ctx, ':');
    let last = elements.last()?;
    let name = last.split('{').next()?.to_string();
    let counted = name == "create"
        || name == "start"
        || name.starts_with("create.")
        || name.starts_with("start.");
    if !counted {
        return None;
    }
    let container = elements
        .iter()
        .rev()
        .find_map(|e| field(e, "container"))
        .map(str::to_string);
    Some(SpanClose {
        name,
        container,
        ms,
    })
}

/// Per container, per span name: the summed milliseconds.
pub fn collect(log: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for span in log.lines().filter_map(parse_line) {
        if let Some(c) = span.container {
            *out.entry(c).or_default().entry(span.name).or_default() += span.ms;
        }
    }
    out
}

/// A container the bench ran, to look up in the log.
#[derive(Debug, Clone)]
pub struct Ran {
    pub runtime: String,
    /// "sandbox" (the pod's pause container) or "app", with the scale level if any
    /// ("app 250 pods").
    pub kind: String,
    pub id: String,
}

/// The serial lifecycle's breakdown: one sample per container and phase, metric
/// `<kind> <span>`, plus `<kind> create+start` when both whole-call spans are there.
pub fn section(log: &str, ran: &[Ran]) -> Section {
    breakdown(
        "shim_phases",
        "Where Create and Start go inside the shim",
        "the containers of the serial CRI lifecycle section",
        log,
        ran,
    )
}

/// The same breakdown for the scale section's timed cycles, per level: where the growth
/// with the pod count lands inside the shim.
pub fn scale_section(log: &str, ran: &[Ran]) -> Section {
    breakdown(
        "shim_phases_scale",
        "Where Create and Start go inside the shim as the node fills up",
        "the timed cycles of the scale section (kind followed by the number of pods \
         running)",
        log,
        ran,
    )
}

fn breakdown(id: &str, title: &str, which: &str, log: &str, ran: &[Ran]) -> Section {
    let mut sec = Section::new(
        id,
        title,
        &format!(
            "Durations of the shim's tracing spans named `create`, `start`, `create.*` and \
             `start.*`, read from the span-close lines the shim writes to its log (copied \
             into containerd's log; format in bench/src/phases.rs), summed per container \
             and phase, for {which}. `create+start` is the whole Create call plus the whole \
             Start call of one container."
        ),
    );
    sec.baseline = String::new();
    let spans = collect(log);
    let closes = log
        .lines()
        .filter(|l| l.contains(": close time.busy="))
        .count();
    let mut found = 0;
    for r in ran {
        let Some(phases) = spans.get(&r.id) else {
            continue;
        };
        found += 1;
        for (name, ms) in phases {
            sec.push(&r.runtime, &format!("{} {name}", r.kind), "ms", *ms);
        }
        if let (Some(c), Some(s)) = (phases.get("create"), phases.get("start")) {
            sec.push(&r.runtime, &format!("{} create+start", r.kind), "ms", c + s);
        }
    }
    sec.notes.push(format!(
        "{found} of {} containers had spans; {closes} span-close lines in the log.",
        ran.len()
    ));
    if found == 0 {
        sec.notes.push(
            "No create/start spans: the shim does not emit them yet (it needs spans named \
             `create`, `start`, `create.*`, `start.*` with a `container` field, and \
             `.with_span_events(FmtSpan::CLOSE)` on its fmt layer)."
                .into(),
        );
    }
    sec
}

/// Bars of the median per phase (whiskers p10-p90), phases in order of their medians.
pub fn figure(sec: &Section) -> Option<crate::report::Figure> {
    let mut rows: Vec<(String, String, Vec<f64>)> = sec
        .series
        .iter()
        .map(|s| {
            (
                format!("{} · {}", s.runtime, s.metric),
                s.runtime.clone(),
                s.samples.clone(),
            )
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    rows.sort_by(|a, b| {
        let m = |v: &[f64]| summarize(v).map(|s| s.p50).unwrap_or(0.0);
        a.0.split(' ')
            .nth(2)
            .cmp(&b.0.split(' ').nth(2))
            .then(m(&b.2).total_cmp(&m(&a.2)))
    });
    Some((
        format!("{}.svg", sec.id),
        svg::bars(&sec.title, "ms", &rows, None),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::layer::SubscriberExt;

    /// A writer into a shared buffer, to see what the fmt layer prints.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The shim's fmt layer (logging.rs: no ANSI, no target) plus span-close events.
    fn shim_like_log(f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_target(false)
            .with_span_events(FmtSpan::CLOSE)
            .with_writer(move || w.clone());
        let sub = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("debug"))
            .with(layer);
        tracing::subscriber::with_default(sub, f);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn reads_the_span_closes_tracing_subscriber_prints() {
        let log = shim_like_log(|| {
            let create = tracing::debug_span!("create", container = "c1", pod = %"p 1");
            let _g = create.enter();
            for _ in 0..2 {
                let _p = tracing::debug_span!("create.mount_rootfs").entered();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            tracing::info!("created");
            let _other = tracing::debug_span!("zygote.request").entered();
        });
        let spans = collect(&log);
        let c1 = spans.get("c1").unwrap_or_else(|| panic!("no c1 in\n{log}"));
        assert!(c1["create.mount_rootfs"] >= 4.0, "{c1:?}\n{log}");
        assert!(c1["create"] >= c1["create.mount_rootfs"], "{c1:?}");
        assert_eq!(
            c1.len(),
            2,
            "zygote.request is not a create/start span: {c1:?}"
        );
    }

    #[test]
    fn parses_units_levels_and_quoted_fields() {
        let l = "2026-12-01T10:31:00.1Z DEBUG start{container=\"a b\"}:start.exec: close time.busy=1.50ms time.idle=500µs";
        assert_eq!(
            parse_line(l),
            Some(SpanClose {
                name: "start.exec".into(),
                container: Some("a b".into()),
                ms: 2.0
            })
        );
        let l = "2026-12-01T10:31:00.1Z  INFO create{container=x}: close time.busy=1.00s time.idle=10.0ns";
        assert!((parse_line(l).unwrap().ms - 1000.00001).abs() < 1e-9);
        assert_eq!(parse_line("2026 DEBUG create{container=x}: created"), None);
        assert_eq!(
            parse_line("2026 DEBUG other{container=x}: close time.busy=1ms time.idle=1ms"),
            None
        );
    }

    #[test]
    fn section_pairs_create_and_start_per_container() {
        let log = "\
t DEBUG create{container=s}: close time.busy=3.00ms time.idle=1.00ms
t DEBUG start{container=s}: close time.busy=1.00ms time.idle=0.00ns
t DEBUG create{container=a}:create.decide: close time.busy=0.50ms time.idle=0.00ns
t DEBUG create{container=other}: close time.busy=9.00ms time.idle=0.00ns";
        let ran = [
            Ran {
                runtime: "stockade".into(),
                kind: "sandbox".into(),
                id: "s".into(),
            },
            Ran {
                runtime: "stockade".into(),
                kind: "app".into(),
                id: "a".into(),
            },
        ];
        let sec = section(log, &ran);
        assert_eq!(
            sec.samples("stockade", "sandbox create+start")
                .unwrap()
                .samples,
            vec![5.0]
        );
        assert_eq!(
            sec.samples("stockade", "app create.decide")
                .unwrap()
                .samples,
            vec![0.5]
        );
        assert!(sec.samples("stockade", "app create+start").is_none());
        assert!(
            sec.notes[0].starts_with("2 of 2 containers"),
            "{:?}",
            sec.notes
        );
        assert!(figure(&sec).is_some());
    }
}
