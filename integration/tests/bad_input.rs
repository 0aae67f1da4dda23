//! Bad input through the paths a user hits: a broken profile named by `ctr run
//! --runtime-config-path`, absurd values in a spec sent with `ctr run --config`, a malformed
//! config.json handed to the shim binary the way containerd hands it over, and absurd CRI
//! names. Each one is either refused with an error naming the file and the problem, or
//! replaced by the profile's values (and reported), and leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use containerd_shim_protos::api::{CreateTaskRequest, ShutdownRequest};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::{ttrpc, TaskClient};
use k8s_cri::v1::ContainerState;
use serde_json::{json, Value};
use stockade_integration::containerd::{HANDLER_STOCKADE, STOCKADE_RUNTIME};
use stockade_integration::exec::{output_with_timeout, wait_for};
use stockade_integration::hardening::{check_cgroup_limits, parse_id_map};
use stockade_integration::image::{BUSYBOX_IMAGE, UNTRUSTED_BUSYBOX_IMAGE};
use stockade_integration::probes::describe;
use stockade_integration::{paths, teardown, Containerd};
use stockade_runtime::idrange::IdAllocator;

const WAIT: Duration = Duration::from_secs(30);
const GIB: u64 = 1 << 30;

fn start() -> Containerd {
    Containerd::start().expect("starting a private containerd")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Nothing of `what` is left.
fn assert_nothing_left(c: &Containerd, what: &str) {
    c.assert_nothing_left(what)
}

/// What a case came to, for the record (shown with --nocapture).
fn show(what: &str, outcome: &str) {
    eprintln!("[bad input] {what}: {}", outcome.trim_end());
}

/// `needles` all in `text`.
fn assert_names(what: &str, text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            text.contains(needle),
            "{what}: the error does not say {needle:?}: {text}"
        );
    }
}

// ------------------------------------------------------------ 1. profiles

/// The test copy of the default profile (absolute seccomp path, test audit log).
fn default_profile_text() -> String {
    std::fs::read_to_string(paths::profile("default.toml").unwrap()).unwrap()
}

fn profile_with(from: &str, to: &str) -> String {
    let text = default_profile_text();
    assert!(text.contains(from), "the default profile has no {from:?}");
    text.replacen(from, to, 1)
}

