//! What a run records: every sample of every series, per section, and why a runtime or
//! a section has none. Serialised as results.json; the report is rendered from it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Samples of one metric under one runtime (or one variant, e.g. "no filter").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub runtime: String,
    pub metric: String,
    pub unit: String,
    pub samples: Vec<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Section {
    pub id: String,
    pub title: String,
    /// How it was measured, for the report.
    pub method: String,
    /// The runtime ratios are taken against (runc, or e.g. "no filter").
    pub baseline: String,
    pub series: Vec<Series>,
    /// Runtime label -> why it has no (or incomplete) samples here.
    pub failures: BTreeMap<String, String>,
    pub notes: Vec<String>,
    /// The runtimes ran one after the other, not round by round: sample i of one runtime
    /// and of the floor were not taken together, so own shares are differences of medians.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runtimes_in_turn: bool,
    /// Why the whole section did not run.
    pub skipped: Option<String>,
    /// Folded call stacks ("frame;frame;frame count" lines) by name, for flame graphs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stacks: BTreeMap<String, Vec<String>>,
    /// Wall time of the section, seconds.
    pub duration_s: f64,
}

impl Section {
    pub fn new(id: &str, title: &str, method: &str) -> Section {
        Section {
            id: id.to_string(),
            title: title.to_string(),
            method: method.to_string(),
            baseline: "runc".to_string(),
            ..Default::default()
        }
    }

    /// Add one sample to the (runtime, metric) series, creating it on first use.
    pub fn push(&mut self, runtime: &str, metric: &str, unit: &str, value: f64) {
        match self
            .series
            .iter_mut()
            .find(|s| s.runtime == runtime && s.metric == metric)
        {
            Some(s) => s.samples.push(value),
            None => self.series.push(Series {
                runtime: runtime.to_string(),
                metric: metric.to_string(),
                unit: unit.to_string(),
                samples: vec![value],
            }),
        }
    }

    pub fn samples(&self, runtime: &str, metric: &str) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.runtime == runtime && s.metric == metric)
    }

    /// Record that `runtime` failed here (the first error is kept).
    pub fn fail(&mut self, runtime: &str, error: &anyhow::Error) {
        self.failures
            .entry(runtime.to_string())
            .or_insert_with(|| format!("{error:#}"));
    }

    pub fn has_failed(&self, runtime: &str) -> bool {
        self.failures.contains_key(runtime)
    }

    /// Metric names in first-seen order.
    pub fn metrics(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.series {
            if !out.contains(&s.metric) {
                out.push(s.metric.clone());
            }
        }
        out
    }

    /// Runtime labels in first-seen order, failed ones included.
    pub fn runtimes(&self, known: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for label in std::iter::once(&self.baseline)
            .chain(known.iter())
            .chain(self.series.iter().map(|s| &s.runtime))
            .chain(self.failures.keys())
        {
            let present = self.series.iter().any(|s| &s.runtime == label)
                || self.failures.contains_key(label);
            if present && !out.contains(label) {
                out.push(label.clone());
            }
        }
        out
    }
}

/// State of one runtime over the whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeStatus {
    pub label: String,
    pub cri_handler: String,
    pub description: String,
    pub ctr_args: Vec<String>,
    /// Set when the runtime could not run at all (e.g. the probe pod failed).
    pub failed: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub tool: String,
    pub quick: bool,
    pub started_utc: String,
    pub finished_utc: String,
    pub duration_s: f64,
    pub machine: serde_json::Value,
    pub settings: serde_json::Value,
    pub runtimes: Vec<RuntimeStatus>,
    pub sections: Vec<Section>,
    /// Set when the run was cut short (Ctrl-C) or the harness failed.
    pub aborted: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_groups_samples_by_runtime_and_metric() {
        let mut s = Section::new("x", "X", "");
        s.push("runc", "a", "ms", 1.0);
        s.push("stockade", "a", "ms", 2.0);
        s.push("runc", "a", "ms", 3.0);
        s.push("runc", "b", "ms", 4.0);
        assert_eq!(s.samples("runc", "a").unwrap().samples, vec![1.0, 3.0]);
        assert_eq!(s.metrics(), vec!["a", "b"]);
        assert_eq!(
            s.runtimes(&["runc".into(), "stockade".into()]),
            vec!["runc", "stockade"]
        );
    }

    #[test]
    fn first_failure_is_kept() {
        let mut s = Section::new("x", "X", "");
        s.fail("stockade", &anyhow::anyhow!("first"));
        s.fail("stockade", &anyhow::anyhow!("second"));
        assert_eq!(s.failures["stockade"], "first");
        assert_eq!(s.runtimes(&["runc".into()]), vec!["stockade"]);
    }
}
