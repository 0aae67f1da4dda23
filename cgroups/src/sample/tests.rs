use std::fs;

use super::fixtures::{v1_host, v2_host, write, CTR};
use super::v1::{clock_ticks_per_sec, merge_blkio, parse_blkio};
use super::v2::parse_io_stat;
use super::*;

#[test]
fn v1_files_become_a_sample() {
    let dir = tempfile::tempdir().unwrap();
    let sample = v1_host(dir.path()).sample(CTR).unwrap();
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
}

#[test]
fn v1_cpuacct_stat_ticks_are_used_without_usage_user() {
    let dir = tempfile::tempdir().unwrap();
    let host = v1_host(dir.path());
    let acct = dir.path().join("cpuacct/stockade/ctr");
    fs::remove_file(acct.join("cpuacct.usage_user")).unwrap();
    fs::remove_file(acct.join("cpuacct.usage_sys")).unwrap();
    fs::write(acct.join("cpuacct.stat"), "user 3\nsystem 1\n").unwrap();
    let sample = host.sample(CTR).unwrap();
    let ns_per_tick = 1_000_000_000 / clock_ticks_per_sec();
    assert_eq!(sample.cpu.user_ns, 3 * ns_per_tick);
    assert_eq!(sample.cpu.system_ns, ns_per_tick);
}

#[test]
fn missing_cgroups_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let err = v1_host(dir.path()).sample("/stockade/gone").unwrap_err();
    assert!(err.to_string().contains("stockade/gone"), "{err}");
    let err = v2_host(dir.path()).sample("/stockade/gone").unwrap_err();
    assert!(err.to_string().contains("stockade/gone"), "{err}");
}

#[test]
fn bad_paths_and_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = v2_host(dir.path());
    let err = host.sample("relative/path").unwrap_err();
    assert!(err.to_string().contains("must be absolute"), "{err}");
    let err = host.sample("/stockade/../etc").unwrap_err();
    assert!(err.to_string().contains(".."), "{err}");
    let err = host.oom_kills("/").unwrap_err();
    assert!(err.to_string().contains("root cgroup"), "{err}");
}

#[test]
fn v2_files_become_a_sample() {
    let dir = tempfile::tempdir().unwrap();
    let sample = v2_host(dir.path()).sample(CTR).unwrap();
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
}

/// A systemd scope has only the controllers systemd enabled: no io.stat, no swap.
#[test]
fn v2_reads_a_scope_without_io_and_swap_files() {
    let dir = tempfile::tempdir().unwrap();
    let host = v2_host(dir.path());
    let scope = "system.slice/stockade-c1.scope";
    for file in ["cpu.stat", "memory.current", "memory.max", "pids.current"] {
        let from = dir.path().join("stockade/ctr").join(file);
        write(
            dir.path(),
            &format!("{scope}/{file}"),
            &fs::read_to_string(from).unwrap(),
        );
    }
    let sample = host.sample("system.slice:stockade:c1").unwrap();
    assert_eq!(sample.memory.memory.limit, Some(16 << 20));
    assert_eq!(sample.memory.swap, None);
    assert!(sample.io.is_empty());
    assert_eq!(sample.pids.current, 2);
}

#[test]
fn counters_for_the_monitor_read_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = v1_host(&dir.path().join("v1"));
    let v2 = v2_host(&dir.path().join("v2"));
    assert_eq!(v1.oom_kills(CTR).unwrap(), 2);
    assert_eq!(v1.cpu_throttled_seconds(CTR).unwrap(), 0.005);
    assert_eq!(v2.oom_kills(CTR).unwrap(), 1);
    assert_eq!(v2.cpu_throttled_seconds(CTR).unwrap(), 0.0007);
    let err = v2.oom_kills("/stockade/none").unwrap_err();
    assert!(err.to_string().contains("stockade/none"), "{err}");
    write(dir.path(), "v2/stockade/odd/memory.events", "low 0\n");
    let err = v2.oom_kills("/stockade/odd").unwrap_err();
    assert!(err.to_string().contains("oom_kill"), "{err}");
}

#[test]
fn blkio_and_io_stat_parse_per_device() {
    let bytes =
        parse_blkio("8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\nTotal 12288\n");
    let ops = parse_blkio("8:0 Read 1\n8:0 Write 2\nTotal 3\n");
    assert_eq!(bytes.len(), 4);
    assert_eq!(
        merge_blkio(&bytes, &ops),
        vec![IoSample {
            major: 8,
            minor: 0,
            read_bytes: 4096,
            write_bytes: 8192,
            reads: 1,
            writes: 2
        }]
    );
    let io = parse_io_stat(
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
