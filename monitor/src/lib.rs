//! The node exporter behind `stockade monitor`: Prometheus metrics about what Stockade
//! decided and what its guards stopped.
//!
//! One per node. It reads what the shims leave on the node and nothing else:
//! - container records ([`stockade_runtime::node_state`]): running containers, their labels, cgroups
//!   (OOM kills, CPU throttling) and start latencies;
//! - the audit trail(s) ([`stockade_runtime::audit`]): decisions and refusals by rule;
//! - the kernel's seccomp audit records ([`sources`]), attributed pid -> cgroup -> container.
//!
//! [`Monitor::start`] binds the listener, opens the seccomp source and runs two threads
//! (the HTTP server, [`http`], and the record reader); [`Monitor::stop`] ends them.

pub mod attribution;
pub mod audit_status;
pub mod cgroup;
pub mod collector;
pub mod exposition;
pub mod http;
pub mod record_cache;
pub mod recording;
pub mod seccomp_log;
pub mod sources;
pub mod tail;
pub mod trail;

use collector::{Collector, CollectorSettings, SeccompCounts};
use record_cache::RecordCache;
use sources::RecordSource;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use stockade_runtime::profile::IdPoolSettings;

/// The default listen address: loopback (node-local scrapers or a port-forward).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// The line `stockade monitor` prints when it serves (scripts that bind port 0 read the
/// address back with [`banner_addr`]).
pub fn banner(addr: SocketAddr, source: &str) -> String {
    format!("stockade monitor: serving http://{addr}/metrics (seccomp records from {source})")
}

/// The address in a [`banner`] line.
pub fn banner_addr(line: &str) -> Option<SocketAddr> {
    line.split("http://")
        .nth(1)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Where the kernel's seccomp records are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompSource {
    /// The audit netlink multicast group (every record, auditd or not).
    Netlink,
    /// The kernel log (rate-limited by printk; records can be lost).
    Kmsg(PathBuf),
    /// auditd's log file.
    AuditLog(PathBuf),
    /// Don't count seccomp denials.
    Off,
}

#[derive(Debug, Clone)]
pub struct MonitorConfig {
    pub listen: SocketAddr,
    /// The shims' container records (`StateDir::containers`).
    pub state_dir: PathBuf,
    /// Where the cgroup hierarchies are mounted (/sys/fs/cgroup); v1 or v2 is detected.
    pub cgroup_root: PathBuf,
    pub audit_trails: Vec<PathBuf>,
    pub profiles: Vec<String>,
    pub id_pools: Vec<IdPoolSettings>,
    /// The ID-range allocator's state file (`StateDir::id_ranges`); None
    /// estimates ranges in use from the container records.
    pub id_state: Option<PathBuf>,
    pub seccomp: SeccompSource,
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read seccomp records from {what}: {source}{hint}")]
    Source {
        what: String,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot tell the cgroup layout of {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A running exporter; stops (and joins its threads) on [`Monitor::stop`] or drop.
pub struct Monitor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    server: Option<http::Server>,
    threads: Vec<JoinHandle<()>>,
    source: String,
}

fn open_source(source: &SeccompSource) -> Result<Option<Box<dyn RecordSource>>, MonitorError> {
    let err = |what: String, hint: &'static str| {
        move |source| MonitorError::Source { what, hint, source }
    };
    Ok(match source {
        SeccompSource::Netlink => Some(Box::new(sources::Netlink::open().map_err(err(
            "the audit netlink multicast group".into(),
            " (it needs CAP_AUDIT_READ; or use --kmsg / --audit-log FILE)",
        ))?)),
        SeccompSource::Kmsg(path) => Some(Box::new(
            sources::Kmsg::open(path).map_err(err(path.display().to_string(), ""))?,
        )),
        SeccompSource::AuditLog(path) => Some(Box::new(
            sources::FileTail::open(path).map_err(err(path.display().to_string(), ""))?,
        )),
        SeccompSource::Off => None,
    })
}

impl Monitor {
    pub fn start(config: MonitorConfig) -> Result<Monitor, MonitorError> {
        let layout = cgroup::CgroupLayout::detect(&config.cgroup_root).map_err(|source| {
            MonitorError::Cgroup {
                path: config.cgroup_root.clone(),
                source,
            }
        })?;
        let source = open_source(&config.seccomp)?;
        let listener = TcpListener::bind(config.listen).map_err(|source| MonitorError::Listen {
            addr: config.listen,
            source,
        })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MonitorError::Listen {
                addr: config.listen,
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let seccomp = Arc::new(Mutex::new(SeccompCounts::default()));
        let collector = Mutex::new(Collector::new(CollectorSettings {
            state_dir: config.state_dir.clone(),
            layout,
            audit_trails: config.audit_trails.clone(),
            profiles: config.profiles.clone(),
            id_pools: config.id_pools.clone(),
            id_state: config.id_state.clone(),
        }));
        let source_name = source
            .as_ref()
            .map_or_else(|| "nothing (off)".to_string(), |s| s.describe());

        let mut monitor = Monitor {
            addr,
            stop: stop.clone(),
            server: None,
            threads: Vec::new(),
            source: source_name,
        };
        if let Some(source) = source {
            let (stop, seccomp, dir) = (stop.clone(), seccomp.clone(), config.state_dir.clone());
            let reader = std::thread::Builder::new()
                .name("stockade-seccomp".into())
                .spawn(move || read_records(source, RecordCache::new(&dir), seccomp, stop))
                .map_err(MonitorError::Thread)?;
            monitor.threads.push(reader);
        }
        let render: http::Render = Arc::new(move |format| {
            // Scrapes render one at a time: the collector keeps trail positions.
            let mut collector = collector.lock().unwrap_or_else(PoisonError::into_inner);
            let counts = seccomp.lock().unwrap_or_else(PoisonError::into_inner);
            collector.render(&counts).encode(format)
        });
        monitor.server = Some(http::Server::spawn(listener, render).map_err(MonitorError::Thread)?);
        tracing::info!(listen = %addr, seccomp_source = %monitor.source, "stockade monitor started");
        Ok(monitor)
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where seccomp records come from, in words.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Blocks until the threads end (they end only on [`Monitor::stop`] from elsewhere).
    pub fn wait(mut self) {
        if let Some(server) = self.server.take() {
            server.wait();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(server) = self.server.take() {
            server.stop();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if self.server.is_some() || !self.threads.is_empty() {
            self.shutdown();
        }
    }
}

fn read_records(
    mut source: Box<dyn RecordSource>,
    mut cache: RecordCache,
    counts: Arc<Mutex<SeccompCounts>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let batch = match source.read() {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(source = %source.describe(), error = %e, "reading seccomp records failed");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if batch.records.is_empty() && batch.lost == 0 {
            continue;
        }
        // Attribute before taking the lock: it reads /proc and the state directory.
        let attributed: Vec<_> = batch
            .records
            .iter()
            .filter(|r| r.is_denial())
            .map(|r| (r, cache.attribute(r)))
            .collect();
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.lost += batch.lost;
        for (record, attribution) in attributed {
            tracing::debug!(
                pid = record.pid,
                uid = record.uid,
                syscall = %record.syscall_name(),
                action = record.action(),
                ?attribution,
                "seccomp denial"
            );
            counts.count(record, attribution);
        }
    }
}
