//! Cost of the per-node ID-range allocator (stockade_runtime::idrange::IdAllocator): one
//! allocate and one release, on an empty table and with 1,000 ranges in use, in a temp
//! state directory (the node's own table is never touched).

use crate::model::Section;
use crate::util::{bar, check_stop};
use anyhow::{Context, Result};
use std::time::Instant;
use stockade_runtime::idrange::IdAllocator;
use stockade_runtime::profile::IdPoolSettings;

const IDS_PER_POD: u32 = 65_536;

pub fn metric(op: &str, in_use: usize) -> String {
    format!("{op}_{in_use}_in_use")
}

pub fn run(in_use: usize, samples: usize) -> Result<Section> {
    let mut sec = Section::new(
        "idrange",
        &format!("ID-range allocation with {in_use} ranges in use"),
        &format!(
            "stockade_runtime::idrange::IdAllocator on a state file in a temp dir: each call \
             locks the table, reads it, changes it and writes it back atomically (temp file, \
             fsync, rename, fsync of the directory). {samples} allocate + release pairs of \
             one extra pod on an empty table, then the same with {in_use} pods holding a \
             range ({IDS_PER_POD} IDs each), timed per call."
        ),
    );
    sec.baseline = String::new();
    let dir = tempfile::Builder::new()
        .prefix("stockade-bench-idrange-")
        .tempdir()
        .context("creating the temp state dir")?;
    let slots = u32::try_from(in_use + 16).context("too many ranges")?;
    let pool = IdPoolSettings {
        first_id: 1 << 20,
        size: slots
            .checked_mul(IDS_PER_POD)
            .context("the pool passes the largest host ID")?,
        ids_per_pod: IDS_PER_POD,
    };
    let alloc = IdAllocator::open(dir.path().join("id-ranges.json"), pool)
        .context("opening the allocator")?;
    let pb = bar(2 * samples + in_use, "id ranges");
    let measure = |sec: &mut Section, used: usize| -> Result<()> {
        for i in 0..samples {
            check_stop()?;
            let pod = format!("bench-probe-{i}");
            let t = Instant::now();
            alloc.allocate(&pod).context("allocate")?;
            sec.push("stockade", &metric("allocate", used), "µs", us(t));
            let t = Instant::now();
            alloc.release(&pod).context("release")?;
            sec.push("stockade", &metric("release", used), "µs", us(t));
            pb.inc(1);
        }
        Ok(())
    };
    measure(&mut sec, 0)?;
    for i in 0..in_use {
        check_stop()?;
        alloc
            .allocate(&format!("bench-pod-{i}"))
            .context("filling the table")?;
        pb.inc(1);
    }
    let table = alloc.table().context("reading the table back")?;
    sec.notes.push(format!(
        "{} ranges in the table during the second half; state file {} bytes.",
        table.len(),
        std::fs::metadata(alloc.state_file())
            .map(|m| m.len())
            .unwrap_or(0)
    ));
    measure(&mut sec, in_use)?;
    pb.finish_and_clear();
    Ok(sec)
}

fn us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_both_table_sizes_and_leaves_nothing() {
        let sec = run(20, 3).unwrap();
        for m in ["allocate_0_in_use", "release_20_in_use"] {
            assert_eq!(sec.samples("stockade", m).unwrap().samples.len(), 3, "{m}");
        }
        assert!(sec.notes[0].starts_with("20 ranges"), "{:?}", sec.notes);
    }
}
