//! CRI conformance (critest) results, runc against Stockade on the same containerd: each
//! spec runc passes is passed by Stockade too, refused by a named policy rule, contradicts
//! hardening Stockade always applies, skipped, or failed. Pure: JUnit text in, verdicts
//! and a markdown report out (`stockade-conformance-report` does the file I/O).

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How one spec ended in one critest run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// With critest's failure message.
    Failed(String),
    Skipped(String),
}

/// The specs of one critest run (ginkgo's `[It]` test cases), by name.
pub type Specs = BTreeMap<String, Outcome>;

/// Parse critest's JUnit report (`-ginkgo.junit-report`).
pub fn parse_junit(xml: &str) -> Result<Specs> {
    let doc = roxmltree::Document::parse(xml).context("parsing the JUnit report")?;
    let mut specs = Specs::new();
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        let Some(name) = case.attribute("name").and_then(|n| n.strip_prefix("[It] ")) else {
            continue; // suite-level nodes (BeforeSuite, ...)
        };
        let text_of = |tag: &str| {
            case.children().find(|c| c.has_tag_name(tag)).map(|c| {
                let text = c.text().unwrap_or_default().trim();
                match c.attribute("message").map(str::trim) {
                    Some(m) if !m.is_empty() && !text.is_empty() => format!("{m}\n{text}"),
                    Some(m) if !m.is_empty() => m.to_string(),
                    _ => text.to_string(),
                }
            })
        };
        let outcome = if let Some(msg) = text_of("skipped") {
            Outcome::Skipped(msg)
        } else if let Some(msg) = text_of("failure").or_else(|| text_of("error")) {
            Outcome::Failed(msg)
        } else {
            Outcome::Passed
        };
        specs.insert(name.to_string(), outcome);
    }
    Ok(specs)
}

/// (passed, failed, skipped).
pub fn counts(specs: &Specs) -> (usize, usize, usize) {
    specs.values().fold((0, 0, 0), |(p, f, s), o| match o {
        Outcome::Passed => (p + 1, f, s),
        Outcome::Failed(_) => (p, f + 1, s),
        Outcome::Skipped(_) => (p, f, s + 1),
    })
}

/// Specs whose expectation contradicts hardening Stockade applies to every container,
/// matched by a fragment of the spec name, with the reason.
pub const CONTRADICTIONS: &[(&str, &str)] = &[
    (
        "seccomp unconfined",
        "Stockade always installs its default seccomp filter; a pod's own profile can only narrow it",
    ),
    (
        "nil profile, which is unconfined",
        "Stockade always installs its default seccomp filter, also where the pod asks for none",
    ),
    (
        "seccomp default which is unconfined",
        "Stockade always installs its default seccomp filter, also where the pod asks for none",
    ),
    (
        "allow privilege escalation when false",
        "Stockade always sets no_new_privs",
    ),
];

/// Why a spec runc passes did not pass under Stockade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Passed under both.
    Passed,
    /// Failed with `refused by stockade policy rule `<rule>`` in the error.
    Refused(String),
    /// Its expectation contradicts always-on hardening (reason).
    Contradicts(&'static str),
    /// Skipped under Stockade (critest's reason).
    Skipped(String),
    /// Failed for another reason (critest's error).
    Failed(String),
}

/// The policy rule a refusal names: the word in backquotes after "policy rule".
pub fn refused_rule(error: &str) -> Option<String> {
    let rest = &error[error.find("policy rule `")? + "policy rule `".len()..];
    let rule = &rest[..rest.find('`')?];
    (!rule.is_empty() && rule.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .then(|| rule.to_string())
}

fn contradiction(spec: &str) -> Option<&'static str> {
    CONTRADICTIONS
        .iter()
        .find(|(fragment, _)| spec.contains(fragment))
        .map(|(_, reason)| *reason)
}

/// The verdict on every spec runc passed (specs runc did not pass have none).
pub fn classify(runc: &Specs, stockade: &Specs) -> BTreeMap<String, Verdict> {
    let mut out = BTreeMap::new();
    for (name, _) in runc.iter().filter(|(_, o)| **o == Outcome::Passed) {
        let verdict = match stockade.get(name) {
            Some(Outcome::Passed) => Verdict::Passed,
            Some(Outcome::Failed(e)) => match (refused_rule(e), contradiction(name)) {
                (Some(rule), _) => Verdict::Refused(rule),
                (None, Some(reason)) => Verdict::Contradicts(reason),
                (None, None) => Verdict::Failed(e.clone()),
            },
            Some(Outcome::Skipped(msg)) => match contradiction(name) {
                Some(reason) => Verdict::Contradicts(reason),
                None => Verdict::Skipped(msg.clone()),
            },
            None => Verdict::Failed("not run under Stockade".into()),
        };
        out.insert(name.clone(), verdict);
    }
    out
}

