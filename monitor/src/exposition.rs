//! One scrape's metrics, encoded by the `prometheus-client` crate: the Prometheus text
//! format (0.0.4) by default, OpenMetrics when the scraper asks for it (Prometheus does).
//!
//! The exporter computes every value at scrape time from what the shims left on the node,
//! so a scrape is a snapshot ([`Exposition`]) handed to the crate as a
//! [`prometheus_client::collector::Collector`], not a set of live metrics.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::histogram::Histogram as LiveHistogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// OpenMetrics text, version 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The exposition formats the exporter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (what `promtool check metrics` reads).
    Text,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, else the text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// A histogram with fixed upper bounds (the crate's, so buckets are encoded by it).
#[derive(Debug, Clone)]
pub struct Histogram(LiveHistogram);

impl Histogram {
    /// `bounds` must be sorted ascending.
    pub fn new(bounds: &[f64]) -> Self {
        Histogram(LiveHistogram::new(bounds.iter().copied()))
    }

    pub fn observe(&self, value: f64) {
        self.0.observe(value);
    }
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
enum Samples {
    Values(Vec<(Labels, f64)>),
    Histogram(Histogram),
}

#[derive(Debug)]
struct Family {
    /// The series name; counters' ends in `_total`, which the crate adds back itself.
    name: String,
    help: String,
    kind: Kind,
    samples: Samples,
}

/// The families of one scrape, in the order they were started.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family; its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.families.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            samples: Samples::Values(Vec::new()),
        });
    }

    /// A sample of the family last started (whose name is `name`).
    pub fn sample(&mut self, name: &str, labels: &[(&'static str, &str)], value: f64) {
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        match self.families.last_mut() {
            Some(Family {
                name: family,
                samples: Samples::Values(samples),
                ..
            }) if family == name => samples.push((labels, value)),
            _ => debug_assert!(false, "sample of {name} outside its family"),
        }
    }

    /// The histogram of the family last started.
    pub fn histogram(&mut self, name: &str, histogram: &Histogram) {
        match self.families.last_mut() {
            Some(family) if family.name == name && family.kind == Kind::Histogram => {
                family.samples = Samples::Histogram(histogram.clone());
            }
            _ => debug_assert!(false, "histogram {name} outside its family"),
        }
    }

    /// The exposition text in `format`.
    pub fn encode(self, format: Format) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        let result = match format {
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            }
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry),
        };
        // Writing to a String cannot fail; an encoder error is a bug in a family here.
        if let Err(e) = result {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        text
    }
}

impl Family {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metric_type = match self.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        let name = match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(&self.name),
            _ => &self.name,
        };
        let mut metric = encoder.encode_descriptor(name, &self.help, None, metric_type)?;
        match &self.samples {
            Samples::Histogram(h) => h.0.encode(metric),
            Samples::Values(samples) => {
                for (labels, value) in samples {
                    if labels.is_empty() {
                        self.value(&mut metric, *value)?;
                    } else {
                        self.value(&mut metric.encode_family(labels)?, *value)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn value(&self, metric: &mut MetricEncoder, value: f64) -> Result<(), std::fmt::Error> {
        match self.kind {
            Kind::Counter => metric.encode_counter::<NoLabelSet, _, f64>(&value, None),
            Kind::Gauge | Kind::Histogram => metric.encode_gauge(&value),
        }
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut e = Exposition::new();
        e.family("x_total", Kind::Counter, "Things.\nMore");
        e.sample("x_total", &[("a", "q\"b\\n\nl"), ("b", "")], 3.0);
        e.family("y", Kind::Gauge, "Y.");
        e.sample("y", &[], 0.5);
        let text = e.encode(Format::Text);
        assert_eq!(
            text,
            "# HELP x_total Things.\\nMore\n# TYPE x_total counter\nx_total{a=\"q\\\"b\\\\n\\nl\",b=\"\"} 3.0\n# HELP y Y.\n# TYPE y gauge\ny 0.5\n"
        );
    }

    #[test]
    fn openmetrics_names_counter_families_without_total() {
        let mut e = Exposition::new();
        e.family("x_total", Kind::Counter, "Things.");
        e.sample("x_total", &[("rule", "privileged")], 1.0);
        let text = e.encode(Format::OpenMetrics);
        assert!(text.contains("# TYPE x counter\n"), "{text}");
        assert!(
            text.contains("x_total{rule=\"privileged\"} 1.0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.5, 0.7, 3.0] {
            h.observe(v);
        }
        let mut e = Exposition::new();
        e.family("lat_seconds", Kind::Histogram, "h");
        e.histogram("lat_seconds", &h);
        let text = e.encode(Format::Text);
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_bucket{le=\"1\"} 3\n"), "{text}");
        assert!(
            text.contains("lat_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_sum 4.25\n"), "{text}");
        assert!(text.contains("lat_seconds_count 4\n"), "{text}");
    }

    #[test]
    fn accept_header_picks_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
    }
}
