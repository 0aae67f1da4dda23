//! `stockade monitor` as a child of a test, reading the node state of a test's containerd:
//! scraped for the counters a test checks (seccomp denials, refusals). Ended by PID.

use crate::paths;
use crate::Containerd;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Exporter {
    child: Child,
    pub addr: std::net::SocketAddr,
    /// Its debug log (every denial and how it was attributed), shown when a check fails.
    log: tempfile::NamedTempFile,
}

impl Exporter {
    /// An exporter reading the node state of the shims of `c`.
    pub fn start(c: &Containerd) -> Exporter {
        let bin = paths::shim_dir().expect("built binaries").join("stockade");
        let log = tempfile::NamedTempFile::new().expect("a temp file");
        let mut child = Command::new(&bin)
            .args(["monitor", "--listen", "127.0.0.1:0", "--profile"])
            .arg(paths::profiles_dir().join("default.toml"))
            .arg("--state-dir")
            .arg(c.stockade_state.root())
            .env("RUST_LOG", "stockade_monitor=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopening the log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let addr = stockade_monitor::banner_addr(&line)
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Exporter { child, addr, log }
    }

    /// The scrape and the exporter's log, for a failure message.
    pub fn diagnosis(&self) -> String {
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{}\n---- exporter log, last lines ----\n{}",
            self.scrape(),
            tail.join("\n")
        )
    }

    pub fn scrape(&self) -> String {
        stockade_monitor::http::get(self.addr, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_else(|e| format!("scrape failed: {e}"))
    }

    /// Sum of the samples whose series line contains every one of `parts`.
    pub fn sum(&self, metric: &str, parts: &[&str]) -> f64 {
        self.scrape()
            .lines()
            .filter(|l| l.starts_with(metric) && parts.iter().all(|p| l.contains(p)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits (20 s at most) for the sum to reach `at_least`; returns the last sum.
    pub fn wait_for(&self, metric: &str, parts: &[&str], at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.sum(metric, parts);
            if v >= at_least || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
