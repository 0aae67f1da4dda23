//! containerd's configuration as containerd itself reads it: the main file, then its
//! `imports` (globs, relative to the importing file, recursively, each file once), merged
//! in that order with later files winning; version-1 and version-2 files migrated to the
//! version-3 layout first, as containerd 2.x does. Pure over a file reader, so fixtures
//! test it.

use super::facts::{ContainerdFacts, InsecureRegistry, RuntimeFact};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

const CRI_V2: &str = "io.containerd.grpc.v1.cri";
const CRI_RUNTIME: &str = "io.containerd.cri.v1.runtime";
const CRI_IMAGES: &str = "io.containerd.cri.v1.images";

/// Reads files and expands import globs (the real file system, or a fixture).
pub trait ConfigSource {
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// The files a glob pattern names, sorted.
    fn glob(&self, pattern: &Path) -> Vec<PathBuf>;
}

/// Loads `main` and its imports; None when `main` does not exist.
pub fn load(source: &impl ConfigSource, main: &Path) -> Result<Option<ContainerdFacts>, String> {
    let text = match source.read(main) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", main.display())),
    };
    let first: Table =
        toml::from_str(&text).map_err(|e| format!("{}: {}", main.display(), e.message()))?;
    let mut facts = ContainerdFacts::default();
    let mut merged = Table::new();
    let mut pending = vec![(main.to_path_buf(), first)];
    let mut seen = vec![main.to_path_buf()];
    while !pending.is_empty() {
        let (path, table) = pending.remove(0);
        let version = table
            .get("version")
            .and_then(Value::as_integer)
            .unwrap_or(1);
        for import in imports(source, &path, &table) {
            if seen.contains(&import) {
                continue;
            }
            seen.push(import.clone());
            match source
                .read(&import)
                .map_err(|e| e.to_string())
                .and_then(|t| toml::from_str::<Table>(&t).map_err(|e| e.message().to_string()))
            {
                Ok(t) => pending.push((import, t)),
                Err(e) => facts.problems.push(format!("{}: {e}", import.display())),
            }
        }
        facts.files.push((path, version));
        merge(&mut merged, migrate(table, version));
    }
    extract(&merged, &mut facts);
    Ok(Some(facts))
}

fn imports(source: &impl ConfigSource, file: &Path, table: &Table) -> Vec<PathBuf> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    let patterns = table.get("imports").and_then(Value::as_array);
    patterns
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .flat_map(|p| {
            let pattern = normalize(&dir.join(p));
            if p.contains(['*', '?', '[']) {
                source.glob(&pattern)
            } else {
                vec![pattern]
            }
        })
        .collect()
}

/// `a/b/../c` as `a/c`, so one file imported by two spellings is read once.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Deep merge: tables merged key by key, anything else replaced by `from`'s.
fn merge(into: &mut Table, from: Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(old)), Value::Table(new)) => merge(old, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// The parts of a version-1 or -2 file the checks read, moved to where version 3 has them.
fn migrate(mut table: Table, version: i64) -> Table {
    if version >= 3 {
        return table;
    }
    let Some(Value::Table(plugins)) = table.get_mut("plugins") else {
        return table;
    };
    // Version 1 names plugins by their short id.
    let cri = plugins
        .remove(CRI_V2)
        .or_else(|| (version <= 1).then(|| plugins.remove("cri")).flatten());
    let Some(Value::Table(mut cri)) = cri else {
        return table;
    };
    let mut runtime = Table::new();
    let mut images = Table::new();
    for key in [
        "restrict_oom_score_adj",
        "enable_unprivileged_ports",
        "enable_unprivileged_icmp",
    ] {
        if let Some(v) = cri.remove(key) {
            runtime.insert(key.into(), v);
        }
    }
    if let Some(Value::Table(mut containerd)) = cri.remove("containerd") {
        if let Some(s) = containerd.remove("snapshotter") {
            images.insert("snapshotter".into(), s);
        }
        runtime.insert("containerd".into(), Value::Table(containerd));
    }
    if let Some(registry) = cri.remove("registry") {
        images.insert("registry".into(), registry);
    }
    plugins.insert(CRI_RUNTIME.into(), Value::Table(runtime));
    plugins.insert(CRI_IMAGES.into(), Value::Table(images));
    table
}

fn get<'a>(table: &'a Table, path: &[&str]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for key in parents {
        t = t.get(*key)?.as_table()?;
    }
    t.get(*last)
}

fn flag(table: &Table, path: &[&str]) -> Option<bool> {
    get(table, path).and_then(Value::as_bool)
}

