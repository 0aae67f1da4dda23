//! What the exporter counts, and turning it into the exposition text on every scrape.

use crate::attribution::{Attribution, Workload};
use crate::cgroup::CgroupLayout;
use crate::exposition::{Exposition, Histogram, Kind};
use crate::seccomp_log::SeccompRecord;
use crate::trail::{TrailCounts, TrailTail};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use stockade_runtime::audit::AuditKind;
use stockade_runtime::hardener::Rule;
use stockade_runtime::idrange::{IdAllocator, IdPool, IdRangeError, IdTable};
use stockade_runtime::node_state::{self, ContainerRecord};
use stockade_runtime::profile::IdPoolSettings;

/// Start latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

/// A seccomp series: who, which syscall, which action.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DenialKey {
    pub workload: Workload,
    pub syscall: String,
    pub action: &'static str,
}

/// Counts kept by the seccomp reader.
#[derive(Debug, Default)]
pub struct SeccompCounts {
    pub denials: BTreeMap<DenialKey, u64>,
    /// Denials of processes outside Stockade containers (not exported per process).
    pub foreign: u64,
    /// Records the kernel dropped before we read them.
    pub lost: u64,
}

impl SeccompCounts {
    /// Counts one record (only denials count).
    pub fn count(&mut self, record: &SeccompRecord, attribution: Attribution) {
        if !record.is_denial() {
            return;
        }
        let workload = match attribution {
            Attribution::Container(w) | Attribution::Pod(w) => w,
            Attribution::Gone => Workload::unknown(),
            Attribution::Foreign => {
                self.foreign += 1;
                return;
            }
        };
        let key = DenialKey {
            workload,
            syscall: record.syscall_name(),
            action: record.action(),
        };
        *self.denials.entry(key).or_default() += 1;
    }
}

/// Settings of the scrape-time collection.
#[derive(Debug, Clone)]
pub struct CollectorSettings {
    pub state_dir: PathBuf,
    pub layout: CgroupLayout,
    pub audit_trails: Vec<PathBuf>,
    /// Names of the profiles in use (so their gauges exist at 0).
    pub profiles: Vec<String>,
    /// ID pools of the profiles in use (identical pools count once).
    pub id_pools: Vec<IdPoolSettings>,
    /// The ID-range allocator's state file; None: count pods with records instead.
    pub id_state: Option<PathBuf>,
}

/// Scrape-time state: audit trail positions, latencies already observed.
pub struct Collector {
    settings: CollectorSettings,
    trails: Vec<TrailTail>,
    trail_counts: TrailCounts,
    latency: Histogram,
    latency_seen: HashSet<String>,
}

/// ID ranges in use and free across the pools, estimated from the container records: the
/// allocator hands out one range per pod, so a pod with a running container holds one.
pub fn id_range_usage(pools: &[IdPoolSettings], records: &[ContainerRecord]) -> (u64, u64) {
    let in_use = records
        .iter()
        .map(|r| r.sandbox_id.as_str())
        .collect::<BTreeSet<_>>()
        .len() as u64;
    let total: u64 = distinct_pools(pools)
        .iter()
        .map(|p| u64::from(p.size / p.ids_per_pod.max(1)))
        .sum();
    (in_use, total.saturating_sub(in_use))
}

fn distinct_pools(pools: &[IdPoolSettings]) -> Vec<IdPoolSettings> {
    let mut out: Vec<IdPoolSettings> = Vec::new();
    for p in pools {
        if !out.contains(p) {
            out.push(*p);
        }
    }
    out
}

/// The allocator's view of the node's ID ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdRangeUsage {
    /// Every allocation on the node.
    pub in_use: u64,
    /// Slots of the pools that overlap no allocation.
    pub free: u64,
    /// Released ranges still in quarantine.
    pub quarantined: u64,
}

