//! deploy/install.sh and deploy/uninstall.sh against a private containerd of the version
//! under test (1.6 by default, `STOCKADE_CONTAINERD` for 2.x): install, a pod through the
//! installed shim, profiles and drop-in, uninstall, and the node as it was: containerd's
//! config byte for byte, a file the install replaced restored, nothing else left.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use stockade_integration::binaries::{Binaries, ConfigVersion};
use stockade_integration::containerd::{Containerd, StartOptions};
use stockade_integration::deploy::{
    config_dump, dumped_config_paths, hardened_pod_round_trip, stockade_shim_exes,
};
use stockade_integration::paths::{self, workspace_root, SHIM_BINARY};
use stockade_integration::probes::describe;

/// A node's directories in a temp dir: PREFIX, ETC and the profiles install.sh copies.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let node = Node {
            dir: tempfile::tempdir().unwrap(),
        };
        paths::installable_profiles(&node.profiles_src()).unwrap();
        node
    }
    fn prefix(&self) -> PathBuf {
        self.dir.path().join("usr/local")
    }
    fn etc(&self) -> PathBuf {
        self.dir.path().join("etc/stockade")
    }
    fn profiles_src(&self) -> PathBuf {
        self.dir.path().join("profiles-src")
    }

    /// Run deploy/<script> for containerd config `config`, restarting with `restart`.
    fn run(&self, script: &str, config: &Path, restart: &str, bin_src: &Path) -> Output {
        Command::new(workspace_root().join("deploy").join(script))
            .env("PREFIX", self.prefix())
            .env("ETC", self.etc())
            .env("CONTAINERD_CONFIG", config)
            .env("CONTAINERD_CMD", Binaries::get().unwrap().containerd())
            .env("RESTART_CMD", restart)
            .env("BIN_SRC", bin_src)
            .env("PROFILES_SRC", self.profiles_src())
            .output()
            .unwrap()
    }

    /// Every file and directory below PREFIX and ETC.
    fn tree(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().join("usr"), self.dir.path().join("etc")];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                out.push(e.path());
                if e.path().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        out.sort();
        out
    }
}

/// The config versions a node of this containerd may have: 2.x nodes upgraded from 1.x
/// keep their version-2 config.
fn config_versions() -> Vec<ConfigVersion> {
    match Binaries::get().unwrap().config_version() {
        ConfigVersion::V2 => vec![ConfigVersion::V2],
        ConfigVersion::V3 => vec![ConfigVersion::V3, ConfigVersion::V2],
    }
}