/// One critest run: what ran, and its specs.
#[derive(Debug, Clone)]
pub struct Run {
    pub containerd: String,
    pub critest: String,
    pub handler: String,
    pub seconds: Option<u64>,
    pub specs: Specs,
}

/// run.sh's summary.txt first line: `containerd=2.2.7 handler=runc critest=1.36.0 rc=0 seconds=95`.
pub fn parse_summary_line(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An error without the wrappers the CRI plugin and the shim put around it (gRPC status,
/// "failed to create shim task", the sandbox or container id), outermost first.
fn strip_wrappers(mut s: &str) -> &str {
    const PREFIXES: [&str; 5] = [
        "failed to start container: ",
        "failed to create PodSandbox: ",
        "failed to create containerd task: ",
        "failed to create shim task: ",
        "failed to create container: ",
    ];
    loop {
        let before = s;
        for p in PREFIXES {
            s = s.strip_prefix(p).unwrap_or(s);
        }
        if let Some(r) = s.strip_prefix("rpc error: code = ") {
            s = r.find(" desc = ").map_or(s, |i| &r[i + " desc = ".len()..]);
        }
        for p in ["failed to start sandbox \"", "creating container "] {
            if let Some((id, rest)) = s.strip_prefix(p).and_then(|r| r.split_once(": ")) {
                if id
                    .trim_end_matches('"')
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit())
                {
                    s = rest;
                }
            }
        }
        if s == before {
            return s;
        }
    }
}

/// The gist of an error on one line, for a table cell: its first lines, unwrapped.
pub fn short(text: &str, width: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(4)
        .collect::<Vec<_>>()
        .join(" / ");
    let cell = strip_wrappers(&joined).replace('|', "\\|");
    match cell.char_indices().nth(width) {
        Some((i, _)) => format!("{}…", &cell[..i]),
        None => cell,
    }
}

/// An error with what differs between runs of the same failure (ids, pointers,
/// addresses, fractions of seconds) blanked and gomega's framing lines left out, so equal
/// causes compare equal.
pub fn cause(text: &str) -> String {
    let framing = |l: &str| {
        matches!(l, "Unexpected error:" | "Expected" | "to contain substring")
            || (l.starts_with('<') && l.ends_with(">:"))
            || !l.chars().any(|c| c.is_ascii_alphanumeric())
    };
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim) {
        // gomega's dump of the error value follows: nothing new in it.
        if line == "{" {
            break;
        }
        if framing(line) {
            continue;
        }
        let line = strip_wrappers(line);
        if !lines.contains(&line) {
            lines.push(line);
        }
        if lines.len() == 2 {
            break;
        }
    }
    let gist = short(&lines.join("\n"), 200);
    let mut out = String::new();
    let mut word = String::new();
    for c in gist.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '.' {
            word.push(c);
            continue;
        }
        out.push_str(&blank(&word));
        word.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// One word of an error with its run-specific part blanked.
fn blank(word: &str) -> String {
    // A trailing run of 12 or more hex digits: an id (also glued to a prefix, `test<id>`).
    let hex_tail = word.len() - word.trim_end_matches(|c: char| c.is_ascii_hexdigit()).len();
    if word.starts_with("0x") && word.len() > 2 {
        return "0x…".into();
    }
    if hex_tail >= 12 {
        return format!("{}<id>", &word[..word.len() - hex_tail]);
    }
    // A number at the start of the word (a duration, an address), then its unit.
    let split = word
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(word.len());
    let (number, unit) = word.split_at(split);
    match number.matches('.').count() {
        3 => format!("<ip>{unit}"),
        n if n > 0 => format!("{}{unit}", number.split('.').next().unwrap_or("")),
        _ => word.to_string(),
    }
}

fn summary_row(run: &Run) -> String {
    let (p, f, s) = counts(&run.specs);
    let secs = run.seconds.map_or("?".into(), |s| format!("{s} s"));
    format!(
        "| {} | {} | {} | {p} passed, {f} failed, {s} skipped of {} | {secs} |\n",
        run.containerd,
        run.critest,
        run.handler,
        run.specs.len()
    )
}

/// Markdown for the runs of one containerd: the runc run and the Stockade runs beside it.
pub fn render_containerd(runc: &Run, stockade: &[Run]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## containerd {} (critest {})\n\n| containerd | critest | handler | result | time |\n|---|---|---|---|---|",
        runc.containerd, runc.critest
    );
    s.push_str(&summary_row(runc));
    for run in stockade {
        s.push_str(&summary_row(run));
    }
    for run in stockade {
        let verdicts = classify(&runc.specs, &run.specs);
        let mut groups: BTreeMap<&str, Vec<(&String, &Verdict)>> = BTreeMap::new();
        for (name, v) in &verdicts {
            let key = match v {
                Verdict::Passed => "passed",
                Verdict::Refused(_) => "refused",
                Verdict::Contradicts(_) => "contradicts",
                Verdict::Skipped(_) => "skipped",
                Verdict::Failed(_) => "failed",
            };
            groups.entry(key).or_default().push((name, v));
        }
        let n = |k: &str| groups.get(k).map_or(0, Vec::len);
        let _ = writeln!(
            s,
            "\n### {} against runc\n\nOf {} specs runc passes: {} passed by both, {} refused by a named rule, \
             {} contradict always-on hardening, {} skipped under Stockade only, {} failed.",
            run.handler,
            verdicts.len(),
            n("passed"),
            n("refused"),
            n("contradicts"),
            n("skipped"),
            n("failed"),
        );
        let sections: [(&str, &str, &str); 4] = [
            ("refused", "Refused by a policy rule", "rule"),
            (
                "contradicts",
                "Expectations that contradict always-on hardening",
                "reason",
            ),
            ("skipped", "Skipped under Stockade only", "critest's reason"),
            ("failed", "Failed", "error"),
        ];
        for (key, title, column) in sections {
            let Some(rows) = groups.get(key) else {
                continue;
            };
            let _ = writeln!(
                s,
                "\n{title} ({}):\n\n| spec | {column} |\n|---|---|",
                rows.len()
            );
            for (name, v) in rows {
                let cell = match v {
                    Verdict::Refused(rule) => format!("`{rule}`"),
                    Verdict::Contradicts(reason) => reason.to_string(),
                    Verdict::Skipped(m) | Verdict::Failed(m) => short(m, 300),
                    Verdict::Passed => String::new(),
                };
                let _ = writeln!(s, "| {} | {cell} |", name.replace('|', "\\|"));
            }
        }
        if let Some(rows) = groups.get("failed") {
            let mut causes: BTreeMap<String, usize> = BTreeMap::new();
            for (_, v) in rows {
                if let Verdict::Failed(e) = v {
                    *causes.entry(cause(e)).or_default() += 1;
                }
            }
            let mut causes: Vec<(String, usize)> = causes.into_iter().collect();
            causes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let _ = writeln!(s, "\nFailures by cause:\n\n| specs | cause |\n|---|---|");
            for (c, n) in causes {
                let _ = writeln!(s, "| {n} | {c} |");
            }
        }
        let stockade_only: Vec<&String> = run
            .specs
            .iter()
            .filter(|(name, o)| {
                **o == Outcome::Passed && runc.specs.get(*name) != Some(&Outcome::Passed)
            })
            .map(|(name, _)| name)
            .collect();
        if !stockade_only.is_empty() {
            let _ = writeln!(
                s,
                "\nPassed under {} but not under runc: {}.",
                run.handler,
                stockade_only.len()
            );
        }
    }
    let runc_not: Vec<String> = runc
        .specs
        .iter()
        .filter(|(_, o)| **o != Outcome::Passed)
        .map(|(name, o)| match o {
            Outcome::Failed(_) => format!("{name} (failed)"),
            _ => format!("{name} (skipped)"),
        })
        .collect();
    let _ = writeln!(
        s,
        "\nNot passed by runc ({}, not compared): {}\n",
        runc_not.len(),
        runc_not.join("; ")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="CRI validation" tests="5">
  <testcase name="[BeforeSuite]" status="passed"></testcase>
  <testcase name="[It] [sig-node] Container runtime should support basic operations on container" status="passed"></testcase>
  <testcase name="[It] [sig-node] Security Context SeccompProfilePath should support seccomp unconfined on the container" status="failed">
    <failure message="Expected &lt;string&gt;: 2" type="failed">seccomp mode 2</failure>
  </testcase>
  <testcase name="[It] [sig-node] Security Context NamespaceOption runtime should support HostPID" status="failed">
    <failure message="rpc error: code = Unknown desc = refused by stockade policy rule `host-pid`: the pod shares the host's PID namespace" type="failed"></failure>
  </testcase>
  <testcase name="[It] [sig-node] Networking runtime should support port mapping with only container port" status="failed">
    <failure message="connection refused" type="failed"></failure>
  </testcase>
  <testcase name="[It] [sig-node] Image Manager public image with digest should be pulled and removed" status="skipped">
    <skipped message="skipped"></skipped>
  </testcase>
</testsuite></testsuites>"#;

    #[test]
    fn junit_outcomes_and_counts() {
        let specs = parse_junit(JUNIT).unwrap();
        assert_eq!(specs.len(), 5, "{specs:?}");
        assert_eq!(counts(&specs), (1, 3, 1));
        let seccomp = specs
            .iter()
            .find(|(n, _)| n.contains("seccomp unconfined"))
            .unwrap()
            .1;
        assert_eq!(
            *seccomp,
            Outcome::Failed("Expected <string>: 2\nseccomp mode 2".into())
        );
    }

    #[test]
    fn verdicts_name_rules_reasons_and_errors() {
        let stockade = parse_junit(JUNIT).unwrap();
        let runc: Specs = stockade
            .keys()
            .map(|k| (k.clone(), Outcome::Passed))
            .collect();
        let v = classify(&runc, &stockade);
        let get = |frag: &str| v.iter().find(|(n, _)| n.contains(frag)).unwrap().1.clone();
        assert_eq!(get("basic operations"), Verdict::Passed);
        assert_eq!(get("HostPID"), Verdict::Refused("host-pid".into()));
        assert!(
            matches!(get("seccomp unconfined"), Verdict::Contradicts(r) if r.contains("seccomp"))
        );
        assert_eq!(
            get("port mapping"),
            Verdict::Failed("connection refused".into())
        );
        assert!(matches!(get("digest"), Verdict::Skipped(_)));
    }

    #[test]
    fn specs_runc_does_not_pass_get_no_verdict() {
        let stockade = parse_junit(JUNIT).unwrap();
        let v = classify(&stockade, &stockade);
        assert_eq!(
            v.len(),
            1,
            "only the spec runc (here: the same run) passed: {v:?}"
        );
    }

    #[test]
    fn short_errors_drop_the_shim_wrappers() {
        let id = "a".repeat(64);
        let e = format!(
            "failed to start container: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: creating container {id}: failed to prepare rootfs\nmore"
        );
        assert_eq!(short(&e, 100), "failed to prepare rootfs / more");
        assert_eq!(short("a | b", 100), "a \\| b");
        assert_eq!(short("abcdef", 3), "abc…");
        let sandbox = format!(
            "failed to create PodSandbox: rpc error: code = Internal desc = failed to start sandbox \"{id}\": failed to create containerd task: failed to create shim task: creating container {id}: sysctl x not allowed"
        );
        assert_eq!(short(&sandbox, 100), "sysctl x not allowed");
    }

    #[test]
    fn causes_ignore_ids_pointers_addresses_and_fractions() {
        let a = "Timed out after 60.001s. / <*url.Error | 0xc0015835c0>: Get \"http://10.200.0.56:80\": refused";
        let b = "Timed out after 60.000s. / <*url.Error | 0xc000e783f0>: Get \"http://10.200.0.39:80\": refused";
        assert_eq!(cause(a), cause(b));
        assert!(cause(a).contains("<ip>:80"), "{}", cause(a));
        let id = "b".repeat(64);
        assert_eq!(
            cause(&format!("exec in {id} failed")),
            "exec in <id> failed"
        );
        assert_eq!(cause(&format!("ls /tmp/test{id}")), "ls /tmp/test<id>");
        let sysctl = format!(
            "failed to create PodSandbox: sysctl x not allowed\nUnexpected error:\n<*status.Error | 0xc0>:\nrpc error: code = Internal desc = failed to start sandbox \"{id}\": sysctl x not allowed\n{{\ns: 1"
        );
        assert_eq!(cause(&sysctl), "sysctl x not allowed");
    }

    #[test]
    fn rule_names_are_extracted_only_when_well_formed() {
        assert_eq!(
            refused_rule("x: refused by stockade policy rule `extra-capabilities`: NET_ADMIN"),
            Some("extra-capabilities".into())
        );
        assert_eq!(refused_rule("policy rule `` empty"), None);
        assert_eq!(refused_rule("policy rule `Not A Rule`"), None);
        assert_eq!(refused_rule("no rule here"), None);
    }

    #[test]
    fn report_lists_each_group() {
        let stockade = parse_junit(JUNIT).unwrap();
        let runc: Specs = stockade
            .keys()
            .map(|k| (k.clone(), Outcome::Passed))
            .collect();
        let run = |handler: &str, specs: Specs| Run {
            containerd: "2.2.7".into(),
            critest: "1.36.0".into(),
            handler: handler.into(),
            seconds: Some(90),
            specs,
        };
        let md = render_containerd(&run("runc", runc), &[run("stockade", stockade)]);
        for needle in [
            "| 2.2.7 | 1.36.0 | runc | 5 passed, 0 failed, 0 skipped of 5 | 90 s |",
            "1 passed by both, 1 refused by a named rule, 1 contradict always-on hardening, 1 skipped under Stockade only, 1 failed",
            "| `host-pid` |",
            "Stockade always installs its default seccomp filter",
            "| connection refused |",
            "| 1 | connection refused |",
        ] {
            assert!(md.contains(needle), "report lacks {needle:?}:\n{md}");
        }
    }
}
