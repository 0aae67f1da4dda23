//! The allocations of a node and the rules for adding, releasing and reclaiming them.
//! Pure: no I/O.
//!
//! Reuse policy ([`REUSE_POLICY`]): a range given back is the last one handed out again.
//! Files a pod leaves in a shared host directory stay owned by its host IDs; a pod that
//! got the same IDs at once could read and append to them. So a new pod gets the lowest
//! range never used since the state file began, and once none is left, the free range
//! released longest ago. Released ranges wait in a quarantine list, oldest first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{IdPool, IdRange, IdRangeError, Owner};

/// What `stockade profile check` and the docs say about reuse.
pub const REUSE_POLICY: &str = "rotation with quarantine: never-used ranges first (lowest \
     first), then the free range released longest ago; a released range is reused last";

/// One pod's range and who holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub range: IdRange,
    /// None: kept until released explicitly.
    pub owner: Option<Owner>,
}

impl Allocation {
    /// Default liveness: the owner still runs, or some process still uses the range.
    /// Allocations without an owner are always live.
    pub fn is_live(&self) -> bool {
        match self.owner {
            None => true,
            Some(owner) => owner.is_alive() || super::range_in_use(&self.range),
        }
    }
}

/// The allocations of a node, keyed by pod id, and the quarantine of released ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTable {
    allocations: BTreeMap<String, Allocation>,
    /// Ranges given back and not handed out since, oldest release first. Disjoint from
    /// each other and from every allocation. Absent in version-1 state files.
    #[serde(default)]
    released: Vec<IdRange>,
}

/// Disjoint ranges sorted by start (hence by end too), swept once against slots taken in
/// ascending order.
struct Sweep<T> {
    items: Vec<(IdRange, T)>,
    next: usize,
}

impl<T: Copy> Sweep<T> {
    fn new(mut items: Vec<(IdRange, T)>) -> Self {
        items.sort_by_key(|(r, _)| r.first);
        Sweep { items, next: 0 }
    }

    /// The values of the items overlapping `slot`; slots must come in ascending order.
    fn overlapping(&mut self, slot: &IdRange) -> impl Iterator<Item = T> + '_ {
        while self.next < self.items.len() && self.items[self.next].0.end() <= u64::from(slot.first)
        {
            self.next += 1;
        }
        let end = slot.end();
        self.items[self.next..]
            .iter()
            .take_while(move |(r, _)| u64::from(r.first) < end)
            .map(|(_, v)| *v)
    }
}

impl IdTable {
    pub fn get(&self, pod_id: &str) -> Option<&Allocation> {
        self.allocations.get(pod_id)
    }

    pub fn len(&self) -> usize {
        self.allocations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.allocations.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Allocation)> {
        self.allocations.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Released ranges waiting to be reused, oldest release first.
    pub fn quarantined(&self) -> &[IdRange] {
        &self.released
    }

    /// How many released ranges wait in quarantine (the exporter's gauge).
    pub fn quarantined_count(&self) -> usize {
        self.released.len()
    }

    /// The pod's range: its existing one (the owner is updated to `owner`, so a restarted
    /// shim takes over its pod's range), or a new one by [`REUSE_POLICY`] among the slots
    /// of `pool` that overlap no recorded allocation.
    pub fn allocate(
        &mut self,
        pool: &IdPool,
        pod_id: &str,
        owner: Option<Owner>,
    ) -> Result<IdRange, IdRangeError> {
        if pod_id.is_empty() {
            return Err(IdRangeError::EmptyPodId);
        }
        if let Some(existing) = self.allocations.get_mut(pod_id) {
            if owner.is_some() {
                existing.owner = owner;
            }
            return Ok(existing.range);
        }
        let range = self.next_free(pool).ok_or(IdRangeError::PoolFull {
            pool: *pool,
            slots: pool.slots(),
            ids_per_pod: pool.ids_per_pod(),
        })?;
        // In use again: out of quarantine (also any part of a differently cut range).
        self.released.retain(|r| !r.overlaps(&range));
        self.allocations
            .insert(pod_id.to_string(), Allocation { range, owner });
        Ok(range)
    }

    /// The slot [`IdTable::allocate`] would hand out next: the lowest slot of `pool` that
    /// overlaps no allocation (of any pool) and no released range; failing that, the free
    /// slot whose latest overlapping release is the oldest.
    pub fn next_free(&self, pool: &IdPool) -> Option<IdRange> {
        let mut taken = Sweep::new(self.allocations.values().map(|a| (a.range, ())).collect());
        let mut released = Sweep::new(
            self.released
                .iter()
                .enumerate()
                .map(|(age, r)| (*r, age))
                .collect(),
        );
        let mut oldest: Option<(usize, IdRange)> = None;
        for index in 0..pool.slots() {
            let slot = pool.slot(index);
            if taken.overlapping(&slot).next().is_some() {
                continue;
            }
            match released.overlapping(&slot).max() {
                None => return Some(slot),
                Some(age) if oldest.is_none_or(|(a, _)| age < a) => oldest = Some((age, slot)),
                Some(_) => {}
            }
        }
        oldest.map(|(_, slot)| slot)
    }

    /// Free the pod's range; it joins the end of the quarantine.
    pub fn release(&mut self, pod_id: &str) -> Option<Allocation> {
        let allocation = self.allocations.remove(pod_id)?;
        self.released.push(allocation.range);
        Some(allocation)
    }

    /// Drop every allocation `is_live` says is dead (into quarantine); returns what was
    /// dropped.
    pub fn reclaim(
        &mut self,
        mut is_live: impl FnMut(&str, &Allocation) -> bool,
    ) -> Vec<(String, IdRange)> {
        let dead: Vec<String> = self
            .allocations
            .iter()
            .filter(|(pod, a)| !is_live(pod, a))
            .map(|(pod, _)| pod.clone())
            .collect();
        dead.into_iter()
            .filter_map(|pod| self.release(&pod).map(|a| (pod, a.range)))
            .collect()
    }

    /// Checks a table read from disk: valid ranges; allocations and released ranges
    /// pairwise disjoint.
    pub fn validate(&self) -> Result<(), String> {
        let mut ranges: Vec<(String, IdRange)> = self
            .iter()
            .map(|(pod, a)| (format!("pod {pod}"), a.range))
            .collect();
        for (pod, a) in self.iter() {
            if pod.is_empty() {
                return Err("an allocation has an empty pod id".into());
            }
            if !a.range.is_valid() {
                return Err(format!("pod {pod}: invalid range {}", a.range));
            }
        }
        for (i, r) in self.released.iter().enumerate() {
            if !r.is_valid() {
                return Err(format!("released[{i}]: invalid range {r}"));
            }
            ranges.push((format!("released[{i}]"), *r));
        }
        ranges.sort_by_key(|(_, r)| r.first);
        for pair in ranges.windows(2) {
            if pair[0].1.overlaps(&pair[1].1) {
                return Err(format!(
                    "{} and {} have overlapping ranges {} and {}",
                    pair[0].0, pair[1].0, pair[0].1, pair[1].1
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