/// The script's restart command stops our containerd by its PID; the test then starts it
/// again, as the node's service manager would.
fn run_and_restart(c: &mut Containerd, node: &Node, script: &str, shim_dir: PathBuf) {
    let restart = format!("kill -TERM {}", c.pid().expect("containerd runs"));
    let out = node.run(script, &c.config_path, &restart, &c.shim_dir.clone());
    assert!(out.status.success(), "{script}: {}", describe(&out));
    c.wait_daemon_exit(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{script} did not restart containerd: {e:#}"));
    c.shim_dir = shim_dir;
    c.start_daemon().unwrap();
}

#[test]
fn install_runs_pods_and_uninstall_restores_the_node() {
    for version in config_versions() {
        let mut c = Containerd::start_with(StartOptions {
            stockade_runtimes: false,
            config_version: Some(version),
            ..StartOptions::default()
        })
        .unwrap();
        let node = Node::new();
        let built = c.shim_dir.clone();
        // A `stockade` the node had before: the install replaces it, the uninstall puts it back.
        let old_cli = node.prefix().join("bin/stockade");
        std::fs::create_dir_all(old_cli.parent().unwrap()).unwrap();
        std::fs::write(&old_cli, "#!/bin/sh\necho old\n").unwrap();
        let before_tree = node.tree();
        let config_before = std::fs::read(&c.config_path).unwrap();

        // Install: containerd restarted with the installed shim first on its PATH (as
        // /usr/local/bin is on a node's), the build's no longer there.
        run_and_restart(&mut c, &node, "install.sh", node.prefix().join("bin"));
        assert_ne!(std::fs::read(&c.config_path).unwrap(), config_before);
        for (handler, profile) in paths::HANDLER_PROFILES {
            hardened_pod_round_trip(&c, handler, &node.etc().join(profile))
                .unwrap_or_else(|e| panic!("{version:?}, {handler}: {e:#}"));
        }
        let cri = c.cri().unwrap();
        let (pod, _) = cri
            .run_pod_with_app("installed", "stockade", &["sleep", "600"])
            .unwrap();
        let exes = stockade_shim_exes(&c);
        let installed = node.prefix().join("bin").join(SHIM_BINARY);
        assert!(
            !exes.is_empty() && exes.iter().all(|e| *e == installed),
            "{version:?}: shims {exes:?}, expected {}",
            installed.display()
        );
        cri.stop_pod_sandbox(&pod).unwrap();
        cri.remove_pod_sandbox(&pod).unwrap();

        // Uninstall: the config byte for byte, the old CLI back, nothing else of ours.
        run_and_restart(&mut c, &node, "uninstall.sh", built);
        assert!(
            std::fs::read(&c.config_path).unwrap() == config_before,
            "{version:?}: config differs after uninstall:\n{}",
            std::fs::read_to_string(&c.config_path).unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(&old_cli).unwrap(),
            "#!/bin/sh\necho old\n"
        );
        assert_eq!(node.tree(), before_tree, "{version:?}: files left");
        assert!(
            !c.config_path.with_file_name("conf.d").exists(),
            "drop-in dir left"
        );
        // containerd runs with the restored config, without Stockade's handlers.
        let err = c
            .cri()
            .unwrap()
            .run_pod_with_app("gone", "stockade", &["sleep", "600"])
            .expect_err("a pod under `stockade` after uninstall");
        assert!(format!("{err:#}").contains("stockade"), "{err:#}");
        let left = c.leftovers();
        assert!(left.is_empty(), "{version:?}: left behind: {left:#?}");
    }
}

/// Input the installer cannot use fails before anything changes, naming what is wrong
/// and where, and leaves the node as it was.
#[test]
fn bad_input_names_the_problem_and_changes_nothing() {
    let built = paths::shim_dir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let v = match Binaries::get().unwrap().config_version() {
        ConfigVersion::V2 => "version = 2",
        ConfigVersion::V3 => "version = 3",
    };
    let multiline = format!("{v}\nimports = [\n  \"/etc/containerd/other.toml\",\n]\n");
    let cases: [(&str, String, &Path, Vec<String>); 3] = [
        (
            "no binaries",
            format!("{v}\n"),
            empty.path(),
            vec![format!(
                "{}/containerd-shim-stockade-v1 missing",
                empty.path().display()
            )],
        ),
        (
            "no version",
            "[plugins]\n".into(),
            &built,
            vec!["config.toml has no top-level 'version = 2' or '3' line".into()],
        ),
        (
            "multi-line imports",
            multiline,
            &built,
            vec!["config.toml: 'imports' spans several lines".into()],
        ),
    ];
    for (what, config_text, bin_src, needles) in cases {
        let node = Node::new();
        let config = node.dir.path().join("containerd/config.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, &config_text).unwrap();
        let out = node.run("install.sh", &config, "false", bin_src);
        assert!(
            !out.status.success(),
            "{what}: install succeeded: {}",
            describe(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in needles {
            assert!(
                stderr.contains(&needle),
                "{what}: stderr lacks {needle:?}: {stderr}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            config_text,
            "{what}"
        );
        assert_eq!(node.tree(), Vec::<PathBuf>::new(), "{what}: files left");
        assert!(
            !config.with_file_name("conf.d").exists(),
            "{what}: drop-in dir left"
        );
        // Never restarted: the restart command (`false`) would have failed the script
        // with its own message.
        assert!(
            !stderr.contains("restart command failed"),
            "{what}: {stderr}"
        );
    }
}

/// The config containerd reads after install differs from the one before only in the
/// imports and Stockade's two runtimes (containerd 1.6's drop-in carries the whole CRI
/// section: nothing of it may change).
#[test]
fn install_changes_only_the_stockade_runtimes() {
    let built = paths::shim_dir().unwrap();
    for version in config_versions() {
        let c = Containerd::start_with(StartOptions {
            stockade_runtimes: false,
            config_version: Some(version),
            ..StartOptions::default()
        })
        .unwrap();
        let node = Node::new();
        let mut before = config_dump(&c.config_path).unwrap();
        let out = node.run("install.sh", &c.config_path, "", &built);
        assert!(out.status.success(), "{version:?}: {}", describe(&out));
        let mut after = config_dump(&c.config_path).unwrap();
        let etc = node.etc();
        assert_eq!(
            dumped_config_paths(&after).unwrap(),
            handler_paths(&etc),
            "{version:?}"
        );
        for dump in [&mut before, &mut after] {
            dump.remove("imports");
            if let Some(runtimes) = dump
                .get_mut("plugins")
                .and_then(|p| p.as_table_mut())
                .and_then(|p| {
                    p.iter_mut()
                        .filter_map(|(_, v)| v.get_mut("containerd"))
                        .find_map(|v| v.get_mut("runtimes"))
                })
                .and_then(|r| r.as_table_mut())
            {
                for (name, _) in paths::HANDLER_PROFILES {
                    runtimes.remove(name);
                }
            }
        }
        assert_eq!(
            before, after,
            "{version:?}: install changed more than its runtimes"
        );
        let out = node.run("uninstall.sh", &c.config_path, "", &built);
        assert!(out.status.success(), "{version:?}: {}", describe(&out));
    }
}

/// A config whose `imports` already matches the drop-in (a conf.d glob) is left byte for
/// byte as it is, and containerd still reads the drop-in. (A relative glob would do on 2.x
/// only: 1.6 reads it against its working directory, and install.sh adds its own entry.)
#[test]
fn an_import_the_config_already_has_is_not_added_twice() {
    let built = paths::shim_dir().unwrap();
    let v = match Binaries::get().unwrap().config_version() {
        ConfigVersion::V2 => "version = 2",
        ConfigVersion::V3 => "version = 3",
    };
    let node = Node::new();
    let config = node.dir.path().join("containerd/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let glob = config.with_file_name("conf.d").join("*.toml");
    let text = format!(
        "{v}\nimports = [{:?}]  # the operator's own\n",
        glob.display().to_string()
    );
    std::fs::write(&config, &text).unwrap();
    let out = node.run("install.sh", &config, "", &built);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    let etc = node.etc();
    assert_eq!(
        dumped_config_paths(&config_dump(&config).unwrap()).unwrap(),
        handler_paths(&etc)
    );
    let out = node.run("uninstall.sh", &config, "", &built);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    assert!(
        !config.with_file_name("conf.d").exists(),
        "drop-in dir left"
    );
    assert_eq!(node.tree(), Vec::<PathBuf>::new(), "files left");
}

/// Each handler with the ConfigPath of its installed profile.
fn handler_paths(etc: &Path) -> Vec<(String, Option<String>)> {
    paths::HANDLER_PROFILES
        .map(|(h, p)| (h.to_string(), Some(etc.join(p).display().to_string())))
        .to_vec()
}
