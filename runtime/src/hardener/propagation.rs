//! `linux.rootfsPropagation` in the words libcontainer takes.
//!
//! containerd's CRI writes runc's recursive words (`rslave` for a HostToContainer volume,
//! `rshared` for a Bidirectional one); libcontainer 0.7 takes only the OCI words, which it
//! applies recursively anyway, and refuses the rest (`UnknownRootfsPropagation`), so the
//! container could not start.

use crate::oci_spec::runtime::Spec;

use super::Report;

pub(crate) fn for_libcontainer(spec: &mut Spec, report: &mut Report) {
    let Some(mut linux) = spec.linux().clone() else {
        return;
    };
    let given = linux.rootfs_propagation().clone();
    let oci = match given.as_deref() {
        Some("rshared") => "shared",
        Some("rslave") => "slave",
        Some("rprivate") => "private",
        Some("runbindable") => "unbindable",
        _ => return,
    };
    linux.set_rootfs_propagation(Some(oci.to_string()));
    spec.set_linux(Some(linux));
    report.note(format!(
        "rootfsPropagation {:?} given to libcontainer as {oci:?} (the same, recursive)",
        given.unwrap_or_default()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci_spec::runtime::{LinuxBuilder, SpecBuilder};

    fn with(propagation: Option<&str>) -> Spec {
        let mut linux = LinuxBuilder::default();
        if let Some(p) = propagation {
            linux = linux.rootfs_propagation(p.to_string());
        }
        SpecBuilder::default()
            .linux(linux.build().unwrap())
            .build()
            .unwrap()
    }

    fn after(propagation: Option<&str>) -> Option<String> {
        let mut spec = with(propagation);
        for_libcontainer(&mut spec, &mut Report::default());
        spec.linux().as_ref().unwrap().rootfs_propagation().clone()
    }

    #[test]
    fn runc_words_become_oci_words_and_the_rest_stays() {
        assert_eq!(after(Some("rslave")).as_deref(), Some("slave"));
        assert_eq!(after(Some("rshared")).as_deref(), Some("shared"));
        assert_eq!(after(Some("rprivate")).as_deref(), Some("private"));
        assert_eq!(after(Some("runbindable")).as_deref(), Some("unbindable"));
        assert_eq!(after(Some("slave")).as_deref(), Some("slave"));
        assert_eq!(after(Some("bogus")).as_deref(), Some("bogus"));
        assert_eq!(after(None), None);
    }
}
