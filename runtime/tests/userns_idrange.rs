//! The per-pod ID-range allocator against real state files, locks and processes.

use std::path::Path;
use std::process::Command;

use stockade_runtime::idrange::{IdAllocator, IdRange, IdRangeError, Owner};
use stockade_runtime::profile::IdPoolSettings;

// Far above the IDs other tests on this machine run containers under, so the
// "is any process using this range" check only sees what these tests do.
const FIRST: u32 = 3_000_000_000;
const PER_POD: u32 = 65_536;

fn settings(slots: u32) -> IdPoolSettings {
    IdPoolSettings {
        first_id: FIRST,
        size: slots * PER_POD,
        ids_per_pod: PER_POD,
    }
}

fn allocator(dir: &Path, slots: u32) -> IdAllocator {
    IdAllocator::open(dir.join("state/idranges.json"), settings(slots)).unwrap()
}

fn in_pool(r: IdRange, slots: u32) -> bool {
    r.first >= FIRST
        && r.end() <= u64::from(FIRST) + u64::from(slots * PER_POD)
        && r.size == PER_POD
}

#[test]
fn two_pods_get_disjoint_ranges_inside_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let a = allocator(dir.path(), 4);
    let ra = a.allocate("pod-a").unwrap();
    let rb = a.allocate("pod-b").unwrap();
    assert!(!ra.overlaps(&rb), "{ra} and {rb} overlap");
    assert!(in_pool(ra, 4) && in_pool(rb, 4), "{ra} {rb}");
    assert_eq!(ra.first, FIRST);
}

#[test]
fn allocate_is_idempotent_per_pod() {
    let dir = tempfile::tempdir().unwrap();
    let a = allocator(dir.path(), 4);
    let first = a.allocate("pod-a").unwrap();
    a.allocate("pod-b").unwrap();
    assert_eq!(a.allocate("pod-a").unwrap(), first);
    assert_eq!(a.table().unwrap().len(), 2);
}

#[test]
fn allocations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (ra, rb) = {
        let a = allocator(dir.path(), 4);
        (a.allocate("pod-a").unwrap(), a.allocate("pod-b").unwrap())
    };
    // A new allocator on the same file: a restarted shim or containerd.
    let b = allocator(dir.path(), 4);
    assert_eq!(b.get("pod-a").unwrap(), Some(ra));
    assert_eq!(b.allocate("pod-b").unwrap(), rb);
    let rc = b.allocate("pod-c").unwrap();
    assert!(!rc.overlaps(&ra) && !rc.overlaps(&rb));
    // The file is the single source of truth: it holds all three.
    let text = std::fs::read_to_string(dir.path().join("state/idranges.json")).unwrap();
    for pod in ["pod-a", "pod-b", "pod-c"] {
        assert!(text.contains(pod), "{text}");
    }
}

#[test]
fn release_frees_and_cycles_rotate_through_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let a = allocator(dir.path(), 8);
    a.allocate("resident-1").unwrap();
    a.allocate("resident-2").unwrap();
    let residents: Vec<_> = a
        .table()
        .unwrap()
        .iter()
        .map(|(p, a)| (p.to_string(), *a))
        .collect();
    let mut order = Vec::new();
    for i in 0..500 {
        let pod = format!("cycle-{}", i % 7);
        let r = a.allocate(&pod).unwrap();
        // The six free slots in turn: never the range released a moment ago.
        if i >= 6 {
            assert_eq!(r, order[i - 6], "cycle {i}");
        }
        order.push(r);
        assert_eq!(a.release(&pod).unwrap(), Some(r));
    }
    let after = a.table().unwrap();
    let left: Vec<_> = after.iter().map(|(p, a)| (p.to_string(), *a)).collect();
    assert_eq!(left, residents);
    // All six free slots wait in quarantine, the one released last at the end.
    assert_eq!(after.quarantined_count(), 6);
    assert_eq!(after.quarantined().last(), order.last());
    assert_eq!(a.release("never-allocated").unwrap(), None);
}

