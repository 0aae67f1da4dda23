//! Where start latency's growth with the pod count goes, per CRI call of the scale
//! section's timed cycles: the runtime's growth from the first level to the last, the
//! floor's (containerd's and CNI's, paid by every runtime), the growth inside the shim
//! (its create/start spans, from the shim-phases-at-scale section) and what is left: work
//! outside the shim's spans that is the runtime's own (the shim's start, containerd's
//! handling of this runtime's shim). Differences of medians: an attribution, not a sum.

use crate::model::Section;
use crate::report::summary;
use crate::runtimes::FLOOR;
use crate::scale::{call_metric, levels_of, CALLS};

/// The shim span that lies inside each CRI call (`<kind> <N> pods <phase>` in the
/// shim-phases-at-scale section).
fn shim_metric(call: &str, pods: usize) -> Option<String> {
    let (kind, phase) = match call {
        "run_pod_sandbox" => ("sandbox", "create+start"),
        "create_container" => ("app", "create"),
        "start_container" => ("app", "start"),
        _ => return None,
    };
    Some(format!("{kind} {pods} pods {phase}"))
}

fn label(call: &str) -> &str {
    match call {
        "run_pod_sandbox" => "RunPodSandbox",
        "create_container" => "CreateContainer",
        "start_container" => "StartContainer → running",
        other => other,
    }
}

/// One note per runtime (the floor's growth is a term of each, not a note of its own).
pub fn notes(scale: &Section, phases: Option<&Section>) -> Vec<String> {
    let levels = levels_of(scale);
    let (Some(&first), Some(&last)) = (levels.first(), levels.last()) else {
        return Vec::new();
    };
    if first == last {
        return Vec::new();
    }
    let growth = |sec: &Section, runtime: &str, metric: &dyn Fn(usize) -> Option<String>| {
        let p50 = |level| {
            metric(level)
                .and_then(|m| summary(sec, runtime, &m))
                .map(|s| s.p50)
        };
        Some(p50(last)? - p50(first)?)
    };
    let mut runtimes: Vec<&str> = Vec::new();
    for s in &scale.series {
        if s.runtime != FLOOR && !runtimes.contains(&s.runtime.as_str()) {
            runtimes.push(&s.runtime);
        }
    }
    let mut out = Vec::new();
    for rt in runtimes {
        let mut parts = Vec::new();
        for call in CALLS {
            let of_call = |n| Some(call_metric(call, n));
            let Some(total) = growth(scale, rt, &of_call) else {
                continue;
            };
            let floor = growth(scale, FLOOR, &of_call);
            let shim = phases.and_then(|p| growth(p, rt, &|n| shim_metric(call, n)));
            let mut terms = vec![format!("{} {total:+.1} ms", label(call))];
            if let Some(f) = floor {
                terms.push(format!("floor {f:+.1}"));
            }
            if let Some(s) = shim {
                terms.push(format!("inside the shim {s:+.1}"));
            }
            if let (Some(f), Some(s)) = (floor, shim) {
                terms.push(format!("rest {:+.1}", total - f - s));
            }
            parts.push(terms.join(", "));
        }
        if !parts.is_empty() {
            out.push(format!(
                "{rt}, growth of each call's p50 from {first} to {last} pods: {}",
                parts.join("; ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::start_metric;

    fn push_level(sec: &mut Section, runtime: &str, level: usize, calls: [f64; 3]) {
        sec.push(runtime, &start_metric(level), "ms", calls.iter().sum());
        for (call, ms) in CALLS.iter().zip(calls) {
            sec.push(runtime, &call_metric(call, level), "ms", ms);
        }
    }

    #[test]
    fn each_call_is_split_into_floor_shim_and_rest() {
        let mut scale = Section::new("scale", "S", "");
        push_level(&mut scale, "stockade", 0, [30.0, 20.0, 10.0]);
        push_level(&mut scale, "stockade", 250, [50.0, 24.0, 11.0]);
        push_level(&mut scale, FLOOR, 0, [15.0, 10.0, 5.0]);
        push_level(&mut scale, FLOOR, 250, [25.0, 12.0, 5.5]);
        let mut phases = Section::new("shim_phases_scale", "P", "");
        for (level, sandbox, app_create, app_start) in
            [(0, 17.0, 16.0, 1.2), (250, 23.0, 17.0, 1.3)]
        {
            phases.push(
                "stockade",
                &format!("sandbox {level} pods create+start"),
                "ms",
                sandbox,
            );
            phases.push(
                "stockade",
                &format!("app {level} pods create"),
                "ms",
                app_create,
            );
            phases.push(
                "stockade",
                &format!("app {level} pods start"),
                "ms",
                app_start,
            );
        }
        let notes = notes(&scale, Some(&phases));
        assert_eq!(
            notes.len(),
            1,
            "one note per runtime, none for the floor: {notes:?}"
        );
        let n = &notes[0];
        assert!(
            n.starts_with("stockade, growth of each call's p50 from 0 to 250 pods"),
            "{n}"
        );
        assert!(
            n.contains("RunPodSandbox +20.0 ms, floor +10.0, inside the shim +6.0, rest +4.0"),
            "{n}"
        );
        assert!(
            n.contains("CreateContainer +4.0 ms, floor +2.0, inside the shim +1.0, rest +1.0"),
            "{n}"
        );
        assert!(
            n.contains("StartContainer → running +1.0 ms, floor +0.5"),
            "{n}"
        );
    }

    #[test]
    fn without_spans_or_a_floor_only_the_growth_is_given() {
        let mut scale = Section::new("scale", "S", "");
        push_level(&mut scale, "runc", 0, [30.0, 20.0, 10.0]);
        push_level(&mut scale, "runc", 100, [40.0, 20.0, 10.0]);
        let notes = notes(&scale, None);
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("RunPodSandbox +10.0 ms; CreateContainer +0.0 ms"),
            "{}",
            notes[0]
        );
        assert!(!notes[0].contains("rest"), "{}", notes[0]);
    }

    #[test]
    fn one_level_gives_no_growth() {
        let mut scale = Section::new("scale", "S", "");
        push_level(&mut scale, "runc", 0, [30.0, 20.0, 10.0]);
        assert!(notes(&scale, None).is_empty());
    }
}
