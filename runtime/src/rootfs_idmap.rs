//! containerd 2.x's overlay snapshotter adds `uidmap=C:H:S` and `gidmap=C:H:S` to the rootfs
//! mount of a `hostUsers: false` pod: the layers are to be idmapped with kubelet's mapping
//! (and the upper dir was chowned to the mapped root). Stockade idmaps every layer with the
//! pod's mapping anyway, so these options are accepted when they name exactly that mapping,
//! and taken out before the rest of the options are parsed.

use crate::idrange::IdRange;
use crate::rootfs::{RootfsError, RootfsMount};

/// `mounts` without their uidmap/gidmap options, each checked against `range`.
pub fn take_idmap_options(
    mounts: &[RootfsMount],
    range: IdRange,
) -> Result<Vec<RootfsMount>, RootfsError> {
    let expected = format!("0:{}:{}", range.first, range.size);
    mounts
        .iter()
        .map(|m| {
            let mut m = m.clone();
            let mut kept = Vec::with_capacity(m.options.len());
            for option in m.options.drain(..) {
                let value = option
                    .strip_prefix("uidmap=")
                    .or_else(|| option.strip_prefix("gidmap="));
                match value {
                    None => kept.push(option),
                    Some(v) if v == expected => {}
                    Some(v) => {
                        return Err(RootfsError::Invalid(format!(
                            "{} mount option {option:?}: the snapshot is mapped as {v}, but the \
                             pod's user namespace maps {expected} (container:host:size)",
                            m.kind
                        )))
                    }
                }
            }
            m.options = kept;
            Ok(m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(options: &[&str]) -> Vec<RootfsMount> {
        vec![RootfsMount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }]
    }

    const RANGE: IdRange = IdRange {
        first: 1_310_720,
        size: 65_536,
    };

    #[test]
    fn the_pods_mapping_is_accepted_and_removed() {
        let m = take_idmap_options(
            &overlay(&[
                "uidmap=0:1310720:65536",
                "gidmap=0:1310720:65536",
                "lowerdir=/l",
                "index=off",
            ]),
            RANGE,
        )
        .unwrap();
        assert_eq!(m[0].options, ["lowerdir=/l", "index=off"]);
    }

    #[test]
    fn another_mapping_is_refused_by_name() {
        for bad in [
            "uidmap=0:1376256:65536",
            "gidmap=0:1310720:65536,65536:0:1",
            "uidmap=1:1310720:65536",
        ] {
            let e = take_idmap_options(&overlay(&[bad, "lowerdir=/l"]), RANGE)
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad) && e.contains("0:1310720:65536"), "{e}");
        }
    }
}
