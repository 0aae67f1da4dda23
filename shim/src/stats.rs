//! Container statistics from its cgroup, for the Task `Stats` call.
//!
//! Reading is split from packing: [`sample`] parses the cgroup files (v1 or v2)
//! into a plain [`CgroupSample`] that the metrics exporter can reuse, and
//! [`to_any`] turns a sample into the protobuf `Any` containerd expects:
//! `io.containerd.cgroups.v1.Metrics` on cgroup v1 (including hybrid hosts) and
//! `io.containerd.cgroups.v2.Metrics` on a pure cgroup v2 host. containerd 1.6
//! resolves the type by the exact URL, without a `type.googleapis.com/` prefix.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use containerd_shim_protos::cgroups::metrics as v1pb;
use containerd_shim_protos::cgroups_v2::metrics as v2pb;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};

/// Where the cgroup filesystems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Type URL of the cgroup v1 metrics message, as containerd 1.6 looks it up.
pub const V1_METRICS_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
/// Type URL of the cgroup v2 metrics message, as containerd 1.6 looks it up.
pub const V2_METRICS_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// v1 reports "no limit" as the largest page-aligned `i64`; anything this high
/// is not a real limit on any page size.
const V1_UNLIMITED_THRESHOLD: u64 = (i64::MAX as u64) - (1 << 24);

/// Which cgroup hierarchy this host uses for container controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// v1 controllers (also hybrid hosts: their cgroup2 mount has no controllers).
    V1,
    /// Pure cgroup v2 (unified) hierarchy.
    V2,
}

/// Picks the hierarchy the way runc and libcgroups do: only a cgroup2 mount at
/// the cgroup root means unified mode.
pub fn detect_mode() -> CgroupMode {
    detect_mode_at(Path::new(CGROUP_ROOT))
}

fn detect_mode_at(root: &Path) -> CgroupMode {
    if root.join("cgroup.controllers").exists() {
        CgroupMode::V2
    } else {
        CgroupMode::V1
    }
}

/// One reading of a container cgroup, independent of the cgroup version.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupSample {
    pub mode: CgroupMode,
    pub cpu: CpuSample,
    pub memory: MemorySample,
    pub pids: PidsSample,
    /// Block IO per device (v1 blkio throttle counters, v2 io.stat).
    pub io: Vec<IoSample>,
}

/// CPU time, all in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuSample {
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    /// Per-CPU usage (v1 only; empty on v2).
    pub per_cpu_ns: Vec<u64>,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

impl CpuSample {
    /// Time the cgroup was throttled by its CPU quota, in microseconds.
    pub fn throttled_usec(&self) -> u64 {
        self.throttled_ns / 1000
    }
}

/// A usage counter with its limit; `None` limits mean unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryCounter {
    pub usage: u64,
    pub limit: Option<u64>,
    /// High-water mark (v1 `max_usage_in_bytes`, v2 `memory.peak` where present).
    pub max_usage: Option<u64>,
    /// Times the limit was hit (v1 `failcnt`, v2 the `max` event count).
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemorySample {
    pub memory: MemoryCounter,
    /// v1: memory+swap (`memory.memsw.*`); v2: swap alone (`memory.swap.*`).
    pub swap: Option<MemoryCounter>,
    /// v1 only: kernel memory (`memory.kmem.*`).
    pub kernel: Option<MemoryCounter>,
    /// v1 only: kernel TCP buffers (`memory.kmem.tcp.*`).
    pub kernel_tcp: Option<MemoryCounter>,
    /// OOM kills in this cgroup (v1 `memory.oom_control`, v2 `memory.events`).
    pub oom_kills: u64,
    /// v1 `memory.oom_control` or v2 `memory.events`, as keyed counters.
    pub events: BTreeMap<String, u64>,
    /// `memory.stat`, keys as the kernel names them.
    pub stat: BTreeMap<String, u64>,
}

