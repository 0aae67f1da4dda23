use super::*;
use crate::profile::IdPoolSettings;
use proptest::prelude::*;

fn pool(first_id: u32, slots: u32, ids_per_pod: u32) -> IdPool {
    IdPool::new(IdPoolSettings {
        first_id,
        size: slots * ids_per_pod,
        ids_per_pod,
    })
    .unwrap()
}

fn range(first: u32, size: u32) -> IdRange {
    IdRange { first, size }
}

#[test]
fn lowest_fresh_slot_first_and_idempotent() {
    let p = pool(100_000, 3, 10);
    let mut t = IdTable::default();
    let a = t.allocate(&p, "a", None).unwrap();
    let b = t.allocate(&p, "b", None).unwrap();
    assert_eq!(a, range(100_000, 10));
    assert_eq!(b, range(100_010, 10));
    assert_eq!(t.allocate(&p, "a", None).unwrap(), a);
}

/// The attack this policy closes: pod a leaves files in a shared host directory and is
/// deleted; the next pod must not get a's host IDs while any other range is free.
#[test]
fn a_released_range_is_the_last_to_be_reused() {
    let p = pool(100_000, 3, 10);
    let mut t = IdTable::default();
    let a = t.allocate(&p, "a", None).unwrap();
    t.release("a");
    assert_eq!(t.quarantined(), [a]);
    let b = t.allocate(&p, "b", None).unwrap();
    assert_ne!(b, a, "the next pod got the released pod's host IDs at once");
    let c = t.allocate(&p, "c", None).unwrap();
    assert_ne!(c, a);
    t.release("b");
    // Only a (released first) and b (released later) are free: a, the older, goes first.
    assert_eq!(t.allocate(&p, "d", None).unwrap(), a);
    assert_eq!(t.quarantined(), [b]);
    assert_eq!(t.allocate(&p, "e", None).unwrap(), b);
    assert_eq!(t.quarantined_count(), 0);
    assert!(matches!(
        t.allocate(&p, "f", None),
        Err(IdRangeError::PoolFull { .. })
    ));
}

#[test]
fn reclaimed_ranges_are_quarantined_too() {
    let p = pool(100_000, 2, 10);
    let mut t = IdTable::default();
    let a = t.allocate(&p, "a", None).unwrap();
    assert_eq!(t.reclaim(|pod, _| pod != "a"), [("a".to_string(), a)]);
    assert_eq!(t.quarantined(), [a]);
    assert_ne!(t.allocate(&p, "b", None).unwrap(), a);
}

#[test]
fn full_pool_names_the_pool() {
    let p = pool(100_000, 1, 10);
    let mut t = IdTable::default();
    t.allocate(&p, "a", None).unwrap();
    let err = t.allocate(&p, "b", None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("host IDs 100000..100010"), "{msg}");
    assert!(msg.contains("full"), "{msg}");
}

#[test]
fn a_second_pool_avoids_the_first_pools_ranges() {
    // Two profiles with different, overlapping pools share one state file.
    let wide = pool(100_000, 4, 20);
    let narrow = pool(100_000, 8, 10);
    let mut t = IdTable::default();
    let w = t.allocate(&wide, "w", None).unwrap();
    let n = t.allocate(&narrow, "n", None).unwrap();
    assert!(!w.overlaps(&n));
    assert_eq!(n.first, 100_020);
    // A wide range released is quarantined for the narrow pool's slots inside it too.
    t.release("w");
    let m = t.allocate(&narrow, "m", None).unwrap();
    assert!(!m.overlaps(&w), "{m} reuses part of the released {w}");
}

#[test]
fn overlapping_tables_are_invalid() {
    let mut t = IdTable::default();
    for (pod, first) in [("a", 100), ("b", 105)] {
        t.allocations.insert(
            pod.into(),
            Allocation {
                range: range(first, 10),
                owner: None,
            },
        );
    }
    assert!(t.validate().unwrap_err().contains("overlapping"));
    t.allocations.remove("b");
    t.released.push(range(105, 10));
    let e = t.validate().unwrap_err();
    assert!(e.contains("pod a and released[0]"), "{e}");
}

/// The policy spelled out naively: never-used free slots lowest first, then the free
/// slot released longest ago (single pool, slot-aligned releases).
fn reference_choice(p: &IdPool, live: &[IdRange], order: &[IdRange]) -> Option<IdRange> {
    let free = |s: &IdRange| !live.contains(s);
    (0..p.slots())
        .map(|i| p.slot(i))
        .find(|s| free(s) && !order.contains(s))
        .or_else(|| order.iter().copied().find(free))
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(u8),
    Release(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..24).prop_map(Op::Allocate),
        (0u8..24).prop_map(Op::Release),
    ]
}

proptest! {
    #[test]
    fn ranges_disjoint_inside_pool_and_reused_last(
        first_id in 65_536u32..1_000_000,
        slots in 1u32..16,
        ids_per_pod in 1u32..100_000,
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let p = pool(first_id, slots, ids_per_pod);
        let mut t = IdTable::default();
        // Every range ever released, least recently released first.
        let mut order: Vec<IdRange> = Vec::new();
        for op in &ops {
            match op {
                Op::Allocate(pod) => {
                    let pod = format!("pod-{pod}");
                    let before = t.get(&pod).map(|a| a.range);
                    let live: Vec<IdRange> = t.iter().map(|(_, a)| a.range).collect();
                    let expected = before.or_else(|| reference_choice(&p, &live, &order));
                    match t.allocate(&p, &pod, None) {
                        Ok(r) => {
                            prop_assert_eq!(Some(r), expected);
                            prop_assert!(p.contains(&r));
                        }
                        Err(IdRangeError::PoolFull { .. }) => {
                            prop_assert_eq!(t.len() as u32, slots);
                            prop_assert_eq!(expected, None);
                        }
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::Release(pod) => {
                    if let Some(a) = t.release(&format!("pod-{pod}")) {
                        order.retain(|r| *r != a.range);
                        order.push(a.range);
                    }
                }
            }
            prop_assert!(t.validate().is_ok());
            prop_assert!(t.len() as u32 <= slots);
            prop_assert!(t.len() + t.quarantined_count() <= slots as usize);
        }
        let pods: Vec<String> = t.iter().map(|(k, _)| k.to_string()).collect();
        for pod in pods { t.release(&pod); }
        prop_assert!(t.is_empty());
    }
}