#[test]
fn concurrent_allocators_never_share_a_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                // Each thread opens its own allocator, as separate shims would.
                let a = allocator(&path, 64);
                (0..10)
                    .map(|i| a.allocate(&format!("t{t}-pod{i}")).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<IdRange> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(all.len(), 40);
    all.sort_by_key(|r| r.first);
    for pair in all.windows(2) {
        assert!(!pair[0].overlaps(&pair[1]), "{} {}", pair[0], pair[1]);
    }
    assert_eq!(allocator(&path, 64).table().unwrap().len(), 40);
}

#[test]
fn full_pool_is_a_clear_error_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = allocator(dir.path(), 1);
    a.allocate("pod-a").unwrap();
    let err = a.allocate("pod-b").unwrap_err();
    assert!(matches!(err, IdRangeError::PoolFull { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("host IDs {FIRST}..")) && msg.contains("full"),
        "{msg}"
    );
    assert_eq!(a.get("pod-b").unwrap(), None);
}

#[test]
fn ranges_of_dead_owners_are_reclaimed_when_the_pool_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut owner_process = Command::new("/bin/sleep").arg("600").spawn().unwrap();
    let owner = Owner::of(owner_process.id() as i32).unwrap();
    let theirs = allocator(dir.path(), 2).with_owner(Some(owner));
    let ours = allocator(dir.path(), 2);

    let stale = theirs.allocate("pod-of-dying-shim").unwrap();
    ours.allocate("live-pod").unwrap();
    // Its owner is alive: the pool is full and nothing is reclaimed.
    assert!(matches!(
        ours.allocate("new-pod"),
        Err(IdRangeError::PoolFull { .. })
    ));

    owner_process.kill().unwrap();
    owner_process.wait().unwrap();
    assert!(!owner.is_alive());

    assert_eq!(ours.allocate("new-pod").unwrap(), stale);
    let table = ours.table().unwrap();
    assert!(table.get("pod-of-dying-shim").is_none());
    assert!(table.get("live-pod").is_some());
}

#[test]
fn explicit_reclaim_with_a_liveness_predicate() {
    let dir = tempfile::tempdir().unwrap();
    let a = allocator(dir.path(), 4);
    for pod in ["a", "b", "c"] {
        a.allocate(pod).unwrap();
    }
    let rb = a.get("b").unwrap().unwrap();
    // E.g. "pods containerd still knows".
    let reclaimed = a.reclaim_with(|pod, _| pod != "b").unwrap();
    assert_eq!(reclaimed, vec![("b".to_string(), rb)]);
    assert_eq!(a.get("b").unwrap(), None);
    // The default predicate keeps ranges whose owner (this process) lives.
    assert!(a.reclaim().unwrap().is_empty());
    assert_eq!(a.table().unwrap().len(), 2);
}

#[test]
fn a_corrupt_state_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = allocator(dir.path(), 4);
    a.allocate("a").unwrap();
    let path = dir.path().join("state/idranges.json");
    std::fs::write(&path, "{ not json").unwrap();
    let err = a.allocate("b").unwrap_err();
    assert!(matches!(err, IdRangeError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    // It must not have been "repaired" into an empty table.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{ not json");
}

#[test]
fn empty_pod_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = allocator(dir.path(), 4);
    assert!(matches!(a.allocate(""), Err(IdRangeError::EmptyPodId)));
}

#[test]
fn a_full_device_is_a_clear_error_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = allocator(dir.path(), 4);
    a.allocate("pod-a").unwrap();
    // Writes to the temp file hit /dev/full: ENOSPC, as on a full state directory.
    let tmp = dir.path().join("state/idranges.json.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let err = a.allocate("pod-b").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IdRangeError::Io { .. }), "{err:?}");
    assert!(
        msg.contains("idranges.json") && msg.contains("No space left on device"),
        "{msg}"
    );
    assert!(
        std::fs::symlink_metadata(&tmp).is_err(),
        "the temp file is left behind"
    );
    // The table is as it was: pod-b got nothing, pod-a keeps its range.
    let table = a.table().unwrap();
    assert!(table.get("pod-b").is_none() && table.get("pod-a").is_some());
}
