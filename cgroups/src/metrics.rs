//! containerd's Task.Stats payload: a [`CgroupSample`] packed as
//! `io.containerd.cgroups.v1.Metrics` (v1 and hybrid hosts) or
//! `io.containerd.cgroups.v2.Metrics` (pure cgroup v2). containerd 1.6 resolves the
//! type by the exact URL, without a `type.googleapis.com/` prefix.

use containerd_shim_protos::cgroups::metrics as v1pb;
use containerd_shim_protos::cgroups_v2::metrics as v2pb;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};

use crate::sample::{CgroupMode, CgroupSample, IoSample, MemoryCounter};
use crate::{CgroupError, Host};

/// Type URL of the cgroup v1 metrics message, as containerd 1.6 looks it up.
pub const V1_METRICS_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
/// Type URL of the cgroup v2 metrics message, as containerd 1.6 looks it up.
pub const V2_METRICS_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// Reads the container's cgroup on this node and packs it for Task.Stats.
pub fn collect(cgroups_path: &str) -> Result<Any, CgroupError> {
    to_any(&Host::current()?.sample(cgroups_path)?)
}

/// Packs a sample into the `Any` of a StatsResponse.
pub fn to_any(sample: &CgroupSample) -> Result<Any, CgroupError> {
    let (type_url, value) = match sample.mode {
        CgroupMode::V1 => (V1_METRICS_TYPE_URL, to_v1_metrics(sample).write_to_bytes()),
        CgroupMode::V2 => (V2_METRICS_TYPE_URL, to_v2_metrics(sample).write_to_bytes()),
    };
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = value.map_err(|e| CgroupError::Encode(e.to_string()))?;
    Ok(any)
}

fn memory_entry(c: &MemoryCounter) -> v1pb::MemoryEntry {
    let mut e = v1pb::MemoryEntry::new();
    e.usage = c.usage;
    e.limit = c.limit.unwrap_or(u64::MAX);
    e.max = c.max_usage.unwrap_or(0);
    e.failcnt = c.failcnt;
    e
}

/// The v1 metrics message containerd's cgroup v1 code fills.
pub fn to_v1_metrics(sample: &CgroupSample) -> v1pb::Metrics {
    let mut metrics = v1pb::Metrics::new();

    let mut pids = v1pb::PidsStat::new();
    pids.current = sample.pids.current;
    // containerd's v1 convention: 0 means no pids limit.
    pids.limit = sample.pids.limit.unwrap_or(0);
    metrics.pids = MessageField::some(pids);

    let c = &sample.cpu;
    let mut usage = v1pb::CPUUsage::new();
    usage.total = c.usage_ns;
    usage.user = c.user_ns;
    usage.kernel = c.system_ns;
    usage.per_cpu = c.per_cpu_ns.clone();
    let mut throttle = v1pb::Throttle::new();
    throttle.periods = c.periods;
    throttle.throttled_periods = c.throttled_periods;
    throttle.throttled_time = c.throttled_ns;
    let mut cpu = v1pb::CPUStat::new();
    cpu.usage = MessageField::some(usage);
    cpu.throttling = MessageField::some(throttle);
    metrics.cpu = MessageField::some(cpu);

    let m = &sample.memory;
    let s = |k: &str| m.stat(k);
    let mut mem = v1pb::MemoryStat::new();
    mem.cache = s("cache");
    mem.rss = s("rss");
    mem.rss_huge = s("rss_huge");
    mem.mapped_file = s("mapped_file");
    mem.dirty = s("dirty");
    mem.writeback = s("writeback");
    mem.pg_pg_in = s("pgpgin");
    mem.pg_pg_out = s("pgpgout");
    mem.pg_fault = s("pgfault");
    mem.pg_maj_fault = s("pgmajfault");
    mem.inactive_anon = s("inactive_anon");
    mem.active_anon = s("active_anon");
    mem.inactive_file = s("inactive_file");
    mem.active_file = s("active_file");
    mem.unevictable = s("unevictable");
    mem.hierarchical_memory_limit = s("hierarchical_memory_limit");
    mem.hierarchical_swap_limit = s("hierarchical_memsw_limit");
    mem.total_cache = s("total_cache");
    mem.total_rss = s("total_rss");
    mem.total_rss_huge = s("total_rss_huge");
    mem.total_mapped_file = s("total_mapped_file");
    mem.total_dirty = s("total_dirty");
    mem.total_writeback = s("total_writeback");
    mem.total_pg_pg_in = s("total_pgpgin");
    mem.total_pg_pg_out = s("total_pgpgout");
    mem.total_pg_fault = s("total_pgfault");
    mem.total_pg_maj_fault = s("total_pgmajfault");
    mem.total_inactive_anon = s("total_inactive_anon");
    mem.total_active_anon = s("total_active_anon");
    mem.total_inactive_file = s("total_inactive_file");
    mem.total_active_file = s("total_active_file");
    mem.total_unevictable = s("total_unevictable");
    mem.usage = MessageField::some(memory_entry(&m.memory));
    mem.swap = m.swap.as_ref().map(memory_entry).into();
    mem.kernel = m.kernel.as_ref().map(memory_entry).into();
    mem.kernel_tcp = m.kernel_tcp.as_ref().map(memory_entry).into();
    metrics.memory = MessageField::some(mem);

    let mut oom = v1pb::MemoryOomControl::new();
    oom.oom_kill_disable = m.events.get("oom_kill_disable").copied().unwrap_or(0);
    oom.under_oom = m.events.get("under_oom").copied().unwrap_or(0);
    oom.oom_kill = m.oom_kills;
    metrics.memory_oom_control = MessageField::some(oom);

    if !sample.io.is_empty() {
        let entry = |io: &IoSample, op: &str, value: u64| {
            let mut e = v1pb::BlkIOEntry::new();
            e.major = io.major;
            e.minor = io.minor;
            e.op = op.to_string();
            e.value = value;
            e
        };
        let mut blkio = v1pb::BlkIOStat::new();
        for io in &sample.io {
            blkio.io_service_bytes_recursive.extend([
                entry(io, "Read", io.read_bytes),
                entry(io, "Write", io.write_bytes),
            ]);
            blkio
                .io_serviced_recursive
                .extend([entry(io, "Read", io.reads), entry(io, "Write", io.writes)]);
        }
        metrics.blkio = MessageField::some(blkio);
    }
    metrics
}