/// The ID range usage, read from the allocator's state file under its lock.
pub fn id_range_usage_from_state(
    state: &Path,
    pools: &[IdPoolSettings],
) -> Result<IdRangeUsage, IdRangeError> {
    let pools = distinct_pools(pools);
    let table = match pools.first() {
        // Not created yet: nothing allocated (and nothing created by us).
        Some(_) if !state.exists() => IdTable::default(),
        Some(first) => IdAllocator::open(state, *first)?.table()?,
        None => return Ok(IdRangeUsage::default()),
    };
    let ranges: Vec<_> = table.iter().map(|(_, a)| a.range).collect();
    let mut free = 0u64;
    for settings in pools {
        let pool = IdPool::new(settings)?;
        free += (0..pool.slots())
            .filter(|i| {
                let slot = pool.slot(*i);
                !ranges.iter().any(|r| r.overlaps(&slot))
            })
            .count() as u64;
    }
    Ok(IdRangeUsage {
        in_use: ranges.len() as u64,
        free,
        quarantined: table.quarantined_count() as u64,
    })
}

fn process_exists(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

impl Collector {
    pub fn new(settings: CollectorSettings) -> Self {
        Collector {
            trails: settings
                .audit_trails
                .iter()
                .map(|p| TrailTail::new(p))
                .collect(),
            settings,
            trail_counts: TrailCounts::default(),
            latency: Histogram::new(&LATENCY_BUCKETS),
            latency_seen: HashSet::new(),
        }
    }

    /// The metrics, from the node state now and the seccomp counts so far.
    pub fn render(&mut self, seccomp: &SeccompCounts) -> Exposition {
        let listing = node_state::list(&self.settings.state_dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list container records");
            Default::default()
        });
        for broken in &listing.broken {
            tracing::warn!(error = %broken, "broken container record");
        }
        let running: Vec<&ContainerRecord> = listing
            .records
            .iter()
            .filter(|r| process_exists(r.init_pid))
            .collect();
        for trail in &mut self.trails {
            if let Err(e) = trail.poll(&mut self.trail_counts) {
                tracing::warn!(path = %trail.path().display(), error = %e, "cannot read the audit trail");
            }
        }
        // Latencies: each container once; forget ids whose record is gone.
        let present: HashSet<&str> = listing.records.iter().map(|r| r.id.as_str()).collect();
        self.latency_seen.retain(|id| present.contains(id.as_str()));
        for record in &listing.records {
            if let Some(ms) = record
                .start_latency_ms
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
            {
                if self.latency_seen.insert(record.id.clone()) {
                    self.latency.observe(ms / 1000.0);
                }
            }
        }

        let mut out = Exposition::new();
        self.containers(&mut out, &running, listing.broken.len());
        self.refusals(&mut out);
        seccomp_families(&mut out, seccomp);
        // Every record, not only running ones: the OOM kill that ended a container's init
        // is worth seeing until the shim deletes the container (and its cgroup).
        let all: Vec<&ContainerRecord> = listing.records.iter().collect();
        self.cgroup_families(&mut out, &all);

        out.family(
            "stockade_container_start_latency_seconds",
            Kind::Histogram,
            "Time from the shim receiving Create to Start returning.",
        );
        out.histogram("stockade_container_start_latency_seconds", &self.latency);

        let running_records: Vec<ContainerRecord> = running.iter().map(|r| (*r).clone()).collect();
        let pools = &self.settings.id_pools;
        let usage = match &self.settings.id_state {
            Some(state) if !pools.is_empty() => id_range_usage_from_state(state, pools)
                .map_err(|e| tracing::warn!(error = %e, "cannot read the ID range state"))
                .ok()
                .map(|u| (u.in_use, u.free, Some(u.quarantined))),
            _ => {
                let (in_use, free) = id_range_usage(pools, &running_records);
                Some((in_use, free, None))
            }
        };
        if let Some((in_use, free, quarantined)) = usage {
            out.family(
                "stockade_id_ranges_in_use",
                Kind::Gauge,
                "Host ID ranges (one per pod) allocated on this node.",
            );
            out.sample("stockade_id_ranges_in_use", &[], in_use as f64);
            if !pools.is_empty() {
                out.family(
                    "stockade_id_ranges_free",
                    Kind::Gauge,
                    "Host ID ranges left in the profiles' pools.",
                );
                out.sample("stockade_id_ranges_free", &[], free as f64);
            }
            if let Some(quarantined) = quarantined {
                out.family(
                    "stockade_id_ranges_quarantined",
                    Kind::Gauge,
                    "Released host ID ranges held back from reuse until their quarantine ends.",
                );
                out.sample("stockade_id_ranges_quarantined", &[], quarantined as f64);
            }
        }
        out
    }

    fn containers(&self, out: &mut Exposition, running: &[&ContainerRecord], broken: usize) {
        let mut by_profile: BTreeMap<&str, u64> = self
            .settings
            .profiles
            .iter()
            .map(|p| (p.as_str(), 0))
            .collect();
        for record in running {
            *by_profile.entry(record.profile.as_str()).or_default() += 1;
        }
        out.family(
            "stockade_containers_running",
            Kind::Gauge,
            "Containers running under Stockade, by hardening profile.",
        );
        for (profile, n) in &by_profile {
            out.sample(
                "stockade_containers_running",
                &[("profile", profile)],
                *n as f64,
            );
        }
        out.family(
            "stockade_container_records_broken",
            Kind::Gauge,
            "Files in the node state directory that are not valid container records.",
        );
        out.sample("stockade_container_records_broken", &[], broken as f64);
    }

    fn refusals(&self, out: &mut Exposition) {
        let counts = &self.trail_counts;
        let mut refusals: BTreeMap<&str, u64> = Rule::ALL.iter().map(|r| (r.name(), 0)).collect();
        for (rule, n) in &counts.refusals {
            *refusals.entry(rule.as_str()).or_default() += n;
        }
        out.family(
            "stockade_policy_refusals_total",
            Kind::Counter,
            "Containers and updates refused by a Stockade policy rule (from the audit trail).",
        );
        for (rule, n) in &refusals {
            out.sample(
                "stockade_policy_refusals_total",
                &[("rule", rule)],
                *n as f64,
            );
        }
        out.family(
            "stockade_hardening_decisions_total",
            Kind::Counter,
            "Hardening decisions recorded in the audit trail, by event.",
        );
        for kind in AuditKind::ALL {
            let n = counts.decisions.get(kind.name()).copied().unwrap_or(0);
            out.sample(
                "stockade_hardening_decisions_total",
                &[("event", kind.name())],
                n as f64,
            );
        }
        out.family(
            "stockade_policy_findings_total",
            Kind::Counter,
            "What a rule in audit mode let through (run-as-root, secret-in-env, ...), by rule and profile (from the audit trail).",
        );
        for ((rule, profile), n) in &counts.findings {
            out.sample(
                "stockade_policy_findings_total",
                &[("rule", rule), ("profile", profile)],
                *n as f64,
            );
        }
        out.family(
            "stockade_audit_trail_invalid_lines_total",
            Kind::Counter,
            "Lines of the audit trail that are not audit events.",
        );
        out.sample(
            "stockade_audit_trail_invalid_lines_total",
            &[],
            counts.invalid_lines as f64,
        );
    }

    fn cgroup_families(&self, out: &mut Exposition, records: &[&ContainerRecord]) {
        let layout = &self.settings.layout;
        let mut ooms: BTreeMap<Workload, u64> = BTreeMap::new();
        let mut throttled: BTreeMap<Workload, f64> = BTreeMap::new();
        for record in records {
            let workload = Workload::of(record);
            match layout.oom_kills(&record.cgroups_path) {
                Ok(n) => *ooms.entry(workload.clone()).or_default() += n,
                Err(e) => {
                    tracing::debug!(container_id = %record.id, error = %e, "no OOM counter")
                }
            }
            match layout.cpu_throttled_seconds(&record.cgroups_path) {
                Ok(s) => *throttled.entry(workload).or_default() += s,
                Err(e) => {
                    tracing::debug!(container_id = %record.id, error = %e, "no CPU throttling counter")
                }
            }
        }
        out.family(
            "stockade_oom_kills_total",
            Kind::Counter,
            "Processes the kernel OOM-killed in a container's cgroup.",
        );
        for (w, n) in &ooms {
            out.sample("stockade_oom_kills_total", &workload_labels(w), *n as f64);
        }
        out.family(
            "stockade_cpu_throttled_seconds_total",
            Kind::Counter,
            "Time a container's cgroup was throttled by its CPU quota.",
        );
        for (w, s) in &throttled {
            out.sample(
                "stockade_cpu_throttled_seconds_total",
                &workload_labels(w),
                *s,
            );
        }
    }
}