impl MemorySample {
    /// A `memory.stat` value, 0 when the kernel does not report it.
    pub fn stat(&self, key: &str) -> u64 {
        self.stat.get(key).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsSample {
    pub current: u64,
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoSample {
    pub major: u64,
    pub minor: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// Reads the container's cgroup and packs it as containerd's Task.Stats wants.
///
/// `cgroups_path` is the absolute `linux.cgroupsPath` of the container's spec.
pub fn collect(cgroups_path: &str) -> anyhow::Result<Any> {
    let sample = sample(cgroups_path)?;
    to_any(&sample)
}

/// Reads the container's cgroup into a plain sample (no protobuf).
pub fn sample(cgroups_path: &str) -> anyhow::Result<CgroupSample> {
    let rel = relative_cgroup_path(cgroups_path)?;
    match detect_mode() {
        CgroupMode::V2 => read_v2(&Path::new(CGROUP_ROOT).join(&rel)),
        CgroupMode::V1 => {
            let mountinfo = fs::read_to_string("/proc/self/mountinfo")
                .context("reading /proc/self/mountinfo")?;
            let mounts = V1Mounts::from_mountinfo(&mountinfo);
            read_v1(&mounts, &rel)
        }
    }
}

/// Packs a sample into the `Any` of a StatsResponse.
pub fn to_any(sample: &CgroupSample) -> anyhow::Result<Any> {
    let (type_url, value) = match sample.mode {
        CgroupMode::V1 => (V1_METRICS_TYPE_URL, to_v1_metrics(sample).write_to_bytes()),
        CgroupMode::V2 => (V2_METRICS_TYPE_URL, to_v2_metrics(sample).write_to_bytes()),
    };
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = value.context("encoding cgroup metrics")?;
    Ok(any)
}

/// Checks an OCI cgroupsPath and makes it relative to a hierarchy root.
pub(crate) fn relative_cgroup_path(cgroups_path: &str) -> anyhow::Result<PathBuf> {
    if !cgroups_path.starts_with('/') {
        bail!(
            "cgroupsPath {cgroups_path:?} must be absolute (systemd slice form is not supported)"
        );
    }
    let mut rel = PathBuf::new();
    for component in Path::new(cgroups_path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => rel.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                bail!("cgroupsPath {cgroups_path:?} must not contain '..'")
            }
        }
    }
    Ok(rel)
}

// ---------------------------------------------------------------------------
// cgroup v1

/// Mount points of the v1 controllers, from /proc/self/mountinfo.
#[derive(Debug, Clone, Default)]
pub(crate) struct V1Mounts {
    by_controller: HashMap<String, PathBuf>,
}

impl V1Mounts {
    pub(crate) fn from_mountinfo(mountinfo: &str) -> Self {
        let mut by_controller = HashMap::new();
        for line in mountinfo.lines() {
            // "<id> <parent> <maj:min> <root> <mountpoint> <opts> [optional...] - <fstype> <source> <superopts>"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut right = right.split_whitespace();
            if right.next() != Some("cgroup") {
                continue;
            }
            let Some(mount_point) = left.split_whitespace().nth(4) else {
                continue;
            };
            let super_opts = right.nth(1).unwrap_or_default();
            for opt in super_opts.split(',') {
                if matches!(opt, "cpu" | "cpuacct" | "memory" | "pids" | "blkio") {
                    by_controller
                        .entry(opt.to_string())
                        .or_insert_with(|| PathBuf::from(unescape_mountinfo(mount_point)));
                }
            }
        }
        Self { by_controller }
    }

    /// The controller's directory for a relative cgroup path; falls back to the
    /// conventional /sys/fs/cgroup/<controller> when mountinfo had no entry.
    pub(crate) fn dir(&self, controller: &str, rel: &Path) -> PathBuf {
        self.by_controller
            .get(controller)
            .cloned()
            .unwrap_or_else(|| Path::new(CGROUP_ROOT).join(controller))
            .join(rel)
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_v1(mounts: &V1Mounts, rel: &Path) -> anyhow::Result<CgroupSample> {
    let mem = mounts.dir("memory", rel);
    let cpuacct = mounts.dir("cpuacct", rel);
    let cpu = mounts.dir("cpu", rel);
    let pids = mounts.dir("pids", rel);
    let blkio = mounts.dir("blkio", rel);
    if !mem.is_dir() && !cpuacct.is_dir() && !pids.is_dir() {
        bail!(
            "cgroup {} does not exist in any v1 controller",
            rel.display()
        );
    }

    let mut cpu_sample = CpuSample {
        usage_ns: read_u64_opt(&cpuacct.join("cpuacct.usage"))?.unwrap_or(0),
        per_cpu_ns: match read_opt(&cpuacct.join("cpuacct.usage_percpu"))? {
            Some(s) => parse_u64_list(&s)?,
            None => Vec::new(),
        },
        ..CpuSample::default()
    };
    // usage_user/usage_sys are in nanoseconds; cpuacct.stat only has USER_HZ ticks.
    match (
        read_u64_opt(&cpuacct.join("cpuacct.usage_user"))?,
        read_u64_opt(&cpuacct.join("cpuacct.usage_sys"))?,
    ) {
        (Some(user), Some(sys)) => {
            cpu_sample.user_ns = user;
            cpu_sample.system_ns = sys;
        }
        _ => {
            if let Some(s) = read_opt(&cpuacct.join("cpuacct.stat"))? {
                let stat = parse_flat_keyed(&s);
                let ns_per_tick = 1_000_000_000 / clock_ticks_per_sec();
                cpu_sample.user_ns = stat.get("user").copied().unwrap_or(0) * ns_per_tick;
                cpu_sample.system_ns = stat.get("system").copied().unwrap_or(0) * ns_per_tick;
            }
        }
    }
    if let Some(s) = read_opt(&cpu.join("cpu.stat"))? {
        let stat = parse_flat_keyed(&s);
        cpu_sample.periods = stat.get("nr_periods").copied().unwrap_or(0);
        cpu_sample.throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
        cpu_sample.throttled_ns = stat.get("throttled_time").copied().unwrap_or(0);
    }

    let oom_control = read_opt(&mem.join("memory.oom_control"))?
        .map(|s| parse_flat_keyed(&s))
        .unwrap_or_default();
    let memory = MemorySample {
        memory: read_v1_counter(&mem, "memory")?.unwrap_or_default(),
        swap: read_v1_counter(&mem, "memory.memsw")?,
        kernel: read_v1_counter(&mem, "memory.kmem")?,
        kernel_tcp: read_v1_counter(&mem, "memory.kmem.tcp")?,
        oom_kills: oom_control.get("oom_kill").copied().unwrap_or(0),
        events: oom_control,
        stat: read_opt(&mem.join("memory.stat"))?
            .map(|s| parse_flat_keyed(&s))
            .unwrap_or_default(),
    };

    let pids = PidsSample {
        current: read_u64_opt(&pids.join("pids.current"))?.unwrap_or(0),
        limit: match read_opt(&pids.join("pids.max"))? {
            Some(s) => parse_limit(&s)?,
            None => None,
        },
    };

    let io = match (
        read_opt(&blkio.join("blkio.throttle.io_service_bytes_recursive"))?,
        read_opt(&blkio.join("blkio.throttle.io_serviced_recursive"))?,
    ) {
        (Some(bytes), Some(ops)) => merge_v1_blkio(&parse_v1_blkio(&bytes), &parse_v1_blkio(&ops)),
        _ => Vec::new(),
    };

    Ok(CgroupSample {
        mode: CgroupMode::V1,
        cpu: cpu_sample,
        memory,
        pids,
        io,
    })
}

/// Reads `<prefix>.usage_in_bytes` and friends; `None` when the kernel lacks them
/// (no swap accounting, no kmem).
fn read_v1_counter(dir: &Path, prefix: &str) -> anyhow::Result<Option<MemoryCounter>> {
    let Some(usage) = read_u64_opt(&dir.join(format!("{prefix}.usage_in_bytes")))? else {
        return Ok(None);
    };
    let limit = match read_opt(&dir.join(format!("{prefix}.limit_in_bytes")))? {
        Some(s) => parse_limit(&s)?,
        None => None,
    };
    Ok(Some(MemoryCounter {
        usage,
        limit,
        max_usage: read_u64_opt(&dir.join(format!("{prefix}.max_usage_in_bytes")))?,
        failcnt: read_u64_opt(&dir.join(format!("{prefix}.failcnt")))?.unwrap_or(0),
    }))
}

/// One line of a v1 blkio file: "8:0 Read 4096"; the "Total" line is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlkioLine {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

pub(crate) fn parse_v1_blkio(content: &str) -> Vec<BlkioLine> {
    content
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (major, minor) = parse_dev(parts.next()?)?;
            let op = parts.next()?.to_string();
            let value = parts.next()?.parse().ok()?;
            Some(BlkioLine {
                major,
                minor,
                op,
                value,
            })
        })
        .collect()
}

fn merge_v1_blkio(bytes: &[BlkioLine], ops: &[BlkioLine]) -> Vec<IoSample> {
    let mut by_dev: BTreeMap<(u64, u64), IoSample> = BTreeMap::new();
    let mut add = |line: &BlkioLine, is_bytes: bool| {
        let entry = by_dev
            .entry((line.major, line.minor))
            .or_insert_with(|| IoSample {
                major: line.major,
                minor: line.minor,
                ..IoSample::default()
            });
        match (line.op.as_str(), is_bytes) {
            ("Read", true) => entry.read_bytes = line.value,
            ("Write", true) => entry.write_bytes = line.value,
            ("Read", false) => entry.reads = line.value,
            ("Write", false) => entry.writes = line.value,
            _ => {}
        }
    };
    bytes.iter().for_each(|l| add(l, true));
    ops.iter().for_each(|l| add(l, false));
    by_dev.into_values().collect()
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects; it only returns a value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

// ---------------------------------------------------------------------------
// cgroup v2

fn read_v2(dir: &Path) -> anyhow::Result<CgroupSample> {
    if !dir.is_dir() {
        bail!("cgroup {} does not exist", dir.display());
    }
    let mut cpu = CpuSample::default();
    if let Some(s) = read_opt(&dir.join("cpu.stat"))? {
        let stat = parse_flat_keyed(&s);
        let usec = |k: &str| stat.get(k).copied().unwrap_or(0).saturating_mul(1000);
        cpu.usage_ns = usec("usage_usec");
        cpu.user_ns = usec("user_usec");
        cpu.system_ns = usec("system_usec");
        cpu.throttled_ns = usec("throttled_usec");
        cpu.periods = stat.get("nr_periods").copied().unwrap_or(0);
        cpu.throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
    }

    let events = read_opt(&dir.join("memory.events"))?
        .map(|s| parse_flat_keyed(&s))
        .unwrap_or_default();
    let memory_counter = MemoryCounter {
        usage: read_u64_opt(&dir.join("memory.current"))?.unwrap_or(0),
        limit: match read_opt(&dir.join("memory.max"))? {
            Some(s) => parse_limit(&s)?,
            None => None,
        },
        max_usage: read_u64_opt(&dir.join("memory.peak"))?,
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    let swap = match read_u64_opt(&dir.join("memory.swap.current"))? {
        Some(usage) => Some(MemoryCounter {
            usage,
            limit: match read_opt(&dir.join("memory.swap.max"))? {
                Some(s) => parse_limit(&s)?,
                None => None,
            },
            max_usage: read_u64_opt(&dir.join("memory.swap.peak"))?,
            failcnt: 0,
        }),
        None => None,
    };
    let memory = MemorySample {
        memory: memory_counter,
        swap,
        kernel: None,
        kernel_tcp: None,
        oom_kills: events.get("oom_kill").copied().unwrap_or(0),
        events,
        stat: read_opt(&dir.join("memory.stat"))?
            .map(|s| parse_flat_keyed(&s))
            .unwrap_or_default(),
    };

    let pids = PidsSample {
        current: read_u64_opt(&dir.join("pids.current"))?.unwrap_or(0),
        limit: match read_opt(&dir.join("pids.max"))? {
            Some(s) => parse_limit(&s)?,
            None => None,
        },
    };
    let io = read_opt(&dir.join("io.stat"))?
        .map(|s| parse_v2_io_stat(&s))
        .unwrap_or_default();

    Ok(CgroupSample {
        mode: CgroupMode::V2,
        cpu,
        memory,
        pids,
        io,
    })
}

/// v2 io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0".
pub(crate) fn parse_v2_io_stat(content: &str) -> Vec<IoSample> {
    content
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (major, minor) = parse_dev(parts.next()?)?;
            let mut entry = IoSample {
                major,
                minor,
                ..IoSample::default()
            };
            for kv in parts {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let Ok(v) = v.parse::<u64>() else { continue };
                match k {
                    "rbytes" => entry.read_bytes = v,
                    "wbytes" => entry.write_bytes = v,
                    "rios" => entry.reads = v,
                    "wios" => entry.writes = v,
                    _ => {}
                }
            }
            Some(entry)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// parsing helpers (pure)

fn parse_dev(s: &str) -> Option<(u64, u64)> {
    let (major, minor) = s.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A single unsigned number, as in `memory.current` or `cpuacct.usage`.
pub(crate) fn parse_u64(content: &str) -> anyhow::Result<u64> {
    let s = content.trim();
    s.parse()
        .with_context(|| format!("expected an unsigned number, found {s:?}"))
}

/// A limit: "max" (v2, pids) or a v1 value near `i64::MAX` mean unlimited.
pub(crate) fn parse_limit(content: &str) -> anyhow::Result<Option<u64>> {
    let s = content.trim();
    if s == "max" {
        return Ok(None);
    }
    let v = parse_u64(s)?;
    Ok((v < V1_UNLIMITED_THRESHOLD).then_some(v))
}

/// Whitespace-separated numbers, as in `cpuacct.usage_percpu`.
pub(crate) fn parse_u64_list(content: &str) -> anyhow::Result<Vec<u64>> {
    content.split_whitespace().map(parse_u64).collect()
}

/// "key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
/// Lines that do not hold a number are skipped: new kernels add fields.
pub(crate) fn parse_flat_keyed(content: &str) -> BTreeMap<String, u64> {
    content
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let key = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            Some((key.to_string(), value))
        })
        .collect()
}

/// Reads a cgroup file; `None` when this kernel or controller does not have it.
fn read_opt(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // Reading a cgroup file that is being removed gives ENODEV.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn read_u64_opt(path: &Path) -> anyhow::Result<Option<u64>> {
    match read_opt(path)? {
        Some(s) => parse_u64(&s)
            .with_context(|| format!("parsing {}", path.display()))
            .map(Some),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// protobuf packing

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

    const V1_MEMORY_STAT: &str = "cache 9605120\nrss 8212480\nrss_huge 0\nshmem 9068544\n\
mapped_file 7512064\ndirty 12288\nwriteback 0\npgpgin 34684\npgpgout 30334\npgfault 37072\n\
pgmajfault 3\ninactive_anon 0\nactive_anon 1531904\ninactive_file 94208\nactive_file 442368\n\
unevictable 15749120\nhierarchical_memory_limit 16777216\n\
hierarchical_memsw_limit 9223372036854771712\ntotal_cache 337268736\ntotal_rss 15421440\n\
total_pgfault 7729061\ntotal_inactive_file 223080448\n";

    const V2_MEMORY_STAT: &str = "anon 1200128\nfile 4096000\nkernel 512000\nkernel_stack 32768\n\
slab 250000\nsock 0\nshmem 0\nfile_mapped 1024\nfile_dirty 0\nfile_writeback 0\nanon_thp 0\n\
inactive_anon 1100000\nactive_anon 100128\ninactive_file 4000000\nactive_file 96000\n\
unevictable 0\nslab_reclaimable 200000\nslab_unreclaimable 50000\npgfault 900\npgmajfault 2\n\
workingset_refault_anon 3\nworkingset_refault_file 4\nworkingset_activate_anon 5\n\
workingset_activate_file 6\nworkingset_nodereclaim 0\n";

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /mnt/my\\040pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("stockade-stats-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
        fn write(&self, rel: &str, content: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cgroups_path_must_be_absolute_without_dotdot() {
        assert_eq!(
            relative_cgroup_path("/stockade/pod/ctr").unwrap(),
            PathBuf::from("stockade/pod/ctr")
        );
        assert_eq!(relative_cgroup_path("/").unwrap(), PathBuf::new());
        let err = relative_cgroup_path("system.slice:cri:abc").unwrap_err();
        assert!(err.to_string().contains("must be absolute"), "{err}");
        let err = relative_cgroup_path("/stockade/../etc").unwrap_err();
        assert!(err.to_string().contains(".."), "{err}");
    }

    #[test]
    fn limits_parse_max_and_v1_unlimited_as_none() {
        assert_eq!(parse_limit("max\n").unwrap(), None);
        assert_eq!(parse_limit("9223372036854771712\n").unwrap(), None);
        // 64 KiB pages give a slightly different "unlimited".
        assert_eq!(parse_limit("9223372036854710272").unwrap(), None);
        assert_eq!(parse_limit("16777216\n").unwrap(), Some(16 << 20));
        assert!(parse_limit("sixteen").is_err());
        assert_eq!(parse_u64(" 42\n").unwrap(), 42);
        assert_eq!(parse_u64_list("1 2 3 \n").unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn flat_keyed_skips_lines_without_numbers() {
        let map = parse_flat_keyed("usage_usec 1500\nuser_usec 1000\nbogus\nweird x\n");
        assert_eq!(map.len(), 2);
        assert_eq!(map["usage_usec"], 1500);
        assert_eq!(map["user_usec"], 1000);
    }

    #[test]
    fn mountinfo_finds_v1_controllers_including_combined_and_escaped() {
        let mounts = V1Mounts::from_mountinfo(MOUNTINFO);
        let rel = Path::new("stockade/ctr");
        assert_eq!(
            mounts.dir("cpu", rel),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/stockade/ctr")
        );
        assert_eq!(
            mounts.dir("cpuacct", rel),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/stockade/ctr")
        );
        assert_eq!(
            mounts.dir("pids", rel),
            PathBuf::from("/mnt/my pids/stockade/ctr")
        );
        // Not in mountinfo: the conventional place.
        assert_eq!(
            mounts.dir("blkio", rel),
            PathBuf::from("/sys/fs/cgroup/blkio/stockade/ctr")
        );
    }

    #[test]
    fn blkio_and_io_stat_parse_per_device() {
        let bytes = parse_v1_blkio(
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\nTotal 12288\n",
        );
        let ops = parse_v1_blkio("8:0 Read 1\n8:0 Write 2\nTotal 3\n");
        assert_eq!(bytes.len(), 4);
        assert_eq!(
            merge_v1_blkio(&bytes, &ops),
            vec![IoSample {
                major: 8,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 8192,
                reads: 1,
                writes: 2
            }]
        );
        let io = parse_v2_io_stat(
            "253:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n8:16 rbytes=10 wbytes=20 rios=30 wios=40\n",
        );
        assert_eq!(io.len(), 2);
        assert_eq!(
            (io[0].major, io[0].minor, io[0].read_bytes, io[0].writes),
            (253, 0, 1, 4)
        );
        assert_eq!(
            (io[1].major, io[1].minor, io[1].write_bytes, io[1].reads),
            (8, 16, 20, 30)
        );
    }

    #[test]
    fn detect_mode_looks_for_cgroup_controllers_at_the_root() {
        let dir = TempDir::new("detect");
        assert_eq!(detect_mode_at(&dir.0), CgroupMode::V1);
        dir.write("cgroup.controllers", "cpu memory pids\n");
        assert_eq!(detect_mode_at(&dir.0), CgroupMode::V2);
    }

    fn fake_v1(dir: &TempDir) -> V1Mounts {
        let c = "stockade/ctr";
        dir.write(&format!("cpuacct/{c}/cpuacct.usage"), "123456789\n");
        dir.write(
            &format!("cpuacct/{c}/cpuacct.usage_percpu"),
            "100000000 23456789 \n",
        );
        dir.write(&format!("cpuacct/{c}/cpuacct.usage_user"), "100000000\n");
        dir.write(&format!("cpuacct/{c}/cpuacct.usage_sys"), "23456789\n");
        dir.write(
            &format!("cpu/{c}/cpu.stat"),
            "nr_periods 10\nnr_throttled 4\nthrottled_time 5000000\nnr_bursts 0\nburst_time 0\n",
        );
        dir.write(&format!("memory/{c}/memory.usage_in_bytes"), "8388608\n");
        dir.write(&format!("memory/{c}/memory.limit_in_bytes"), "16777216\n");
        dir.write(
            &format!("memory/{c}/memory.max_usage_in_bytes"),
            "16777216\n",
        );
        dir.write(&format!("memory/{c}/memory.failcnt"), "7\n");
        dir.write(&format!("memory/{c}/memory.kmem.usage_in_bytes"), "65536\n");
        dir.write(
            &format!("memory/{c}/memory.kmem.limit_in_bytes"),
            "9223372036854771712\n",
        );
        dir.write(&format!("memory/{c}/memory.stat"), V1_MEMORY_STAT);
        dir.write(
            &format!("memory/{c}/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        dir.write(&format!("pids/{c}/pids.current"), "3\n");
        dir.write(&format!("pids/{c}/pids.max"), "64\n");
        dir.write(
            &format!("blkio/{c}/blkio.throttle.io_service_bytes_recursive"),
            "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n",
        );
        dir.write(
            &format!("blkio/{c}/blkio.throttle.io_serviced_recursive"),
            "8:0 Read 1\n8:0 Write 0\nTotal 1\n",
        );
        let root = dir.0.display();
        V1Mounts::from_mountinfo(&format!(
            "1 0 0:1 / {root}/cpu rw - cgroup cgroup rw,cpu\n\
             2 0 0:2 / {root}/cpuacct rw - cgroup cgroup rw,cpuacct\n\
             3 0 0:3 / {root}/memory rw - cgroup cgroup rw,memory\n\
             4 0 0:4 / {root}/pids rw - cgroup cgroup rw,pids\n\
             5 0 0:5 / {root}/blkio rw - cgroup cgroup rw,blkio\n"
        ))
    }

    #[test]
    fn v1_files_become_a_sample_and_v1_metrics() {
        let dir = TempDir::new("v1");
        let mounts = fake_v1(&dir);
        let sample = read_v1(&mounts, Path::new("stockade/ctr")).unwrap();
        assert_eq!(sample.mode, CgroupMode::V1);
        assert_eq!(
            sample.cpu,
            CpuSample {
                usage_ns: 123_456_789,
                user_ns: 100_000_000,
                system_ns: 23_456_789,
                per_cpu_ns: vec![100_000_000, 23_456_789],
                periods: 10,
                throttled_periods: 4,
                throttled_ns: 5_000_000,
            }
        );
        assert_eq!(sample.cpu.throttled_usec(), 5000);
        assert_eq!(
            sample.memory.memory,
            MemoryCounter {
                usage: 8 << 20,
                limit: Some(16 << 20),
                max_usage: Some(16 << 20),
                failcnt: 7
            }
        );
        assert_eq!(
            sample.memory.swap, None,
            "no memsw files: no swap accounting"
        );
        assert_eq!(sample.memory.kernel.as_ref().unwrap().limit, None);
        assert_eq!(sample.memory.oom_kills, 2);
        assert_eq!(
            sample.pids,
            PidsSample {
                current: 3,
                limit: Some(64)
            }
        );
        assert_eq!(sample.io.len(), 1);

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
    fn v1_cpuacct_stat_ticks_are_used_without_usage_user() {
        let dir = TempDir::new("v1ticks");
        let mounts = fake_v1(&dir);
        let acct = dir.0.join("cpuacct/stockade/ctr");
        fs::remove_file(acct.join("cpuacct.usage_user")).unwrap();
        fs::remove_file(acct.join("cpuacct.usage_sys")).unwrap();
        fs::write(acct.join("cpuacct.stat"), "user 3\nsystem 1\n").unwrap();
        let sample = read_v1(&mounts, Path::new("stockade/ctr")).unwrap();
        let ns_per_tick = 1_000_000_000 / clock_ticks_per_sec();
        assert_eq!(sample.cpu.user_ns, 3 * ns_per_tick);
        assert_eq!(sample.cpu.system_ns, ns_per_tick);
    }

    #[test]
    fn v1_missing_cgroup_is_an_error_naming_it() {
        let dir = TempDir::new("v1missing");
        let mounts = fake_v1(&dir);
        let err = read_v1(&mounts, Path::new("stockade/gone")).unwrap_err();
        assert!(err.to_string().contains("stockade/gone"), "{err}");
    }

    fn fake_v2(dir: &TempDir) -> PathBuf {
        dir.write(
            "ctr/cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\ncore_sched.force_idle_usec 0\n\
             nr_periods 20\nnr_throttled 3\nthrottled_usec 700\nnr_bursts 0\nburst_usec 0\n",
        );
        dir.write("ctr/memory.current", "8388608\n");
        dir.write("ctr/memory.max", "16777216\n");
        dir.write("ctr/memory.peak", "12582912\n");
        dir.write("ctr/memory.swap.current", "0\n");
        dir.write("ctr/memory.swap.max", "max\n");
        dir.write(
            "ctr/memory.events",
            "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n",
        );
        dir.write("ctr/memory.stat", V2_MEMORY_STAT);
        dir.write("ctr/pids.current", "2\n");
        dir.write("ctr/pids.max", "max\n");
        dir.write(
            "ctr/io.stat",
            "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
        );
        dir.0.join("ctr")
    }

    #[test]
    fn v2_files_become_a_sample_and_v2_metrics() {
        let dir = TempDir::new("v2");
        let cg = fake_v2(&dir);
        let sample = read_v2(&cg).unwrap();
        assert_eq!(sample.mode, CgroupMode::V2);
        assert_eq!(sample.cpu.usage_ns, 2_500_000);
        assert_eq!(sample.cpu.user_ns, 2_000_000);
        assert_eq!(sample.cpu.system_ns, 500_000);
        assert_eq!(sample.cpu.periods, 20);
        assert_eq!(sample.cpu.throttled_periods, 3);
        assert_eq!(sample.cpu.throttled_usec(), 700);
        assert_eq!(sample.memory.memory.limit, Some(16 << 20));
        assert_eq!(sample.memory.memory.max_usage, Some(12 << 20));
        assert_eq!(sample.memory.memory.failcnt, 9);
        assert_eq!(sample.memory.swap.as_ref().unwrap().limit, None);
        assert_eq!(sample.memory.oom_kills, 1);
        assert_eq!(
            sample.pids,
            PidsSample {
                current: 2,
                limit: None
            }
        );

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

    #[test]
    fn v2_missing_cgroup_is_an_error_naming_it() {
        let dir = TempDir::new("v2missing");
        let err = read_v2(&dir.0.join("gone")).unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
