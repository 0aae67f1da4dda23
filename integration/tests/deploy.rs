//! deploy/: the containerd snippets load into the containerd under test (1.6 by default,
//! `STOCKADE_CONTAINERD` for 2.x) and register both handlers; a private containerd set up
//! the way deploy/README.md says runs a hardened pod through each; the RuntimeClasses
//! match the handlers and the node label the installer sets.

use stockade_integration::binaries::{Binaries, ConfigVersion};
use stockade_integration::containerd::{Containerd, StartOptions};
use stockade_integration::deploy::{
    config_dump, dumped_config_paths, dumped_runtimes, hardened_pod_round_trip, snippet,
    stockade_tables, with_import,
};
use stockade_integration::paths::{self, workspace_root};

/// How an operator applies a snippet to a config of a given version.
#[derive(Debug, Clone, Copy)]
enum Applied {
    /// Added to config.toml itself (the version-2 snippet, as on containerd 1.6).
    Merged,
    /// A conf.d file named by config.toml's `imports` (containerd 2.x).
    Imported,
}

/// The ways this containerd takes the snippets: 1.6 reads version 2 only, and an import
/// replaces whole plugin sections there; 2.x reads both, imports merged key by key (the
/// drop-in with the main config's version).
fn cases() -> Vec<(ConfigVersion, Applied)> {
    match Binaries::get().unwrap().config_version() {
        ConfigVersion::V2 => vec![(ConfigVersion::V2, Applied::Merged)],
        ConfigVersion::V3 => vec![
            (ConfigVersion::V3, Applied::Imported),
            (ConfigVersion::V2, Applied::Imported),
            (ConfigVersion::V2, Applied::Merged),
        ],
    }
}

fn version_line(v: ConfigVersion) -> &'static str {
    match v {
        ConfigVersion::V2 => "version = 2\n",
        ConfigVersion::V3 => "version = 3\n",
    }
}

/// Apply the snippet of `version` to `config` (a config file of that version) the
/// `applied` way, its profiles pointed at `profiles`: the version-3 drop-in as it is; of
/// the version-2 snippet its runc table too when the config has none (containerd 1.6
/// replaces its built-in runtimes with a config's), else only Stockade's tables.
fn apply(
    config: &std::path::Path,
    version: ConfigVersion,
    applied: Applied,
    profiles: &std::path::Path,
) {
    let text = std::fs::read_to_string(config).unwrap();
    let whole = snippet(version, profiles).unwrap();
    let tables = if text.contains(".runtimes.runc]") {
        stockade_tables(&whole)
    } else {
        whole.clone()
    };
    match applied {
        Applied::Merged => std::fs::write(config, format!("{text}\n{tables}")).unwrap(),
        Applied::Imported => {
            let dropin = config.with_file_name("conf.d").join("stockade.toml");
            std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
            let body = match version {
                ConfigVersion::V3 => whole,
                ConfigVersion::V2 => {
                    format!("{}\n{}", version_line(version), stockade_tables(&whole))
                }
            };
            std::fs::write(&dropin, body).unwrap();
            std::fs::write(config, with_import(&text, &dropin).unwrap()).unwrap();
        }
    }
}

#[test]
fn snippets_register_both_handlers_with_their_profiles() {
    for (version, applied) in cases() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        // An empty config of that version: every other setting stays containerd's default.
        std::fs::write(&config, version_line(version)).unwrap();
        apply(
            &config,
            version,
            applied,
            std::path::Path::new("/etc/stockade"),
        );
        let dump = config_dump(&config).unwrap();
        assert_eq!(
            dumped_config_paths(&dump).unwrap(),
            paths::HANDLER_PROFILES
                .map(|(h, p)| (h.to_string(), Some(format!("/etc/stockade/{p}"))))
                .to_vec(),
            "{version:?} {applied:?}"
        );
        // runc stays the default runtime.
        assert!(
            dumped_runtimes(&dump).unwrap().contains_key("runc"),
            "{version:?} {applied:?}: runc dropped"
        );
    }
}

/// A private containerd without Stockade in its config, given the snippet the way
/// deploy/README.md says and restarted, runs a hardened pod under each handler.
#[test]
fn a_pod_runs_through_each_snippet() {
    for (version, applied) in cases() {
        let mut c = Containerd::start_with(StartOptions {
            stockade_runtimes: false,
            config_version: Some(version),
            ..StartOptions::default()
        })
        .unwrap();
        apply(&c.config_path, version, applied, &paths::profiles_dir());
        c.restart().unwrap();
        for (handler, profile) in paths::HANDLER_PROFILES {
            hardened_pod_round_trip(&c, handler, &paths::profile(profile).unwrap())
                .unwrap_or_else(|e| panic!("{version:?} {applied:?}, {handler}: {e:#}"));
        }
        let left = c.leftovers();
        assert!(
            left.is_empty(),
            "{version:?} {applied:?}: left behind: {left:#?}"
        );
    }
}

#[test]
fn runtimeclasses_match_the_handlers_and_the_node_label() {
    let yaml = std::fs::read_to_string(workspace_root().join("deploy/runtimeclass.yaml")).unwrap();
    let handlers: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("handler:"))
        .map(str::trim)
        .collect();
    assert_eq!(handlers, paths::HANDLER_PROFILES.map(|(h, _)| h));
    assert_eq!(yaml.matches("kind: RuntimeClass").count(), 3);
    assert_eq!(yaml.matches("apiVersion: node.k8s.io/v1").count(), 3);
    // Each class selects the nodes the installer labelled, and counts the shim's memory.
    assert_eq!(yaml.matches("stockade.dev/runtime: \"true\"").count(), 3);
    assert_eq!(yaml.matches("memory: 3Mi").count(), 3);
    let daemonset =
        std::fs::read_to_string(workspace_root().join("deploy/stockade-deploy.yaml")).unwrap();
    assert!(daemonset.contains("kubectl label node \"$NODE_NAME\" stockade.dev/runtime=true"));
    assert!(
        daemonset.contains("stockade.dev/runtime-"),
        "preStop removes the label"
    );
    for script in ["install.sh", "uninstall.sh"] {
        assert!(
            daemonset.contains(&format!("/opt/stockade/deploy/{script}")),
            "the DaemonSet runs {script}"
        );
    }
}