/// The v2 metrics message containerd's cgroup v2 code fills.
pub fn to_v2_metrics(sample: &CgroupSample) -> v2pb::Metrics {
    let mut metrics = v2pb::Metrics::new();

    let mut pids = v2pb::PidsStat::new();
    pids.current = sample.pids.current;
    // containerd's v2 convention: "max" reads as the largest u64.
    pids.limit = sample.pids.limit.unwrap_or(u64::MAX);
    metrics.pids = MessageField::some(pids);

    let c = &sample.cpu;
    let mut cpu = v2pb::CPUStat::new();
    cpu.usage_usec = c.usage_ns / 1000;
    cpu.user_usec = c.user_ns / 1000;
    cpu.system_usec = c.system_ns / 1000;
    cpu.nr_periods = c.periods;
    cpu.nr_throttled = c.throttled_periods;
    cpu.throttled_usec = c.throttled_usec();
    metrics.cpu = MessageField::some(cpu);

    let m = &sample.memory;
    let s = |k: &str| m.stat(k);
    // Kernels since 5.9 split the workingset counters into anon and file.
    let split = |k: &str| {
        m.stat
            .get(k)
            .copied()
            .unwrap_or_else(|| s(&format!("{k}_anon")) + s(&format!("{k}_file")))
    };
    let mut mem = v2pb::MemoryStat::new();
    mem.anon = s("anon");
    mem.file = s("file");
    mem.kernel_stack = s("kernel_stack");
    mem.slab = s("slab");
    mem.sock = s("sock");
    mem.shmem = s("shmem");
    mem.file_mapped = s("file_mapped");
    mem.file_dirty = s("file_dirty");
    mem.file_writeback = s("file_writeback");
    mem.anon_thp = s("anon_thp");
    mem.inactive_anon = s("inactive_anon");
    mem.active_anon = s("active_anon");
    mem.inactive_file = s("inactive_file");
    mem.active_file = s("active_file");
    mem.unevictable = s("unevictable");
    mem.slab_reclaimable = s("slab_reclaimable");
    mem.slab_unreclaimable = s("slab_unreclaimable");
    mem.pgfault = s("pgfault");
    mem.pgmajfault = s("pgmajfault");
    mem.workingset_refault = split("workingset_refault");
    mem.workingset_activate = split("workingset_activate");
    mem.workingset_nodereclaim = s("workingset_nodereclaim");
    mem.pgrefill = s("pgrefill");
    mem.pgscan = s("pgscan");
    mem.pgsteal = s("pgsteal");
    mem.pgactivate = s("pgactivate");
    mem.pgdeactivate = s("pgdeactivate");
    mem.pglazyfree = s("pglazyfree");
    mem.pglazyfreed = s("pglazyfreed");
    mem.thp_fault_alloc = s("thp_fault_alloc");
    mem.thp_collapse_alloc = s("thp_collapse_alloc");
    mem.usage = m.memory.usage;
    mem.usage_limit = m.memory.limit.unwrap_or(u64::MAX);
    mem.max_usage = m.memory.max_usage.unwrap_or(0);
    if let Some(swap) = &m.swap {
        mem.swap_usage = swap.usage;
        mem.swap_limit = swap.limit.unwrap_or(u64::MAX);
        mem.swap_max_usage = swap.max_usage.unwrap_or(0);
    }
    metrics.memory = MessageField::some(mem);

    let ev = |k: &str| m.events.get(k).copied().unwrap_or(0);
    let mut events = v2pb::MemoryEvents::new();
    events.low = ev("low");
    events.high = ev("high");
    events.max = ev("max");
    events.oom = ev("oom");
    events.oom_kill = ev("oom_kill");
    events.oom_group_kill = ev("oom_group_kill");
    metrics.memory_events = MessageField::some(events);

    if !sample.io.is_empty() {
        let mut io = v2pb::IOStat::new();
        io.usage = sample
            .io
            .iter()
            .map(|d| {
                let mut e = v2pb::IOEntry::new();
                e.major = d.major;
                e.minor = d.minor;
                e.rbytes = d.read_bytes;
                e.wbytes = d.write_bytes;
                e.rios = d.reads;
                e.wios = d.writes;
                e
            })
            .collect();
        metrics.io = MessageField::some(io);
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::fixtures::{v1_host, v2_host, CTR};

    #[test]
    fn v1_sample_becomes_v1_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let sample = v1_host(dir.path()).sample(CTR).unwrap();
        let m = to_v1_metrics(&sample);
        assert_eq!(m.cpu.usage.total, 123_456_789);
        assert_eq!(m.cpu.usage.user, 100_000_000);
        assert_eq!(m.cpu.usage.kernel, 23_456_789);
        assert_eq!(m.cpu.usage.per_cpu, vec![100_000_000, 23_456_789]);
        assert_eq!(m.cpu.throttling.throttled_periods, 4);
        assert_eq!(m.cpu.throttling.throttled_time, 5_000_000);
        assert_eq!(m.memory.usage.usage, 8 << 20);
        assert_eq!(m.memory.usage.limit, 16 << 20);
        assert_eq!(m.memory.usage.failcnt, 7);
        assert!(m.memory.swap.is_none());
        assert_eq!(m.memory.kernel.limit, u64::MAX);
        assert_eq!(m.memory.cache, 9_605_120);
        assert_eq!(m.memory.rss, 8_212_480);
        assert_eq!(m.memory.pg_maj_fault, 3);
        assert_eq!(m.memory.hierarchical_memory_limit, 16 << 20);
        assert_eq!(m.memory.total_inactive_file, 223_080_448);
        assert_eq!(m.memory_oom_control.oom_kill, 2);
        assert_eq!((m.pids.current, m.pids.limit), (3, 64));
        assert_eq!(m.blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(m.blkio.io_service_bytes_recursive[0].op, "Read");
        assert_eq!(m.blkio.io_service_bytes_recursive[0].value, 4096);

        let any = to_any(&sample).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let decoded = v1pb::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(decoded, m);
    }

    #[test]
    fn v2_sample_becomes_v2_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let sample = v2_host(dir.path()).sample(CTR).unwrap();
        let m = to_v2_metrics(&sample);
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (2500, 2000, 500)
        );
        assert_eq!(
            (m.cpu.nr_periods, m.cpu.nr_throttled, m.cpu.throttled_usec),
            (20, 3, 700)
        );
        assert_eq!(m.memory.usage, 8 << 20);
        assert_eq!(m.memory.usage_limit, 16 << 20);
        assert_eq!(m.memory.max_usage, 12 << 20);
        assert_eq!(m.memory.swap_limit, u64::MAX);
        assert_eq!(m.memory.anon, 1_200_128);
        assert_eq!(m.memory.inactive_file, 4_000_000);
        assert_eq!(m.memory.pgmajfault, 2);
        assert_eq!(
            m.memory.workingset_refault, 7,
            "anon + file on newer kernels"
        );
        assert_eq!(m.memory.workingset_activate, 11);
        assert_eq!((m.memory_events.oom, m.memory_events.oom_kill), (2, 1));
        assert_eq!((m.pids.current, m.pids.limit), (2, u64::MAX));
        assert_eq!(m.io.usage.len(), 1);
        assert_eq!(m.io.usage[0].rbytes, 4096);

        let any = to_any(&sample).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let decoded = v2pb::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(decoded, m);
    }
}