fn extract(config: &Table, facts: &mut ContainerdFacts) {
    let runtime = |key: &str| flag(config, &["plugins", CRI_RUNTIME, key]);
    facts.restrict_oom_score_adj = runtime("restrict_oom_score_adj");
    facts.enable_unprivileged_ports = runtime("enable_unprivileged_ports");
    facts.enable_unprivileged_icmp = runtime("enable_unprivileged_icmp");
    facts.root = get(config, &["root"])
        .and_then(Value::as_str)
        .map_or_else(|| PathBuf::from("/var/lib/containerd"), PathBuf::from);
    facts.snapshotter = get(config, &["plugins", CRI_IMAGES, "snapshotter"])
        .and_then(Value::as_str)
        .unwrap_or("overlayfs")
        .to_string();
    let runtimes = get(config, &["plugins", CRI_RUNTIME, "containerd", "runtimes"]);
    for (name, rt) in runtimes.and_then(Value::as_table).into_iter().flatten() {
        let Some(rt) = rt.as_table() else { continue };
        let options = |key: &str| get(rt, &["options", key]);
        facts.runtimes.push(RuntimeFact {
            name: name.clone(),
            runtime_type: rt
                .get("runtime_type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            privileged_without_host_devices: flag(rt, &["privileged_without_host_devices"])
                .unwrap_or(false),
            config_path: options("ConfigPath")
                .and_then(Value::as_str)
                .map(str::to_string),
            systemd_cgroup: options("SystemdCgroup").and_then(Value::as_bool),
        });
    }
    let registry = get(config, &["plugins", CRI_IMAGES, "registry"]).and_then(Value::as_table);
    let Some(registry) = registry else { return };
    facts.registry_config_path = registry
        .get("config_path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let tables = |key: &str| {
        registry
            .get(key)
            .and_then(Value::as_table)
            .into_iter()
            .flatten()
    };
    for (host, conf) in tables("configs") {
        if flag(
            conf.as_table().unwrap_or(&Table::new()),
            &["tls", "insecure_skip_verify"],
        ) == Some(true)
        {
            facts.insecure_registries.push(InsecureRegistry {
                host: host.clone(),
                how: "skip-verify",
                source: format!("registry.configs.\"{host}\".tls.insecure_skip_verify"),
            });
        }
    }
    for (host, mirror) in tables("mirrors") {
        let endpoints = mirror.get("endpoint").and_then(Value::as_array);
        for endpoint in endpoints.into_iter().flatten().filter_map(Value::as_str) {
            if endpoint.starts_with("http://") {
                facts.insecure_registries.push(InsecureRegistry {
                    host: host.clone(),
                    how: "plain-http",
                    source: format!("registry.mirrors.\"{host}\".endpoint {endpoint}"),
                });
            }
        }
    }
}

/// Insecure hosts in a hosts.toml (registry `config_path`: one directory per registry).
pub fn hosts_toml(registry: &str, path: &Path, text: &str) -> Vec<InsecureRegistry> {
    let Ok(doc) = toml::from_str::<Table>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut judge = |url: &str, table: &Table, key: &str| {
        let source = format!("{} {key}", path.display());
        if url.starts_with("http://") {
            out.push(InsecureRegistry {
                host: registry.to_string(),
                how: "plain-http",
                source: source.clone(),
            });
        }
        if table.get("skip_verify").and_then(Value::as_bool) == Some(true) {
            out.push(InsecureRegistry {
                host: registry.to_string(),
                how: "skip-verify",
                source,
            });
        }
    };
    let server = doc.get("server").and_then(Value::as_str).unwrap_or("");
    judge(server, &doc, "server");
    for (url, host) in doc
        .get("host")
        .and_then(Value::as_table)
        .into_iter()
        .flatten()
    {
        if let Some(host) = host.as_table() {
            judge(url, host, &format!("host.\"{url}\""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Files(BTreeMap<PathBuf, &'static str>);

    impl ConfigSource for Files {
        fn read(&self, path: &Path) -> std::io::Result<String> {
            self.0
                .get(path)
                .map(|t| t.to_string())
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        }
        fn glob(&self, pattern: &Path) -> Vec<PathBuf> {
            let (dir, suffix) = pattern.to_str().unwrap().split_once('*').unwrap();
            self.0
                .keys()
                .filter(|p| {
                    let p = p.to_str().unwrap();
                    p.starts_with(dir) && p.ends_with(suffix)
                })
                .cloned()
                .collect()
        }
    }

    fn files(list: &[(&str, &'static str)]) -> Files {
        Files(list.iter().map(|(p, t)| (PathBuf::from(p), *t)).collect())
    }

    const V2: &str = r#"
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.stockade]
  runtime_type = "io.containerd.stockade.v1"
  privileged_without_host_devices = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.stockade.options]
    ConfigPath = "/etc/stockade/default.toml"
[plugins."io.containerd.grpc.v1.cri".registry.configs."reg.local:5000".tls]
  insecure_skip_verify = true
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["http://mirror.local", "https://registry-1.docker.io"]
"#;

    #[test]
    fn version_2_config() {
        let facts = load(
            &files(&[("/etc/containerd/config.toml", V2)]),
            Path::new("/etc/containerd/config.toml"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(facts.restrict_oom_score_adj, Some(true));
        assert_eq!(facts.enable_unprivileged_ports, None);
        let stockade = facts
            .runtimes
            .iter()
            .find(|r| r.name == "stockade")
            .unwrap();
        assert!(stockade.is_stockade() && stockade.privileged_without_host_devices);
        assert_eq!(
            stockade.config_path.as_deref(),
            Some("/etc/stockade/default.toml")
        );
        let runc = facts.runtimes.iter().find(|r| r.name == "runc").unwrap();
        assert_eq!(runc.systemd_cgroup, Some(true));
        assert!(!runc.privileged_without_host_devices);
        let hosts: Vec<(&str, &str)> = facts
            .insecure_registries
            .iter()
            .map(|r| (r.host.as_str(), r.how))
            .collect();
        assert_eq!(
            hosts,
            [
                ("reg.local:5000", "skip-verify"),
                ("docker.io", "plain-http")
            ]
        );
        assert_eq!(facts.major_version(), None);
    }

    #[test]
    fn version_3_with_imports_later_files_win() {
        let main = r#"
version = 3
root = "/data/containerd"
imports = ["conf.d/*.toml", "/etc/containerd/missing.toml"]
[plugins.'io.containerd.cri.v1.runtime']
  enable_unprivileged_ports = true
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = "/etc/containerd/certs.d"
"#;
        // A version-2 drop-in in a version-3 config: migrated, then merged.
        let dropin = r#"
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  enable_unprivileged_ports = false
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.stockade]
  runtime_type = "io.containerd.stockade.v1"
"#;
        let second = r#"
version = 3
imports = ["../config.toml"]
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.stockade-strict]
  runtime_type = "io.containerd.stockade.v1"
  options = { ConfigPath = "/etc/stockade/strict.toml" }
"#;
        let fs = files(&[
            ("/etc/containerd/config.toml", main),
            ("/etc/containerd/conf.d/10-stockade.toml", dropin),
            ("/etc/containerd/conf.d/20-strict.toml", second),
        ]);
        let facts = load(&fs, Path::new("/etc/containerd/config.toml"))
            .unwrap()
            .unwrap();
        let files: Vec<i64> = facts.files.iter().map(|(_, v)| *v).collect();
        assert_eq!(files, [3, 2, 3], "{:?}", facts.files);
        assert_eq!(facts.enable_unprivileged_ports, Some(false));
        assert_eq!(facts.root, PathBuf::from("/data/containerd"));
        assert_eq!(facts.major_version(), Some(2));
        let mut names: Vec<&str> = facts.runtimes.iter().map(|r| r.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["stockade", "stockade-strict"]);
        assert_eq!(
            facts.registry_config_path,
            Some("/etc/containerd/certs.d".into())
        );
        assert_eq!(facts.problems.len(), 1, "{:?}", facts.problems);
        assert!(facts.problems[0].contains("missing.toml"));
    }

    #[test]
    fn missing_and_broken_configs() {
        let fs = files(&[("/c/bad.toml", "version = [")]);
        assert!(load(&fs, Path::new("/c/none.toml")).unwrap().is_none());
        let err = load(&fs, Path::new("/c/bad.toml")).unwrap_err();
        assert!(err.contains("/c/bad.toml"), "{err}");
    }

    #[test]
    fn version_1_short_plugin_names() {
        let v1 = "[plugins.cri]\nrestrict_oom_score_adj = true\n";
        let facts = load(&files(&[("/c.toml", v1)]), Path::new("/c.toml"))
            .unwrap()
            .unwrap();
        assert_eq!(facts.files[0].1, 1);
        assert_eq!(facts.restrict_oom_score_adj, Some(true));
    }

    #[test]
    fn hosts_toml_plain_http_and_skip_verify() {
        let text = r#"
server = "https://registry.example"
[host."http://10.0.0.5:5000"]
  capabilities = ["pull"]
[host."https://mirror.example"]
  skip_verify = true
"#;
        let found = hosts_toml(
            "registry.example",
            Path::new("/certs.d/registry.example/hosts.toml"),
            text,
        );
        let hows: Vec<&str> = found.iter().map(|f| f.how).collect();
        assert_eq!(hows, ["plain-http", "skip-verify"]);
        assert!(found[0].source.contains("10.0.0.5"));
        assert!(hosts_toml("x", Path::new("/h"), "server = \"https://x\"").is_empty());
    }
}
