//! A private Prometheus (Debian's package) for tests: its own config, data directory and
//! port in a temp dir, scraping the targets it is given every second and evaluating the
//! rule files it is given; queried through its HTTP API; stopped by its PID.
//!
//! The package's own service (on :9090, if it runs) is left alone.

use crate::exec::wait_for;
use crate::paths;
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// One sample of an instant query: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub value: f64,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (host:port) as job `stockade`, with `rule_files`.
    pub fn start(targets: &[SocketAddr], rule_files: &[PathBuf]) -> Result<Prometheus> {
        let binary = paths::require_tool("prometheus")?;
        let dir = tempfile::Builder::new()
            .prefix("stockade-prometheus-")
            .tempdir()
            .context("creating Prometheus' temp dir")?;
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|r| format!("{:?}", r.display().to_string()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: stockade\n    static_configs:\n      - targets: [{}]\n",
            rules.join(", "),
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).context("writing prometheus.yml")?;
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let mut prometheus = Prometheus { child, addr, dir };
        let ready = wait_for("Prometheus to be ready", START_TIMEOUT, || {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                return Some(Err(anyhow::anyhow!("prometheus exited: {status}")));
            }
            match get(addr, "/-/ready") {
                Ok((200, _)) => Some(Ok(())),
                _ => None,
            }
        });
        match ready {
            Ok(Ok(())) => Ok(prometheus),
            Ok(Err(e)) | Err(e) => {
                let log = prometheus.log();
                prometheus.stop();
                bail!("{e}\n---- prometheus log ----\n{log}")
            }
        }
    }

    /// Its log (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>?<query>`'s `data`, or the API's error.
    pub fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<serde_json::Value> {
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        let target = format!("/api/v1/{path}?{}", query.join("&"));
        let (status, body) = get(self.addr, &target)?;
        let doc: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("{target}: HTTP {status}, not JSON: {body}"))?;
        if doc["status"] != "success" {
            bail!("{target}: HTTP {status}: {body}");
        }
        Ok(doc["data"].clone())
    }

    /// An instant query's vector.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let data = self.api("query", &[("query", promql)])?;
        if data["resultType"] != "vector" {
            bail!("{promql}: not a vector: {data}");
        }
        let samples = data["result"].as_array().cloned().unwrap_or_default();
        samples
            .iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("{promql}: no value in {s}"))?;
                Ok(Sample {
                    labels: s["metric"].as_object().cloned().unwrap_or_default(),
                    value,
                })
            })
            .collect()
    }

    /// Polls `promql` until the sum of its samples is at least `at_least`; returns the sum.
    pub fn wait_for_sum(&self, promql: &str, at_least: f64, timeout: Duration) -> Result<f64> {
        let mut last = None;
        let found = wait_for(&format!("{promql} >= {at_least}"), timeout, || {
            let sum = self
                .query(promql)
                .ok()?
                .iter()
                .map(|s| s.value)
                .sum::<f64>();
            last = Some(sum);
            (sum >= at_least).then_some(sum)
        });
        found.with_context(|| format!("last value: {last:?}"))
    }

    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let stopped = wait_for("prometheus to stop", Duration::from_secs(15), || {
                matches!(self.child.try_wait(), Ok(Some(_))).then_some(())
            });
            if stopped.is_err() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on now (the kernel's pick).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn get(addr: SocketAddr, target: &str) -> Result<(u16, String)> {
    stockade_monitor::http::get(addr, target).with_context(|| format!("GET http://{addr}{target}"))
}

/// The shipped alert rules.
pub fn alert_rules() -> PathBuf {
    paths::workspace_root().join("deploy/prometheus/alerts.yml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql() {
        assert_eq!(
            percent_encode("a{b=\"c d\"}[5m]"),
            "a%7Bb%3D%22c%20d%22%7D%5B5m%5D"
        );
    }

    #[test]
    fn rules_exist() {
        assert!(alert_rules().is_file());
    }
}
