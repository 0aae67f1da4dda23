//! Command line and the sample counts of a full and a quick run.

use clap::Parser;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "stockade-bench",
    about = "Stockade against runc on this node: CRI lifecycle, ctr run, shim memory, \
             workload overhead, rootfs setup, seccomp install. Needs root, containerd, runc, \
             ctr, busybox-static and the CNI plugins."
)]
pub struct Args {
    /// A short run (few samples each, well under a minute), as CI runs it.
    #[arg(long)]
    pub quick: bool,
    /// Where result directories go: <root>/<timestamp>/ (full runs also refresh
    /// <root>/latest/; quick runs write <root>/quick-<timestamp>/ only).
    #[arg(long, default_value_os_t = default_results_root())]
    pub results_root: PathBuf,
    /// Write into exactly this directory instead (no timestamp, no latest/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Runtimes to compare: stockade, stockade-strict, runc-seccomp (runc with
    /// RuntimeDefault seccomp), null (the floor: bench/null-shim, containerd's own
    /// share); runc (no seccomp) is always there and is the baseline.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "runc,stockade,runc-seccomp,null"
    )]
    pub runtimes: Vec<String>,
    /// Serial CRI lifecycle cycles per runtime.
    #[arg(long)]
    pub serial: Option<usize>,
    /// Concurrent pods of the parallel CRI lifecycle.
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Parallel batches per runtime.
    #[arg(long)]
    pub batches: Option<usize>,
    /// `ctr run --rm` runs per runtime.
    #[arg(long)]
    pub ctr_runs: Option<usize>,
    /// Pod counts already running at which start latency and shim memory are measured
    /// (the largest is the memory section's).
    #[arg(long, value_delimiter = ',')]
    pub scale_levels: Option<Vec<usize>>,
    /// CRI cycles timed at each scale level, per runtime.
    #[arg(long)]
    pub scale_samples: Option<usize>,
    /// ID ranges in use for the allocator measurement.
    #[arg(long)]
    pub id_ranges: Option<usize>,
    /// CRI cycles recorded per runtime for the flame graphs.
    #[arg(long)]
    pub flame_cycles: Option<usize>,
    /// Pods of the runtime kept running while its flame graphs are recorded (0: an empty
    /// node): to see what grows as the node fills up.
    #[arg(long)]
    pub flame_pods: Option<usize>,
    /// Workload containers per runtime.
    #[arg(long)]
    pub workload_reps: Option<usize>,
    /// Files in the big image of the rootfs measurement.
    #[arg(long)]
    pub big_files: Option<usize>,
    /// Sections to skip (lifecycle, parallel, ctr, flame, scale (and with it memory),
    /// idrange, workload, rootfs, seccomp, record).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Keep the runtimes' state (containerd's bundles, runc's root, the Stockade shims'
    /// state) on this machine's disk, in the instance's temp dir under /tmp, instead of a
    /// tmpfs like a node's /run: to see what a disk-backed state dir costs.
    #[arg(long)]
    pub state_on_disk: bool,
    /// Copy the private containerd's log, which holds every shim's log (Stockade's spans
    /// and libcontainer's steps at debug level, with timestamps), to this file before the
    /// run stops containerd: to see where a phase's time went.
    #[arg(long)]
    pub keep_containerd_log: Option<PathBuf>,
    /// Re-render report.md and the figures of an existing results directory from its
    /// results.json (no measurement).
    #[arg(long, value_name = "DIR")]
    pub render: Option<PathBuf>,
    /// Internal: the seccomp measurement child (single-threaded): <profile.json> <samples>.
    #[arg(long, hide = true, num_args = 2)]
    pub internal_seccomp: Option<Vec<String>>,
    /// Internal: the record-mode measurement child: <profile.toml> <samples>.
    #[arg(long, hide = true, num_args = 2)]
    pub internal_record: Option<Vec<String>>,
}

fn default_results_root() -> PathBuf {
    stockade_integration::paths::workspace_root()
        .join("bench")
        .join("results")
}

/// How many samples each section takes.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub serial: usize,
    pub parallel: usize,
    pub batches: usize,
    pub ctr_runs: usize,
    pub scale_levels: Vec<usize>,
    pub scale_samples: usize,
    pub id_ranges: usize,
    pub id_samples: usize,
    pub flame_cycles: usize,
    pub flame_pods: usize,
    pub workload_reps: usize,
    /// stockade-load's divisor of its loop counts (1 = full).
    pub workload_scale: u32,
    pub small_files: usize,
    pub big_files: usize,
    pub rootfs_lib_samples: usize,
    pub rootfs_cri_samples: usize,
    pub seccomp_samples: usize,
    pub record_samples: usize,
    pub skip: Vec<String>,
    pub state_on_disk: bool,
}

impl Settings {
    pub fn from_args(a: &Args) -> Settings {
        let base = if a.quick {
            Settings {
                quick: true,
                serial: 4,
                parallel: 10,
                batches: 1,
                ctr_runs: 3,
                scale_levels: vec![0, 3],
                scale_samples: 2,
                id_ranges: 100,
                id_samples: 10,
                flame_cycles: 2,
                flame_pods: 0,
                workload_reps: 1,
                workload_scale: 20,
                small_files: 10,
                big_files: 5_000,
                rootfs_lib_samples: 5,
                rootfs_cri_samples: 2,
                seccomp_samples: 50,
                record_samples: 10,
                skip: Vec::new(),
                state_on_disk: false,
            }
        } else {
            Settings {
                quick: false,
                serial: 200,
                parallel: 10,
                batches: 10,
                ctr_runs: 50,
                scale_levels: vec![0, 100, 250],
                scale_samples: 30,
                id_ranges: 1_000,
                id_samples: 200,
                flame_cycles: 20,
                flame_pods: 0,
                workload_reps: 10,
                workload_scale: 1,
                small_files: 10,
                big_files: 50_000,
                rootfs_lib_samples: 30,
                rootfs_cri_samples: 10,
                seccomp_samples: 1_000,
                record_samples: 100,
                skip: Vec::new(),
                state_on_disk: false,
            }
        };
        Settings {
            serial: a.serial.unwrap_or(base.serial),
            parallel: a.parallel.unwrap_or(base.parallel).max(1),
            batches: a.batches.unwrap_or(base.batches),
            ctr_runs: a.ctr_runs.unwrap_or(base.ctr_runs),
            scale_levels: a.scale_levels.clone().unwrap_or(base.scale_levels.clone()),
            scale_samples: a.scale_samples.unwrap_or(base.scale_samples),
            id_ranges: a.id_ranges.unwrap_or(base.id_ranges),
            flame_cycles: a.flame_cycles.unwrap_or(base.flame_cycles).max(1),
            flame_pods: a.flame_pods.unwrap_or(base.flame_pods),
            workload_reps: a.workload_reps.unwrap_or(base.workload_reps),
            big_files: a.big_files.unwrap_or(base.big_files).max(base.small_files),
            skip: a.skip.clone(),
            state_on_disk: a.state_on_disk,
            ..base
        }
    }

    pub fn runs(&self, section: &str) -> bool {
        !self.skip.iter().any(|s| s == section)
    }
}
