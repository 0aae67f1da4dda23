//! Fake cgroup trees for the readers' and the Metrics packers' tests.

use std::fs;
use std::path::Path;

use crate::host::{Hierarchy, Host};

pub(crate) const CTR: &str = "/stockade/ctr";

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

pub(crate) fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A v1 host at `root` whose container [`CTR`] has every counter the reader knows.
pub(crate) fn v1_host(root: &Path) -> Host {
    let c = CTR.trim_start_matches('/');
    let w = |rel: String, content: &str| write(root, &rel, content);
    w(format!("cpuacct/{c}/cpuacct.usage"), "123456789\n");
    w(
        format!("cpuacct/{c}/cpuacct.usage_percpu"),
        "100000000 23456789 \n",
    );
    w(format!("cpuacct/{c}/cpuacct.usage_user"), "100000000\n");
    w(format!("cpuacct/{c}/cpuacct.usage_sys"), "23456789\n");
    w(
        format!("cpu/{c}/cpu.stat"),
        "nr_periods 10\nnr_throttled 4\nthrottled_time 5000000\nnr_bursts 0\nburst_time 0\n",
    );
    w(format!("memory/{c}/memory.usage_in_bytes"), "8388608\n");
    w(format!("memory/{c}/memory.limit_in_bytes"), "16777216\n");
    w(
        format!("memory/{c}/memory.max_usage_in_bytes"),
        "16777216\n",
    );
    w(format!("memory/{c}/memory.failcnt"), "7\n");
    w(format!("memory/{c}/memory.kmem.usage_in_bytes"), "65536\n");
    w(
        format!("memory/{c}/memory.kmem.limit_in_bytes"),
        "9223372036854771712\n",
    );
    w(format!("memory/{c}/memory.stat"), V1_MEMORY_STAT);
    w(
        format!("memory/{c}/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    w(format!("pids/{c}/pids.current"), "3\n");
    w(format!("pids/{c}/pids.max"), "64\n");
    w(
        format!("blkio/{c}/blkio.throttle.io_service_bytes_recursive"),
        "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n",
    );
    w(
        format!("blkio/{c}/blkio.throttle.io_serviced_recursive"),
        "8:0 Read 1\n8:0 Write 0\nTotal 1\n",
    );
    Host::at(root, Hierarchy::Hybrid, false)
}

/// A v2 host at `root` whose container [`CTR`] has every counter the reader knows.
pub(crate) fn v2_host(root: &Path) -> Host {
    let c = CTR.trim_start_matches('/');
    let w = |file: &str, content: &str| write(root, &format!("{c}/{file}"), content);
    w(
        "cpu.stat",
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\ncore_sched.force_idle_usec 0\n\
         nr_periods 20\nnr_throttled 3\nthrottled_usec 700\nnr_bursts 0\nburst_usec 0\n",
    );
    w("memory.current", "8388608\n");
    w("memory.max", "16777216\n");
    w("memory.peak", "12582912\n");
    w("memory.swap.current", "0\n");
    w("memory.swap.max", "max\n");
    w(
        "memory.events",
        "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n",
    );
    w("memory.stat", V2_MEMORY_STAT);
    w("pids.current", "2\n");
    w("pids.max", "max\n");
    w(
        "io.stat",
        "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
    );
    Host::at(root, Hierarchy::Unified, false)
}