/// The default profile with its seccomp file replaced by `seccomp`.
fn profile_with_seccomp(seccomp: &Path) -> String {
    default_profile_text()
        .lines()
        .map(|l| {
            if l.starts_with("profile = ") {
                format!("profile = {:?}", seccomp.display().to_string())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `ctr run --rm` of busybox under Stockade with the profile `profile`.
fn ctr_run_with_profile(c: &Containerd, profile: &Path, id: &str) -> Output {
    c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        STOCKADE_RUNTIME,
        "--runtime-config-path",
        &profile.display().to_string(),
        BUSYBOX_IMAGE,
        id,
        "true",
    ])
}

/// Every broken profile fails `ctr run` with the file, the key and the problem, and the
/// container leaves nothing behind.
#[test]
fn broken_profiles_fail_ctr_run_naming_file_and_key() {
    let c = start();
    let dir = c.dir.join("bad-profiles");
    std::fs::create_dir_all(&dir).unwrap();

    // The unbroken copy works: the failures below are the breakage, not the path.
    let good = dir.join("good.toml");
    std::fs::write(&good, default_profile_text()).unwrap();
    let out = ctr_run_with_profile(&c, &good, "profile-good");
    assert!(out.status.success(), "good profile: {}", describe(&out));

    let seccomp = |name: &str, json: &str| -> String {
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, json).unwrap();
        profile_with_seccomp(&file)
    };
    // (name, profile text (None: no such file), what the error must say)
    let cases: Vec<(&str, Option<String>, Vec<&str>)> = vec![
        ("missing", None, vec!["cannot read", "No such file"]),
        (
            "syntax",
            Some(profile_with("pids = 1024", "pids = = 1024")),
            vec!["(line ", "invalid"],
        ),
        (
            "unknown-key",
            Some(profile_with("pids = 1024", "pids = 1024\nswap = 1")),
            vec!["key `cgroups.defaults.swap`", "unknown field `swap`"],
        ),
        (
            "wrong-type",
            Some(profile_with("pids = 1024", "pids = \"lots\"")),
            vec!["key `cgroups.defaults.pids`", "invalid type"],
        ),
        (
            "negative-memory-ceiling",
            Some(profile_with("memory = \"8Gi\"", "memory = -1")),
            vec!["key `cgroups.ceilings.memory`", "below the minimum"],
        ),
        (
            "zero-pids",
            Some(profile_with("pids = 1024", "pids = 0")),
            vec!["key `cgroups.defaults.pids`", "at least 1"],
        ),
        (
            "ids-per-pod-zero",
            Some(profile_with("ids_per_pod = 65536", "ids_per_pod = 0")),
            vec!["key `userns.ids_per_pod`", "too small"],
        ),
        (
            "ids-per-pod-above-pool",
            Some(profile_with(
                "ids_per_pod = 65536",
                "ids_per_pod = 134217728",
            )),
            vec!["key `userns.ids_per_pod`", "larger than the whole pool"],
        ),
        (
            "unknown-capability",
            Some(profile_with("\"CHOWN\",", "\"CHOWN\", \"CAP_FLY\",")),
            vec!["key `capabilities.allow[1]`", "unknown capability \"CAP_FLY\""],
        ),
        (
            "seccomp-malformed",
            Some(seccomp(
                "seccomp-malformed",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"#,
            )),
            vec!["key `seccomp.profile`", "seccomp-malformed.json", "EOF"],
        ),
        (
            "seccomp-unknown-syscall",
            Some(seccomp(
                "seccomp-unknown-syscall",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","frobnicate"],"action":"SCMP_ACT_ALLOW"}]}"#,
            )),
            vec![
                "key `seccomp.profile`",
                "seccomp-unknown-syscall.json",
                "`frobnicate` is unknown",
            ],
        ),
        (
            "seccomp-conflicting-rules",
            Some(seccomp(
                "seccomp-conflicting-rules",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","getcwd"],"action":"SCMP_ACT_ALLOW"},{"names":["getcwd"],"action":"SCMP_ACT_KILL"}]}"#,
            )),
            vec![
                "seccomp-conflicting-rules.json",
                "`getcwd` has unconditional rules in syscalls[0] (SCMP_ACT_ALLOW) and syscalls[1] (SCMP_ACT_KILL)",
            ],
        ),
        (
            "seccomp-duplicate-name",
            Some(seccomp(
                "seccomp-duplicate-name",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","read"],"action":"SCMP_ACT_ALLOW"}]}"#,
            )),
            vec!["seccomp-duplicate-name.json", "syscalls[0] names `read` twice"],
        ),
        (
            "seccomp-unknown-action",
            Some(seccomp(
                "seccomp-unknown-action",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_EXPLODE"}]}"#,
            )),
            vec![
                "seccomp-unknown-action.json",
                "key `syscalls[0].action`: unknown variant `SCMP_ACT_EXPLODE`",
            ],
        ),
    ];
    // A relative path: the shim runs in the bundle, so it must say so, not "no such file".
    let out = ctr_run_with_profile(&c, Path::new("profiles/default.toml"), "profile-relative");
    assert!(!out.status.success(), "relative: {}", describe(&out));
    show("relative", &stderr(&out));
    assert_names(
        "relative",
        &stderr(&out),
        &["profile profiles/default.toml (from the runtime options' ConfigPath) is not an absolute path"],
    );
    assert_nothing_left(&c, "relative");

    for (name, text, needles) in cases {
        let file = dir.join(format!("{name}.toml"));
        if let Some(text) = text {
            std::fs::write(&file, text).unwrap();
        }
        let out = ctr_run_with_profile(&c, &file, &format!("profile-{name}"));
        assert!(
            !out.status.success(),
            "{name}: the container ran: {}",
            describe(&out)
        );
        let err = stderr(&out);
        show(name, &err);
        assert_names(name, &err, &[&format!("profile {}", file.display())]);
        // ctr 2.x prints the error without its gRPC code (the shim's code does not depend
        // on the containerd: 1.6's ctr shows it).
        if c.binaries().major() < 2 {
            assert_names(name, &err, &["invalid argument"]);
        }
        assert_names(name, &err, &needles);
        assert_nothing_left(&c, name);
    }
}

// ------------------------------------------------------------ 2. specs (ctr run --config)

/// Specs written by hand and sent with `ctr run --config`: containerd passes them to the
/// shim as they are (ctr adds no rootfs: the spec's root is a busybox tree on the host).
struct Specs<'a> {
    c: &'a Containerd,
    dir: PathBuf,
    base: Value,
}