fn workload_labels(w: &Workload) -> [(&'static str, &str); 3] {
    [
        ("namespace", &w.namespace),
        ("pod", &w.pod),
        ("container", &w.container),
    ]
}

fn seccomp_families(out: &mut Exposition, seccomp: &SeccompCounts) {
    out.family(
        "stockade_seccomp_denials_total",
        Kind::Counter,
        "System calls a Stockade seccomp filter refused, from the kernel's audit records.",
    );
    for (key, n) in &seccomp.denials {
        let w = &key.workload;
        out.sample(
            "stockade_seccomp_denials_total",
            &[
                ("namespace", &w.namespace),
                ("pod", &w.pod),
                ("container", &w.container),
                ("syscall", &key.syscall),
                ("action", key.action),
            ],
            *n as f64,
        );
    }
    out.family(
        "stockade_seccomp_foreign_denials_total",
        Kind::Counter,
        "Seccomp denials of processes outside Stockade containers (not attributed).",
    );
    out.sample(
        "stockade_seccomp_foreign_denials_total",
        &[],
        seccomp.foreign as f64,
    );
    out.family(
        "stockade_seccomp_records_lost_total",
        Kind::Counter,
        "Audit records the kernel dropped before the exporter read them (lower bound).",
    );
    out.sample(
        "stockade_seccomp_records_lost_total",
        &[],
        seccomp.lost as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, sandbox: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            sandbox_id: sandbox.into(),
            namespace: None,
            pod: None,
            container: None,
            profile: "default".into(),
            cgroups_path: format!("/s/{sandbox}/{id}"),
            init_pid: 1,
            created_unix_ms: 0,
            start_latency_ms: None,
            host_ids: None,
        }
    }

    #[test]
    fn id_ranges_count_pods_and_dedupe_pools() {
        let pool = IdPoolSettings {
            first_id: 1 << 30,
            size: 65536 * 10,
            ids_per_pod: 65536,
        };
        let records = [rec("a", "p1"), rec("b", "p1"), rec("c", "p2")];
        assert_eq!(id_range_usage(&[pool, pool], &records), (2, 8));
        assert_eq!(id_range_usage(&[], &records), (2, 0));
    }

    #[test]
    fn counts_only_denials_and_labels_unknowns() {
        let mut counts = SeccompCounts::default();
        let record = |code| SeccompRecord {
            pid: 5,
            uid: None,
            arch: 0xC000_003E,
            syscall: 250,
            code,
            comm: None,
        };
        counts.count(&record(libc::SECCOMP_RET_LOG), Attribution::Gone);
        counts.count(&record(libc::SECCOMP_RET_ERRNO), Attribution::Gone);
        counts.count(&record(libc::SECCOMP_RET_ERRNO), Attribution::Gone);
        counts.count(&record(libc::SECCOMP_RET_ERRNO), Attribution::Foreign);
        assert_eq!(counts.foreign, 1);
        let (key, n) = counts.denials.iter().next().unwrap();
        assert_eq!(*n, 2);
        assert_eq!(key.workload, Workload::unknown());
        assert_eq!(key.syscall, "keyctl");
        assert_eq!(key.action, "errno");
    }
}