impl<'a> Specs<'a> {
    fn new(c: &'a Containerd) -> Specs<'a> {
        let dir = c.dir.join("bad-specs");
        let rootfs = dir.join("rootfs");
        // Mount points exist: the host's root owns the tree, which the container's root
        // (an unprivileged host ID) cannot write.
        for d in ["bin", "proc", "sys", "dev", "tmp", "run", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "cat", "pwd"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        // containerd's own default spec, as `ctr run` would build it.
        let out = c.ctr(&["oci", "spec"]);
        assert!(out.status.success(), "ctr oci spec: {}", describe(&out));
        let mut base: Value = serde_json::from_slice(&out.stdout).unwrap();
        base["process"]["args"] = json!(["sleep", "600"]);
        base["process"]["env"] = json!(["PATH=/bin"]);
        base["root"] = json!({"path": rootfs});
        Specs { c, dir, base }
    }

    /// The base spec for container `id` (its cgroup under the instance's parent), edited.
    fn spec(&self, id: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let mut spec = self.base.clone();
        spec["linux"]["cgroupsPath"] = json!(format!("{}/{id}", self.c.cgroup_parent()));
        edit(&mut spec);
        let file = self.dir.join(format!("{id}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        file
    }

    /// `ctr run <flags> --runtime stockade --runtime-config-path <profile> --config <spec> id`
    /// (`profile` as in profiles/).
    fn run(
        &self,
        flags: &[&str],
        profile: &str,
        id: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Output {
        let file = self.spec(id, edit);
        let spec: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let profile = paths::profile(profile).unwrap();
        let file = file.display().to_string();
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(flags.iter().map(|f| f.to_string()));
        args.extend(["--runtime".into(), STOCKADE_RUNTIME.into()]);
        // ctr 2.x chowns a user-namespaced spec's FIFOs through runc's own options type
        // and fails client-side on any other options: such specs go without options, and
        // the shim takes the harness's $STOCKADE_PROFILE (the default profile) instead.
        let uid_mapped = spec["linux"]["uidMappings"]
            .as_array()
            .is_some_and(|m| !m.is_empty());
        if uid_mapped && self.c.binaries().major() >= 2 {
            assert_eq!(
                profile,
                paths::profile("default.toml").unwrap(),
                "a user-namespaced spec under ctr 2.x can only use $STOCKADE_PROFILE"
            );
        } else {
            args.extend([
                "--runtime-config-path".into(),
                profile.display().to_string(),
            ]);
        }
        args.extend(["--config".into(), file, id.into()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.c.ctr(&refs)
    }

    /// Run `id` detached; its host PID once it runs.
    fn run_detached(&self, id: &str, edit: impl FnOnce(&mut Value)) -> i32 {
        let out = self.run(&["-d"], "default.toml", id, edit);
        assert!(out.status.success(), "{id}: {}", describe(&out));
        self.c.wait_task_status(id, "RUNNING").unwrap();
        self.c.task(id).unwrap().0
    }

    fn remove(&self, id: &str) {
        let _ = self.c.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
        self.c.wait_task_status(id, "STOPPED").unwrap();
        self.c.ctr_ok(&["tasks", "rm", id]).unwrap();
        self.c.ctr_ok(&["containers", "rm", id]).unwrap();
    }
}

fn seccomp(rules: Value) -> impl FnOnce(&mut Value) {
    move |s: &mut Value| {
        s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules})
    }
}

/// Specs whose values a production runtime must refuse: each `ctr run` fails naming the
/// problem (and the bundle's config.json where the file is at fault), nothing left.
#[test]
fn absurd_specs_are_refused_with_a_named_error() {
    let c = start();
    let specs = Specs::new(&c);
    // The base spec itself runs: the refusals below are the edits.
    let out = specs.run(&["--rm"], "default.toml", "spec-good", |s| {
        s["process"]["args"] = json!(["cat", "/proc/self/uid_map"]);
    });
    assert!(out.status.success(), "base spec: {}", describe(&out));

    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, &str, Edit, Vec<&str>)> = vec![
        (
            "seccomp-unknown-syscall",
            "default.toml",
            Box::new(seccomp(json!([
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["frobnicate"], "action": "SCMP_ACT_ERRNO"}
            ]))),
            vec![
                "seccomp-unknown-syscall/config.json",
                "linux.seccomp: syscalls[1]",
                "`frobnicate` is unknown",
            ],
        ),
        (
            "seccomp-unknown-action",
            "default.toml",
            Box::new(seccomp(
                json!([{"names": ["getpid"], "action": "SCMP_ACT_EXPLODE"}]),
            )),
            vec![
                "seccomp-unknown-action/config.json",
                "key `linux.seccomp.syscalls[0].action`",
                "unknown variant `SCMP_ACT_EXPLODE`",
            ],
        ),
        (
            "seccomp-unknown-default",
            "default.toml",
            Box::new(|s: &mut Value| {
                s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_MAYBE"})
            }),
            vec![
                "key `linux.seccomp.defaultAction`",
                "unknown variant `SCMP_ACT_MAYBE`",
            ],
        ),
        (
            "root-empty",
            "default.toml",
            Box::new(|s: &mut Value| s["root"]["path"] = json!("")),
            vec!["root-empty/config.json", "root.path is empty"],
        ),
        (
            "root-escapes-bundle",
            "default.toml",
            Box::new(|s: &mut Value| s["root"]["path"] = json!("../../../../../../../../tmp")),
            vec!["root.path \"../../../../../../../../tmp\"", "`..`"],
        ),
        (
            "root-missing",
            "default.toml",
            Box::new(|s: &mut Value| s["root"]["path"] = json!("/nonexistent/rootfs")),
            vec!["root.path /nonexistent/rootfs", "No such file"],
        ),
        (
            "no-process",
            "default.toml",
            Box::new(|s: &mut Value| {
                s.as_object_mut().unwrap().remove("process");
            }),
            vec!["no-process/config.json", "has no `process`"],
        ),
        (
            "uid-outside-the-pod",
            "default.toml",
            Box::new(|s: &mut Value| s["process"]["user"]["uid"] = json!(70_000)),
            vec!["process.user.uid 70000 is outside the pod's user namespace"],
        ),
        (
            "memory-2-62-strict",
            "strict.toml",
            Box::new(|s: &mut Value| {
                // An application user: strict refuses root first (`run-as-root`).
                s["process"]["user"] = json!({"uid": 1000, "gid": 1000});
                s["linux"]["resources"]["memory"] = json!({"limit": 1u64 << 62})
            }),
            vec!["rule `memory-ceiling`", "4611686018427387904"],
        ),
        (
            "sandbox-that-does-not-exist",
            "default.toml",
            Box::new(|s: &mut Value| {
                s["annotations"] = json!({
                    "io.kubernetes.cri.container-type": "container",
                    "io.kubernetes.cri.sandbox-id": "no-such-pod",
                })
            }),
            vec!["sandbox \"no-such-pod\"", "rule `unknown-sandbox`"],
        ),
        (
            "sandbox-id-10kB-with-control-characters",
            "default.toml",
            Box::new(|s: &mut Value| {
                s["annotations"] = json!({
                    "io.kubernetes.cri.container-type": "container",
                    "io.kubernetes.cri.sandbox-id": format!("a\nb\u{1b}[31m{}", "x".repeat(10_240)),
                })
            }),
            vec![
                "sandbox \"a\\nb\\u{1b}[31mxxx",
                "... (10248 bytes)",
                "rule `unknown-sandbox`",
            ],
        ),
        (
            // ctr itself refuses this one (a negative uint64): nothing reaches the shim.
            "cpu-period-negative",
            "default.toml",
            Box::new(|s: &mut Value| {
                s["linux"]["resources"]["cpu"] = json!({"quota": 50_000, "period": -1})
            }),
            vec!["linux.resources.cpu.period"],
        ),
    ];
    for (id, profile, edit, needles) in cases {
        let out = specs.run(&["--rm"], profile, id, edit);
        assert!(!out.status.success(), "{id} ran: {}", describe(&out));
        show(id, &stderr(&out));
        assert_names(id, &stderr(&out), &needles);
        assert_nothing_left(&c, id);
    }
}

/// Absurd limits, and ID mappings the pod brings, are replaced by the profile's values:
/// the container runs with the defaults (or the ceiling) and the pod's own ID range.
#[test]
fn absurd_spec_values_are_replaced_by_the_profile() {
    let c = start();
    let specs = Specs::new(&c);

    // Negative memory, a zero quota over a zero period, negative pids, host-root mappings.
    let pid = specs.run_detached("absurd-low", |s| {
        let r = &mut s["linux"]["resources"];
        r["memory"] = json!({"limit": -5});
        r["cpu"] = json!({"quota": 0, "period": 0});
        r["pids"] = json!({"limit": -3});
        let all = json!([{"containerID": 0, "hostID": 0, "size": 4_294_967_295u32}]);
        s["linux"]["uidMappings"] = all.clone();
        s["linux"]["gidMappings"] = all;
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
    });
    let (limits, _) = check_cgroup_limits(pid).unwrap();
    assert_eq!(limits.memory, Some(GIB), "default memory: {limits:?}");
    assert_eq!(
        (limits.cpu_quota, limits.cpu_period),
        (Some(100_000), Some(100_000)),
        "default CPU: {limits:?}"
    );
    assert_eq!(limits.pids, Some(1024), "default pids: {limits:?}");
    for map in ["uid_map", "gid_map"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{map}")).unwrap();
        let entries = parse_id_map(&text).unwrap();
        assert_eq!(entries.len(), 1, "{map}: {text}");
        assert!(
            entries[0].inside == 0 && entries[0].outside >= 65_536 && entries[0].count == 65_536,
            "{map} is not the pod's range: {text}"
        );
    }
    specs.remove("absurd-low");

    // 2^62 bytes of memory (the ceiling, as default.toml clamps), a negative quota, pids 0.
    let pid = specs.run_detached("absurd-high", |s| {
        let r = &mut s["linux"]["resources"];
        r["memory"] = json!({"limit": 1u64 << 62});
        r["cpu"] = json!({"quota": -7, "period": 100_000});
        r["pids"] = json!({"limit": 0});
    });
    let (limits, _) = check_cgroup_limits(pid).unwrap();
    assert_eq!(limits.memory, Some(8 * GIB), "memory ceiling: {limits:?}");
    assert_eq!(limits.cpu_quota, Some(100_000), "default CPU: {limits:?}");
    assert_eq!(limits.pids, Some(1024), "default pids: {limits:?}");
    specs.remove("absurd-high");

    // A pod seccomp profile naming getcwd twice with conflicting actions: accepted, and the
    // most restrictive rule wins (EACCES), as the filters stack.
    let out = specs.run(&["--rm"], "default.toml", "seccomp-duplicates", |s| {
        s["process"]["args"] = json!(["pwd"]);
        seccomp(json!([
            {"names": ["getcwd", "getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"}
        ]))(s);
    });
    assert!(
        !out.status.success() && stderr(&out).contains("getcwd: Permission denied"),
        "getcwd must fail with EACCES: {}",
        describe(&out)
    );
    show("seccomp-duplicates", &stderr(&out));
    assert_nothing_left(&c, "absurd values");
}

// ------------------------------------------------------------ 3. the shim binary, directly

/// The shim driven as containerd drives it, for config.json files containerd would never
/// write: `start` in the bundle, Create over ttrpc, Shutdown.
struct DirectShim<'a> {
    c: &'a Containerd,
    id: String,
    bundle: PathBuf,
}

impl<'a> DirectShim<'a> {
    fn new(c: &'a Containerd, id: &str, config: &[u8]) -> DirectShim<'a> {
        let bundle = c.dir.join("direct").join(id);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("config.json"), config).unwrap();
        DirectShim {
            c,
            id: id.to_string(),
            bundle,
        }
    }

    /// `containerd-shim-stockade-v1 -namespace .. -id .. -address .. start` in the bundle,
    /// with containerd's environment.
    fn start(&self) -> Output {
        let mut cmd = Command::new(self.c.shim_dir.join(paths::SHIM_BINARY));
        cmd.args([
            "-namespace",
            self.c.namespace(),
            "-id",
            &self.id,
            "-address",
            &self.c.socket.display().to_string(),
            "-publish-binary",
            "containerd",
            "start",
        ])
        .current_dir(&self.bundle)
        .env("TTRPC_ADDRESS", self.c.dir.join("containerd.sock.ttrpc"))
        .env(
            stockade_runtime::state_dir::ENV,
            self.c.stockade_state.root(),
        )
        .env("STOCKADE_PROFILE", paths::profile("default.toml").unwrap())
        .stdin(Stdio::null());
        output_with_timeout(&mut cmd, WAIT).unwrap()
    }

    /// Create over the shim's ttrpc socket (with runtime `options`, if any): the error
    /// message it answers with. Then Shutdown, as containerd does after a failed Create.
    fn create_error(&self, address: &str, options: Option<Any>) -> String {
        let client = ttrpc::Client::connect(address).unwrap();
        let task = TaskClient::new(client);
        let ctx = || ttrpc::context::with_timeout(WAIT.as_nanos() as i64);
        let req = CreateTaskRequest {
            id: self.id.clone(),
            bundle: self.bundle.display().to_string(),
            options: options.into(),
            ..Default::default()
        };
        let message = match task.create(ctx(), &req) {
            Ok(resp) => panic!("{}: Create succeeded (pid {})", self.id, resp.pid),
            Err(ttrpc::Error::RpcStatus(status)) => status.message,
            Err(e) => panic!("{}: Create failed without a status: {e:?}", self.id),
        };
        let shutdown = ShutdownRequest {
            id: self.id.clone(),
            now: true,
            ..Default::default()
        };
        task.shutdown(ctx(), &shutdown).unwrap();
        message
    }

    /// Nothing of the container: no shim process or socket, no mount, cgroup, state
    /// directory, record or ID range, and only containerd's files in the bundle.
    fn assert_nothing_left(&self, address: Option<&str>, expected: &[&str]) {
        let socket = address.map(|a| PathBuf::from(a.trim_start_matches("unix://")));
        wait_for("the shim to exit", WAIT, || {
            let gone = socket.as_ref().is_none_or(|s| !s.exists());
            (gone && self.c.leftovers().processes.is_empty()).then_some(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}: {:#?}", self.id, self.c.leftovers()));
        let state = &self.c.stockade_state;
        let libcontainer = state.libcontainer().join(self.c.namespace()).join(&self.id);
        assert!(!libcontainer.exists(), "{}", libcontainer.display());
        assert!(teardown::mounts_under(&self.bundle).is_empty());
        let mut files: Vec<String> = std::fs::read_dir(&self.bundle)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, expected, "{}: files in the bundle", self.id);
        let record = state.containers().join(format!("{}.json", self.id));
        assert!(!record.exists(), "{}", record.display());
        let any_pool = stockade_runtime::profile::IdPoolSettings {
            first_id: 1 << 30,
            size: 1 << 16,
            ids_per_pod: 1 << 16,
        };
        if let Ok(table) = IdAllocator::open(state.id_ranges(), any_pool).and_then(|a| a.table()) {
            assert!(
                table.get(&self.id).is_none(),
                "{}: the pod still holds an ID range",
                self.id
            );
        }
        // A spec without cgroupsPath would have gone under the profile's parent.
        assert!(teardown::cgroup_dirs(&format!("/stockade/{}", self.id))
            .iter()
            .all(|d| !d.exists()));
        assert!(self.c.leftovers().is_empty(), "{:#?}", self.c.leftovers());
    }
}

/// config.json that is not JSON, or JSON of the wrong shape, handed to the shim binary:
/// `start` (which reads the annotations) or Create fails naming config.json and the
/// problem; Shutdown leaves nothing.
#[test]
fn malformed_config_json_through_the_shim_binary() {
    let c = start();

    // Not JSON, empty, missing: `start` cannot group the container and says why.
    for (id, config, needles) in [
        (
            "not-json",
            Some(&b"{\"ociVersion\": \"1.0.2\", \"process\": "[..]),
            &["EOF while parsing"][..],
        ),
        ("empty", Some(&b""[..]), &["EOF while parsing"][..]),
        ("missing", None, &["No such file"][..]),
    ] {
        let shim = DirectShim::new(&c, id, config.unwrap_or_default());
        if config.is_none() {
            std::fs::remove_file(shim.bundle.join("config.json")).unwrap();
        }
        let out = shim.start();
        assert!(
            !out.status.success(),
            "{id}: start succeeded: {}",
            describe(&out)
        );
        let err = stderr(&out);
        show(&format!("{id} (start)"), &err);
        let path = shim.bundle.join("config.json").display().to_string();
        assert_names(id, &err, &[&path]);
        assert_names(id, &err, needles);
        let expected: &[&str] = if config.is_some() {
            &["config.json"]
        } else {
            &[]
        };
        shim.assert_nothing_left(None, expected);
    }

    // Runtime options of Stockade's type that do not decode: Create refuses rather than
    // fall back to another profile.
    let shim = DirectShim::new(&c, "garbage-options", br#"{"ociVersion":"1.0.2"}"#);
    let out = shim.start();
    assert!(out.status.success(), "start: {}", describe(&out));
    let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let garbage = Any {
        type_url: "cri.runtimeoptions.v1.Options".into(),
        // ConfigPath (field 2) said to be 50 bytes long, and 1 byte follows.
        value: vec![0x12, 50, b'/'],
        ..Default::default()
    };
    let message = shim.create_error(&address, Some(garbage));
    show("garbage-options (Create)", &message);
    assert_names(
        "garbage options",
        &message,
        &["runtime options cri.runtimeoptions.v1.Options: cannot decode"],
    );
    shim.assert_nothing_left(Some(&address), &["address", "config.json"]);

    // Valid JSON of the wrong shape: the server starts, Create names the key.
    for (id, config, needles) in [
        (
            "process-is-a-number",
            r#"{"ociVersion":"1.0.2","process":42,"root":{"path":"rootfs"}}"#,
            &["key `process`", "invalid type: integer `42`"][..],
        ),
        (
            "uid-is-a-string",
            r#"{"ociVersion":"1.0.2","process":{"cwd":"/","args":["sh"],"user":{"uid":"root","gid":0}},"root":{"path":"rootfs"},"linux":{}}"#,
            &["key `process.user.uid`", "invalid type: string \"root\""][..],
        ),
        (
            "annotation-is-a-number",
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":7},"root":{"path":"rootfs"}}"#,
            &[
                "key `annotations.io.kubernetes.cri.sandbox-id`",
                "invalid type",
            ][..],
        ),
        ("array", "[]", &["not a JSON object"][..]),
        (
            "trailing-garbage",
            r#"{"ociVersion":"1.0.2"} {"ociVersion":"1.0.2"}"#,
            &["trailing characters"][..],
        ),
    ] {
        let shim = DirectShim::new(&c, id, config.as_bytes());
        let out = shim.start();
        if !out.status.success() {
            // `start` reads the document too: a refusal there must be as specific.
            let err = stderr(&out);
            show(&format!("{id} (start)"), &err);
            assert_names(id, &err, &["config.json"]);
            shim.assert_nothing_left(None, &["config.json"]);
            continue;
        }
        let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(address.starts_with("unix://"), "{id}: {}", describe(&out));
        let message = shim.create_error(&address, None);
        show(&format!("{id} (Create)"), &message);
        let path = shim.bundle.join("config.json").display().to_string();
        assert_names(id, &message, &[&format!("invalid spec {path}")]);
        assert_names(id, &message, needles);
        shim.assert_nothing_left(Some(&address), &["address", "config.json"]);
    }
}

// ------------------------------------------------------------ 4. CRI names and images

/// CRI passes the pod's and container's names (and the image) to the shim as annotations;
/// absurd names must not break anything: an empty name, 10 kB, control characters and a
/// forged log line. The pod runs, the audit log keeps one well-formed JSON line per event
/// with the name as it was given, and nothing is left.
#[test]
fn absurd_cri_names_are_carried_safely() {
    let c = start();
    let cri = c.cri().unwrap();
    let audit = paths::test_audit_log();
    // Only the lines this test adds (other tests may write the same log).
    let audit_start = std::fs::metadata(&audit).map(|m| m.len()).unwrap_or(0);
    let forged = "\n{\"forged\": true}\u{1b}[31m\t\u{7}\r";
    for (label, name) in [
        ("empty", String::new()),
        ("10kB", "p".repeat(10 * 1024)),
        ("control characters", format!("evil{forged}")),
    ] {
        let mut pod_cfg = cri.pod_config("absurd");
        if let Some(m) = pod_cfg.metadata.as_mut() {
            m.name = name.clone();
        }
        let pod = match cri.run_pod_sandbox(&pod_cfg, HANDLER_STOCKADE) {
            Ok(pod) => pod,
            Err(e) => {
                // containerd's own validation may refuse the name: then nothing of it runs.
                let msg = format!("{e:#}");
                show(label, &format!("pod refused: {msg}"));
                assert!(
                    !msg.contains("stockade"),
                    "{label}: refused by Stockade: {msg}"
                );
                assert_nothing_left(&c, label);
                continue;
            }
        };
        let mut cfg = cri.container_config("app", &["sleep", "600"]);
        if let Some(m) = cfg.metadata.as_mut() {
            if !name.is_empty() {
                m.name = name.clone();
            }
        }
        match cri.run_container(&pod, &cfg, &pod_cfg) {
            Ok(id) => {
                assert_eq!(
                    cri.container_state(&id).unwrap(),
                    ContainerState::ContainerRunning,
                    "{label}"
                );
                show(label, "pod and container run");
            }
            Err(e) => {
                let msg = format!("{e:#}");
                show(label, &format!("container refused: {msg}"));
                assert!(
                    !msg.contains("stockade"),
                    "{label}: container refused by Stockade: {msg}"
                );
            }
        }
        if !name.is_empty() {
            let text = std::fs::read(&audit).unwrap_or_default();
            let text =
                String::from_utf8_lossy(text.get(audit_start as usize..).unwrap_or_default());
            let mut found = false;
            for line in text.lines().filter(|l| !l.is_empty()) {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{label}: audit line is not JSON ({e}): {line}"));
                found |= v["pod"] == Value::String(name.clone());
            }
            assert!(found, "{label}: no audit event names the pod as given");
        }
        cri.stop_pod_sandbox(&pod).unwrap();
        cri.remove_pod_sandbox(&pod).unwrap();
        assert_nothing_left(&c, label);
    }
    // No line of containerd's log (where the shim's log goes) was forged by a name.
    let log = std::fs::read_to_string(&c.log_path).unwrap();
    assert!(
        !log.lines().any(|l| l.starts_with("{\"forged\"")),
        "a pod name forged a log line"
    );
}

/// An image named by its ID (`sha256:...`, which CRI resolves) is still the image from its
/// registry: an untrusted one is refused by name.
#[test]
fn an_untrusted_image_named_by_its_id_is_still_refused() {
    let c = start();
    let cri = c.cri().unwrap();
    let pod_cfg = cri.pod_config("image-id");
    let pod = cri.run_pod_sandbox(&pod_cfg, HANDLER_STOCKADE).unwrap();
    let image_id = cri.image_id(UNTRUSTED_BUSYBOX_IMAGE).unwrap();
    let mut cfg = cri.container_config("by-id", &["sleep", "600"]);
    if let Some(image) = cfg.image.as_mut() {
        image.image = image_id.clone();
    }
    let result = cri
        .create_container(&pod, &cfg, &pod_cfg)
        .and_then(|id| cri.start_container(&id).map(|_| id));
    match result {
        Ok(id) => panic!("image {image_id} (untrusted) ran as container {id}"),
        Err(e) => {
            let msg = format!("{e:#}");
            show("image by ID", &msg);
            assert_names("image by ID", &msg, &["untrusted-registry"]);
        }
    }
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert_nothing_left(&c, "image by ID");
}
