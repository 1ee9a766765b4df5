//! net-define, attach, hotplug, undo and bad input on libvirt's in-process test driver
//! (`test:///ABS/examples/homelab.xml`): a real libvirt, fresh state per connection.

use crate::common::{self, vbridge_bin, StateTmp};
use std::process::Command;
use vbridge::attach::{self, AttachOptions};
use vbridge::backup::StateDir;
use vbridge::domxml::{self, Selection};
use vbridge::libvirt::Conn;
use vbridge::network::{self, Action, NetDefine};
use vbridge::validate::{BridgeName, Mac};
use vbridge::{hotplug, ErrorKind};

fn homelab_uri() -> String {
    format!("test://{}/examples/homelab.xml", env!("CARGO_MANIFEST_DIR"))
}

fn conn() -> Conn {
    vbridge::libvirt::init();
    Conn::open(Some(&homelab_uri())).expect("test driver opens")
}

fn br(name: &str) -> BridgeName {
    BridgeName::parse(name).unwrap()
}

fn mac(m: &str) -> Mac {
    Mac::parse(m).unwrap()
}

fn opts(sel: Selection) -> AttachOptions {
    AttachOptions {
        bridge: br("br0"),
        selection: sel,
        dry_run: false,
        persist: false,
        progress: Default::default(),
    }
}

fn backups(state: &StateDir, dom: &str) -> usize {
    std::fs::read_dir(state.backup_dir(dom))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn net_define_is_idempotent_and_refuses_a_different_network() {
    let c = conn();
    let want = NetDefine::default();
    let r = network::define(&c, &want, false).unwrap();
    assert_eq!(
        r.actions,
        vec![Action::Define, Action::Start, Action::Autostart]
    );
    assert!(r.changed && r.active && r.autostart && r.persistent);
    let xml = c.network("br0-network").unwrap().unwrap().xml().unwrap();
    let def = vbridge::topology::parse_network(&xml).unwrap();
    assert_eq!(def.forward_mode.as_deref(), Some("bridge"));
    assert_eq!(def.bridge.as_deref(), Some("br0"));

    let again = network::define(&c, &want, false).unwrap();
    assert!(!again.changed && again.actions.is_empty(), "{again:?}");

    // Same network, stopped and without autostart: only those are put right.
    let net = c.network("br0-network").unwrap().unwrap();
    net.set_autostart(false).unwrap();
    net.stop().unwrap();
    let fixed = network::define(&c, &want, false).unwrap();
    assert_eq!(fixed.actions, vec![Action::Start, Action::Autostart]);

    // 'default' is a NAT network: refused with the difference, untouched.
    let other = NetDefine {
        name: "default".into(),
        ..NetDefine::default()
    };
    let before = c.network("default").unwrap().unwrap().xml().unwrap();
    let err = network::define(&c, &other, false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(
        err.message.contains("nat") && err.message.contains("virbr0"),
        "{}",
        err.message
    );
    assert_eq!(
        c.network("default").unwrap().unwrap().xml().unwrap(),
        before
    );

    // --force redefines it, keeping its UUID, and warns about the guests' taps.
    let forced = network::define(
        &c,
        &NetDefine {
            force: true,
            ..other
        },
        false,
    )
    .unwrap();
    assert!(
        forced
            .actions
            .starts_with(&[Action::Stop, Action::Redefine, Action::Start]),
        "{:?}",
        forced.actions
    );
    assert!(forced.warnings.iter().any(|w| w.contains("taps")));
    let now = c.network("default").unwrap().unwrap();
    assert_eq!(now.uuid().unwrap(), "dd8fe884-6c02-601e-7551-cca97df1c5df");
    assert_eq!(
        vbridge::topology::parse_network(&now.xml().unwrap())
            .unwrap()
            .forward_mode
            .as_deref(),
        Some("bridge")
    );

    // Dry run plans and changes nothing.
    let dry = network::define(
        &c,
        &NetDefine {
            name: "other".into(),
            ..NetDefine::default()
        },
        true,
    )
    .unwrap();
    assert!(dry.changed && dry.xml.is_some());
    assert!(c.network("other").unwrap().is_none());

    // Undefine, twice.
    let u = network::undefine(&c, "br0-network", false).unwrap();
    assert_eq!(u.actions, vec![Action::Stop, Action::Undefine]);
    assert!(c.network("br0-network").unwrap().is_none());
    assert!(!network::undefine(&c, "br0-network", false).unwrap().changed);
}

#[test]
fn attach_rewrites_persistent_xml_backs_up_and_undo_restores() {
    let c = conn();
    let tmp = StateTmp::new();
    let state = &tmp.state;
    let original = c.domain("db").unwrap().persistent_xml().unwrap();

    let r = attach::attach(&c, &["db".into()], &opts(Selection::Auto), state).unwrap();
    assert!(r.ok(), "{r:?}");
    let d = &r.domains[0];
    assert!(d.changed);
    assert_eq!(d.interfaces.len(), 1);
    assert_eq!(d.interfaces[0].mac.as_deref(), Some("52:54:00:3a:10:02"));
    let backup = d.backup.clone().expect("a backup");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);

    let now = c.domain("db").unwrap().persistent_xml().unwrap();
    let nics = domxml::nics(&now).unwrap();
    assert_eq!(nics.len(), 1);
    assert!(nics[0].is_on_bridge("br0"), "{now}");
    assert_eq!(nics[0].mac.as_deref(), Some("52:54:00:3a:10:02"));
    assert!(now.contains("<boot order='2'/>"), "boot order kept: {now}");
    assert!(!now.contains("network="), "{now}");

    // A second run changes nothing and writes no backup.
    let again = attach::attach(&c, &["db".into()], &opts(Selection::Auto), state).unwrap();
    assert!(!again.domains[0].changed && again.domains[0].backup.is_none());
    assert_eq!(backups(state, "db"), 1);

    // undo puts the exact old definition back and keeps the replaced one.
    let u = attach::undo(&c, "db", state, false).unwrap();
    assert!(u.changed);
    assert_eq!(c.domain("db").unwrap().persistent_xml().unwrap(), original);
    let files: Vec<String> = std::fs::read_dir(state.backup_dir("db"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(".xml.undone")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with(".xml.pre-undo")),
        "{files:?}"
    );
    // Nothing left to undo.
    assert_eq!(
        attach::undo(&c, "db", state, false).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn running_vm_gets_the_note_and_dry_run_changes_nothing() {
    let c = conn();
    let tmp = StateTmp::new();
    let before = c.domain("web").unwrap().persistent_xml().unwrap();
    let dry = attach::attach(
        &c,
        &["web".into()],
        &AttachOptions {
            dry_run: true,
            ..opts(Selection::Auto)
        },
        &tmp.state,
    )
    .unwrap();
    let d = &dry.domains[0];
    assert!(d.changed);
    let diff = d.diff.as_deref().unwrap();
    assert!(
        diff.contains("-    <interface type='network'>")
            && diff.contains("+    <interface type='bridge'>"),
        "{diff}"
    );
    assert_eq!(c.domain("web").unwrap().persistent_xml().unwrap(), before);
    assert_eq!(backups(&tmp.state, "web"), 0);

    let r = attach::attach(&c, &["web".into()], &opts(Selection::Auto), &tmp.state).unwrap();
    assert!(
        r.domains[0]
            .notes
            .iter()
            .any(|n| n.contains("full power-off")),
        "{r:?}"
    );
}

#[test]
fn selection_rules_on_a_vm_with_two_nics() {
    let c = conn();
    let tmp = StateTmp::new();
    let before = c.domain("media").unwrap().persistent_xml().unwrap();
    let r = attach::attach(&c, &["media".into()], &opts(Selection::Auto), &tmp.state).unwrap();
    let err = r.domains[0].error.as_ref().expect("refused");
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(
        err.message.contains("52:54:00:3a:10:03") && err.message.contains("52:54:00:3a:10:04"),
        "{}",
        err.message
    );
    assert!(!r.ok());
    assert_eq!(c.domain("media").unwrap().persistent_xml().unwrap(), before);
    assert_eq!(backups(&tmp.state, "media"), 0);

    let r = attach::attach(
        &c,
        &["media".into()],
        &opts(Selection::Mac(mac("52:54:00:3A:10:04"))),
        &tmp.state,
    )
    .unwrap();
    assert!(r.ok(), "{r:?}");
    let nics = domxml::nics(&c.domain("media").unwrap().persistent_xml().unwrap()).unwrap();
    assert_eq!(nics[0].kind, "user");
    assert!(nics[1].is_on_bridge("br0"));

    let r = attach::attach(&c, &["media".into()], &opts(Selection::All), &tmp.state).unwrap();
    assert!(r.ok(), "{r:?}");
    let nics = domxml::nics(&c.domain("media").unwrap().persistent_xml().unwrap()).unwrap();
    assert!(nics.iter().all(|n| n.is_on_bridge("br0")), "{nics:?}");
    assert_eq!(
        r.domains[0].interfaces.iter().filter(|n| n.changed).count(),
        1
    );
}

#[test]
fn several_vms_share_a_connection_and_fail_independently() {
    let c = conn();
    let tmp = StateTmp::new();
    let names: Vec<String> = ["db", "ghost", "nas", "web"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let r = attach::attach(&c, &names, &opts(Selection::Auto), &tmp.state).unwrap();
    assert!(!r.ok());
    let by = |n: &str| r.domains.iter().find(|d| d.domain == n).unwrap();
    assert!(by("db").changed && by("web").changed);
    assert!(!by("nas").changed && by("nas").error.is_none());
    assert_eq!(
        by("ghost").error.as_ref().unwrap().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn a_concurrent_edit_is_detected_not_overwritten() {
    let c = conn();
    let tmp = StateTmp::new();
    let dom = c.domain("db").unwrap();
    let original = dom.persistent_xml().unwrap();
    let plan = attach::plan(&c, &["db".into()], &opts(Selection::Auto)).unwrap();
    assert!(plan.domains[0].result.changed);
    // Someone else edits the VM between our read and our write.
    let edited = original.replacen(
        "<memory unit='KiB'>2097152</memory>",
        "<memory unit='KiB'>4194304</memory>",
        1,
    );
    assert_ne!(edited, original, "the edit must apply");
    c.define_domain(&edited).unwrap();
    let r = attach::apply(&c, plan, &tmp.state);
    let err = r.domains[0].error.clone().expect("refused");
    assert_eq!(err.kind, ErrorKind::Conflict, "{err}");
    assert!(err.message.contains("changed"), "{}", err.message);
    assert_eq!(dom.persistent_xml().unwrap(), edited);
    assert_eq!(
        backups(&tmp.state, "db"),
        0,
        "no backup of a state we did not replace"
    );
}

/// Two attaches planned from the same definition: the second finds, under the domain's
/// lock, the change the first made, and reports it unchanged with no backup, so the two
/// reports count one change between them.
#[test]
fn a_change_made_meanwhile_by_another_vbridge_is_reported_unchanged() {
    let c = conn();
    let tmp = StateTmp::new();
    let first = attach::plan(&c, &["db".into()], &opts(Selection::Auto)).unwrap();
    let second = attach::plan(&c, &["db".into()], &opts(Selection::Auto)).unwrap();
    let a = attach::apply(&c, first, &tmp.state);
    let b = attach::apply(&c, second, &tmp.state);
    assert!(a.ok() && b.ok(), "{:?} {:?}", a.domains, b.domains);
    let (a, b) = (&a.domains[0], &b.domains[0]);
    assert_eq!(a.outcome, vbridge::report::Outcome::Changed);
    assert_eq!(b.outcome, vbridge::report::Outcome::Unchanged);
    assert!(!b.changed && b.backup.is_none());
    assert_eq!(backups(&tmp.state, "db"), 1, "one backup for one change");
    let lock_dir = tmp.dir.path().join("locks");
    assert_eq!(std::fs::read_dir(lock_dir).unwrap().count(), 1);
}

/// The test driver has no virDomainAttachDeviceFlags: the hotplug itself is proven in the
/// lab; here, what is decided before libvirt is called.
#[test]
fn hotplug_refusals_before_libvirt() {
    let c = conn();
    let tmp = StateTmp::new();
    let st = &tmp.state;
    let before = c.domain("media").unwrap().persistent_xml().unwrap();
    // A MAC that belongs to a NIC not on the bridge is refused, nothing changes.
    let br0 = br("br0");
    let err = hotplug::hotplug(
        &c,
        "media",
        &br0,
        Some(&mac("52:54:00:3a:10:03")),
        false,
        st,
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("52:54:00:3a:10:03"), "{}", err.message);
    // The NIC already there with that MAC on br0: nothing to do, no libvirt call.
    let same =
        hotplug::hotplug(&c, "nas", &br0, Some(&mac("52:54:00:3a:10:05")), false, st).unwrap();
    assert!(!same.changed);
    // Dry run shows the device XML, derived MAC and all.
    let dry = hotplug::hotplug(&c, "nas", &br0, None, true, st).unwrap();
    let uuid = c.domain("nas").unwrap().uuid().unwrap();
    let derived = hotplug::derive_mac(&uuid, &br0);
    assert!(dry.changed && dry.diff.as_deref().unwrap().contains(derived.as_str()));
    assert_eq!(c.domain("media").unwrap().persistent_xml().unwrap(), before);
    // detach of an absent MAC is success with no change.
    assert!(
        !hotplug::detach(&c, "nas", &mac("52:54:00:00:00:09"), false, st)
            .unwrap()
            .changed
    );
}

#[test]
fn bad_input_changes_nothing() {
    let c = conn();
    let tmp = StateTmp::new();
    let snapshot = |c: &Conn| -> Vec<String> {
        ["web", "db", "media", "nas"]
            .iter()
            .map(|d| c.domain(d).unwrap().persistent_xml().unwrap())
            .collect()
    };
    let before = snapshot(&c);
    let cases: Vec<(&str, ErrorKind, vbridge::Error)> = vec![
        (
            "unknown VM",
            ErrorKind::NotFound,
            attach::attach(&c, &["nope".into()], &opts(Selection::Auto), &tmp.state)
                .unwrap()
                .domains[0]
                .error
                .clone()
                .unwrap(),
        ),
        (
            "bad bridge name",
            ErrorKind::InvalidInput,
            BridgeName::parse("br 0")
                .and_then(|bridge| {
                    attach::attach(
                        &c,
                        &["db".into()],
                        &AttachOptions {
                            bridge,
                            ..opts(Selection::Auto)
                        },
                        &tmp.state,
                    )
                })
                .unwrap_err(),
        ),
        (
            "bridge name too long",
            ErrorKind::InvalidInput,
            BridgeName::parse("a-very-long-bridge")
                .and_then(|bridge| {
                    attach::attach(
                        &c,
                        &["db".into()],
                        &AttachOptions {
                            bridge,
                            ..opts(Selection::Auto)
                        },
                        &tmp.state,
                    )
                })
                .unwrap_err(),
        ),
        (
            "bad MAC",
            ErrorKind::InvalidInput,
            Mac::parse("52:54:00:zz:00:01")
                .and_then(|m| {
                    attach::attach(&c, &["db".into()], &opts(Selection::Mac(m)), &tmp.state)
                })
                .unwrap_err(),
        ),
        (
            "absent MAC",
            ErrorKind::NotFound,
            attach::attach(
                &c,
                &["db".into()],
                &opts(Selection::Mac(mac("52:54:00:00:00:01"))),
                &tmp.state,
            )
            .unwrap()
            .domains[0]
                .error
                .clone()
                .unwrap(),
        ),
        (
            "index out of range",
            ErrorKind::NotFound,
            attach::attach(&c, &["db".into()], &opts(Selection::Index(5)), &tmp.state)
                .unwrap()
                .domains[0]
                .error
                .clone()
                .unwrap(),
        ),
        (
            "malformed XML",
            ErrorKind::InvalidInput,
            attach::rewrite_document(
                "<domain><devices><interface type='user'></devices></domain>",
                &br("br0"),
                &Selection::Auto,
            )
            .unwrap_err(),
        ),
        (
            "hotplug bad MAC",
            ErrorKind::InvalidInput,
            Mac::parse("01:00:5e:00:00:01")
                .and_then(|m| hotplug::hotplug(&c, "db", &br("br0"), Some(&m), false, &tmp.state))
                .unwrap_err(),
        ),
        (
            "net-define bad bridge",
            ErrorKind::InvalidInput,
            network::define(
                &c,
                &NetDefine {
                    bridge: "br/0".into(),
                    ..NetDefine::default()
                },
                false,
            )
            .unwrap_err(),
        ),
        (
            "net-define bad name",
            ErrorKind::InvalidInput,
            network::define(
                &c,
                &NetDefine {
                    name: "a/b".into(),
                    ..NetDefine::default()
                },
                false,
            )
            .unwrap_err(),
        ),
    ];
    for (what, kind, err) in &cases {
        assert_eq!(err.kind, *kind, "{what}: {err}");
        assert!(
            !err.message.is_empty() && !err.message.contains('\n'),
            "{what}: one line: {err}"
        );
    }
    assert_eq!(snapshot(&c), before);
    assert!(c.network("br0-network").unwrap().is_none());
    assert!(
        !tmp.state.root.join("backups").exists()
            || std::fs::read_dir(tmp.state.root.join("backups"))
                .unwrap()
                .all(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count() == 0)
    );
}

/// How a refusal comes out of the binary.
enum Says {
    /// Exit 1, stderr says this, and stdout is empty (every error goes to stderr).
    Text(&'static str),
    /// Exit 1 (2 for a usage error), stdout is a JSON error of this kind, stderr is empty.
    Json(i32, &'static str),
}

/// The binary's one table of refusals: the same refusals as above (and a libvirtd that is
/// not there, a malformed command line), each with its exit code and one line that says why
/// (or a JSON error), never a panic. Which command lines parse at all is `cli::command_lines`.
#[test]
fn cli_bad_input_table() {
    let tmp = StateTmp::new();
    let uri = homelab_uri();
    let bad_xml = tmp.dir.path().join("bad.xml");
    std::fs::write(
        &bad_xml,
        "<domain><devices><interface type='user'></devices>",
    )
    .unwrap();
    let not_dir = tmp.dir.path().join("file");
    std::fs::write(&not_dir, "").unwrap();
    // libvirtd down: a socket nobody listens on.
    let sock = format!(
        "qemu:///system?socket={}/none.sock",
        tmp.dir.path().display()
    );
    let on = |args: &[&str]| -> Vec<String> {
        ["-c", uri.as_str()]
            .iter()
            .chain(args)
            .map(|a| a.to_string())
            .collect()
    };
    let raw = |args: &[&str]| -> Vec<String> { args.iter().map(|a| a.to_string()).collect() };
    let cases: Vec<(Vec<String>, Says, Option<&std::path::Path>)> = vec![
        (
            on(&["attach", "ghost"]),
            Says::Text("no domain named"),
            None,
        ),
        (
            on(&["attach", "db", "--bridge", "br 0"]),
            Says::Text("not a valid interface name"),
            None,
        ),
        (
            on(&["attach", "db", "--mac", "52:54:00:zz:00:01"]),
            Says::Text("not a valid MAC"),
            None,
        ),
        (
            on(&["attach", "--xml", bad_xml.to_str().unwrap()]),
            Says::Text("not well-formed"),
            None,
        ),
        (on(&["attach", "media"]), Says::Text("--mac"), None),
        (on(&["attach", "db"]), Says::Text("backup"), Some(&not_dir)),
        (
            on(&["net-define", "--bridge", "br:0"]),
            Says::Text("not a valid interface name"),
            None,
        ),
        (
            on(&["detach", "db", "--mac", "nope"]),
            Says::Text("not a valid MAC"),
            None,
        ),
        (
            raw(&["-c", &sock, "-o", "json", "attach", "web"]),
            Says::Json(1, "connection"),
            None,
        ),
        // A test-driver file that cannot be read is a connection failure, said as one.
        (
            raw(&[
                "-c",
                "test:///nonexistent/node.xml",
                "-o=json",
                "attach",
                "web",
            ]),
            Says::Json(1, "connection"),
            None,
        ),
        // Usage errors exit 2, as JSON when JSON was asked for (-o=json too).
        (
            raw(&["-o", "json", "attach", "web", "--index", "0"]),
            Says::Json(2, "usage"),
            None,
        ),
        (
            raw(&["-o=json", "verify", "web", "--timeout", "-1"]),
            Says::Json(2, "usage"),
            None,
        ),
    ];
    for (args, says, state) in cases {
        let mut cmd = Command::new(vbridge_bin());
        cmd.args(&args);
        cmd.env("VBRIDGE_STATE_DIR", state.unwrap_or(tmp.dir.path()));
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("panicked"), "{args:?}: {text}");
        let err = String::from_utf8_lossy(&out.stderr);
        match says {
            Says::Text(says) => {
                assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
                assert!(
                    err.contains(says),
                    "{args:?} should say {says:?} on stderr: {text}"
                );
                assert!(out.stdout.is_empty(), "{args:?}: stdout: {text}");
            }
            Says::Json(code, kind) => {
                assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
                let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("{args:?}: JSON error: {e}: {text}"));
                assert_eq!(v["error"]["kind"], kind, "{args:?}: {v}");
                // libxml2 inside libvirt's test driver prints its own I/O warning for a
                // file that is not there; vbridge itself writes nothing to stderr.
                if !args.iter().any(|a| a.contains("nonexistent")) {
                    assert!(err.is_empty(), "{args:?}: stderr in JSON mode: {err}");
                }
            }
        }
    }
}

#[test]
fn cli_json_shapes() {
    let tmp = StateTmp::new();
    let uri = homelab_uri();
    let run = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(vbridge_bin())
            .arg("-c")
            .arg(&uri)
            .arg("-o")
            .arg("json")
            .args(args)
            .env("VBRIDGE_STATE_DIR", tmp.dir.path())
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let n = run(&["net-define"]);
    for k in [
        "name",
        "bridge",
        "changed",
        "active",
        "autostart",
        "persistent",
        "actions",
        "warnings",
    ] {
        assert!(n.get(k).is_some(), "net-define JSON lacks {k}: {n}");
    }
    let a = run(&["attach", "web", "db", "ghost"]);
    let doms = a["domains"].as_array().unwrap();
    assert_eq!(doms.len(), 3);
    for d in doms {
        for k in ["domain", "changed", "interfaces", "error"] {
            assert!(d.get(k).is_some(), "attach JSON lacks {k}: {d}");
        }
    }
    assert_eq!(doms[0]["interfaces"][0]["before"]["type"], "network");
    assert_eq!(doms[0]["interfaces"][0]["after"]["type"], "bridge");
    assert_eq!(doms[0]["interfaces"][0]["after"]["source"]["bridge"], "br0");
    assert!(doms[2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ghost"));
}

/// Missing permissions, for real: an unprivileged user whose backup folder is root's.
/// Refused with the reason and a hint; nothing is written.
#[test]
fn cli_missing_permissions() {
    if !common::require_root("cli_missing_permissions") {
        return;
    }
    let tmp = StateTmp::new();
    let state = tmp.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let bin = vbridge_bin();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(["-c", &homelab_uri(), "-o", "json", "attach", "db"])
        .env("VBRIDGE_STATE_DIR", &state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let err = &v["domains"][0]["error"];
    assert_eq!(err["kind"], "permission", "{v}");
    assert!(
        err["hint"].as_str().unwrap_or_default().contains("root"),
        "{v}"
    );
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
}

#[test]
fn undo_by_uuid_and_duplicate_names_are_one_vm() {
    let c = conn();
    let tmp = StateTmp::new();
    let uuid = "4a1c5a10-0000-4000-8000-00000000a002";
    let original = c.domain("db").unwrap().persistent_xml().unwrap();
    // Named twice and by UUID: one result, one backup, one define.
    let names: Vec<String> = vec!["db".into(), uuid.into(), "db".into()];
    let r = attach::attach(&c, &names, &opts(Selection::Auto), &tmp.state).unwrap();
    assert_eq!(r.domains.len(), 1, "{r:?}");
    assert!(r.domains[0].changed);
    assert_eq!(backups(&tmp.state, "db"), 1);
    // undo by UUID finds the backup filed under the name.
    let u = attach::undo(&c, uuid, &tmp.state, false).unwrap();
    assert!(u.changed, "{u:?}");
    assert_eq!(c.domain("db").unwrap().persistent_xml().unwrap(), original);
}

/// Several domains are found from one listing (persistent and transient listed at once),
/// one by a lookup: both ways give the same domain, running state and persistence, by name
/// or by UUID in either case, and a name neither knows gets libvirt's not-found.
#[test]
fn finding_many_domains_at_once_agrees_with_looking_each_up() {
    let c = conn();
    c.create_domain(
        "<domain type='test'><name>tr2</name><memory unit='MiB'>256</memory>\
         <os><type arch='x86_64'>hvm</type></os><devices>\
         <interface type='network'><mac address='52:54:00:3a:20:02'/>\
         <source network='default'/><model type='virtio'/></interface>\
         </devices></domain>",
    )
    .expect("the test driver creates transient domains");
    let names: Vec<String> = [
        "web",
        "4A1C5A10-0000-4000-8000-00000000A002",
        "ghost",
        "tr2",
        "nas",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let seen = |f: &vbridge::Result<vbridge::libvirt::Found>| {
        f.as_ref().map_err(|e| e.kind).map(|f| {
            (
                f.dom.name().to_string(),
                f.dom.is_running_at_lookup(),
                f.persistent
                    .unwrap_or_else(|| f.dom.is_persistent().unwrap()),
            )
        })
    };
    let together: Vec<_> = c.find_domains(&names).iter().map(seen).collect();
    let one_by_one: Vec<_> = names
        .iter()
        .map(|n| seen(&c.find_domains(std::slice::from_ref(n))[0]))
        .collect();
    assert_eq!(together, one_by_one);
    assert_eq!(
        together,
        vec![
            Ok(("web".to_string(), true, true)),
            Ok(("db".to_string(), false, true)),
            Err(ErrorKind::NotFound),
            Ok(("tr2".to_string(), true, false)),
            Ok(("nas".to_string(), false, true)),
        ]
    );
    // The listing said so: no round trip per domain to ask.
    assert!(c.find_domains(&names)[3].as_ref().unwrap().persistent == Some(false));

    // attach of several, one of them transient: that one is refused, the others go on.
    let tmp = StateTmp::new();
    let r = attach::attach(
        &c,
        &["tr2".into(), "db".into()],
        &opts(Selection::Auto),
        &tmp.state,
    )
    .unwrap();
    let e = r.domains[0].error.as_ref().expect("transient refused");
    assert!(e.message.contains("transient"), "{}", e.message);
    assert!(
        r.domains[1].changed && r.domains[1].error.is_none(),
        "{r:?}"
    );
}

#[test]
fn cli_output_details() {
    // -q keeps `attach --xml`'s document: it is the command's product.
    let doc = format!("{}/examples/web-domain.xml", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(vbridge_bin())
        .args(["-q", "attach", "--xml", &doc])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("<source bridge=\"br0\"/>"));
}

/// A transient VM (`virsh create`: the test driver's virDomainCreateXML) is not made
/// persistent behind the user's back: refused with the reason and the alternatives, nothing
/// defined; with `persist` it is rewritten, becomes persistent, and the report says so.
#[test]
fn transient_vm_is_made_persistent_only_with_persist() {
    let c = conn();
    let tmp = StateTmp::new();
    let dom = c
        .create_domain(
            "<domain type='test'><name>tr1</name><memory unit='MiB'>256</memory>\
             <os><type arch='x86_64'>hvm</type></os><devices>\
             <interface type='network'><mac address='52:54:00:3a:20:01'/>\
             <source network='default'/><model type='virtio'/></interface>\
             </devices></domain>",
        )
        .expect("the test driver creates transient domains");
    assert!(!dom.is_persistent().unwrap());
    let before = dom.persistent_xml().unwrap();

    for dry_run in [true, false] {
        let r = attach::attach(
            &c,
            &["tr1".into()],
            &AttachOptions {
                dry_run,
                ..opts(Selection::Auto)
            },
            &tmp.state,
        )
        .unwrap();
        let e = r.domains[0].error.as_ref().expect("refused");
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("transient"), "{}", e.message);
        let hint = e.hint.as_deref().unwrap();
        assert!(
            hint.contains("--hotplug") && hint.contains("--persist"),
            "{hint}"
        );
    }
    let dom = c.domain("tr1").unwrap();
    assert!(!dom.is_persistent().unwrap(), "defined although refused");
    assert_eq!(dom.persistent_xml().unwrap(), before);
    assert_eq!(backups(&tmp.state, "tr1"), 0);

    let r = attach::attach(
        &c,
        &["tr1".into()],
        &AttachOptions {
            persist: true,
            ..opts(Selection::Auto)
        },
        &tmp.state,
    )
    .unwrap();
    let d = &r.domains[0];
    assert!(d.error.is_none() && d.changed, "{d:?}");
    assert!(
        d.notes.iter().any(|n| n.contains("makes it persistent")),
        "{:?}",
        d.notes
    );
    assert!(c.domain("tr1").unwrap().is_persistent().unwrap());

    // The CLI flag reaches the library; a persistent VM needs no flag.
    let out = Command::new(vbridge_bin())
        .args([
            "-c",
            &homelab_uri(),
            "--dry-run",
            "attach",
            "db",
            "--persist",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// virbr0 belongs to the NAT network `default`: net-define on it is refused naming the
/// network and its forward mode, `--force` defines it with that warning, and attach
/// `--bridge virbr0` gets the same warning.
#[test]
fn a_bridge_libvirt_owns_is_refused_by_net_define_and_warned_about_by_attach() {
    let c = conn();
    let lan = NetDefine {
        name: "lan".into(),
        bridge: "virbr0".into(),
        ..NetDefine::default()
    };
    let err = network::define(&c, &lan, false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(
        err.message
            .contains("belongs to libvirt network default (forward mode nat)"),
        "{}",
        err.message
    );
    assert!(c.network("lan").unwrap().is_none());

    let forced = network::define(&c, &NetDefine { force: true, ..lan }, false).unwrap();
    assert!(forced.changed);
    assert!(
        forced
            .warnings
            .iter()
            .any(|w| w.contains("network default")),
        "{:?}",
        forced.warnings
    );

    let tmp = StateTmp::new();
    let r = attach::attach(
        &c,
        &["db".into()],
        &AttachOptions {
            bridge: br("virbr0"),
            dry_run: true,
            ..opts(Selection::Auto)
        },
        &tmp.state,
    )
    .unwrap();
    let notes = &r.domains[0].notes;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("virbr0 belongs to libvirt network default")),
        "{notes:?}"
    );
    // br0 belongs to no network: no such note.
    let r = attach::attach(
        &c,
        &["db".into()],
        &AttachOptions {
            dry_run: true,
            ..opts(Selection::Auto)
        },
        &tmp.state,
    )
    .unwrap();
    assert!(
        !r.domains[0].notes.iter().any(|n| n.contains("belongs to")),
        "{:?}",
        r.domains[0].notes
    );
}

#[test]
fn hotplug_onto_a_bridge_libvirt_owns_is_warned_about_and_its_hint_is_quoted() {
    let c = conn();
    let r = hotplug::hotplug_many(
        &c,
        &["web".into()],
        &br("virbr0"),
        None,
        true,
        &StateTmp::new().state,
    );
    let notes = &r.domains[0].notes;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("virbr0 belongs to libvirt network default")),
        "{notes:?}"
    );
    // br0 is no libvirt network's bridge: no such note.
    let r = hotplug::hotplug_many(
        &c,
        &["web".into()],
        &br("br0"),
        None,
        true,
        &StateTmp::new().state,
    );
    assert!(!r.domains[0]
        .notes
        .iter()
        .any(|n| n.contains("belongs to libvirt network")));
    // A MAC already used by a NIC elsewhere: the suggested command is pasteable.
    let taken = Mac::parse("52:54:00:3a:10:01").unwrap();
    let r = hotplug::hotplug_many(
        &c,
        &["web".into()],
        &br("br0"),
        Some(&taken),
        true,
        &StateTmp::new().state,
    );
    let hint = r.domains[0].error.as_ref().unwrap().hint.clone().unwrap();
    assert!(
        hint.contains("vbridge attach web --mac 52:54:00:3a:10:01 --bridge br0"),
        "{hint}"
    );
}

/// `attach --network NAME` (issue 11): the persistent rewrite and the hotplug put a NIC on a
/// libvirt network (type='network'), idempotently; a network libvirt does not have is
/// refused before anything changes; the name is checked where it enters.
#[test]
fn attach_and_hotplug_onto_a_libvirt_network() {
    use vbridge::attach::AttachRequest;
    use vbridge::domxml::{NicOptions, Target};
    let c = conn();
    let tmp = StateTmp::new();
    let onto = |net: &str, sel: Selection| AttachRequest {
        target: Target::Network(net.into()),
        selection: sel,
        nic: NicOptions::default(),
        live: None,
        dry_run: false,
        persist: false,
        progress: Default::default(),
    };
    // nas: its br0 NIC onto the NAT network `default`.
    let nas = || c.domain("nas").unwrap().persistent_xml().unwrap();
    let r = attach::attach_request(
        &c,
        &["nas".into()],
        &onto("default", Selection::Auto),
        &tmp.state,
        None,
    )
    .unwrap();
    assert!(r.ok() && r.domains[0].changed, "{r:?}");
    let nics = domxml::nics(&nas()).unwrap();
    assert_eq!(nics[0].kind, "network", "{nics:?}");
    assert_eq!(
        nics[0].source.get("network").map(String::as_str),
        Some("default")
    );
    assert_eq!(nics[0].model.as_deref(), Some("virtio"));
    assert_eq!(backups(&tmp.state, "nas"), 1);
    let again = attach::attach_request(
        &c,
        &["nas".into()],
        &onto("default", Selection::Auto),
        &tmp.state,
        None,
    )
    .unwrap();
    assert!(again.ok() && !again.domains[0].changed, "{again:?}");
    // A network libvirt does not have: refused, nothing changed, no backup.
    let before = nas();
    let r = attach::attach_request(
        &c,
        &["nas".into()],
        &onto("nope", Selection::Auto),
        &tmp.state,
        None,
    );
    let e = r.expect_err("a missing network is refused");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("no network nope"), "{}", e.message);
    assert_eq!(nas(), before);
    assert_eq!(backups(&tmp.state, "nas"), 1);
    // Hotplug onto the network (the test driver cannot attach devices: a dry run shows the
    // type='network' NIC that would be added to the shut-off VM's config).
    let m = mac("52:54:00:3a:10:44");
    let target = Target::Network("default".into());
    let opts = NicOptions::default();
    let h = hotplug::hotplug_with(
        &c,
        "media",
        &target,
        Some(&m),
        &opts,
        true,
        &StateTmp::new().state,
    )
    .unwrap();
    assert!(h.changed, "{h:?}");
    let diff = h.diff.as_deref().unwrap_or_default();
    assert!(
        diff.contains("<interface type='network'>") && diff.contains("<source network='default'/>"),
        "{diff}"
    );
    let added = h.interfaces[0].after.as_ref().unwrap();
    assert_eq!(
        (
            added.kind.as_str(),
            added.source.get("network").map(String::as_str)
        ),
        ("network", Some("default"))
    );
    // A NIC with that MAC already on the network: nothing to do.
    let h = hotplug::hotplug_with(
        &c,
        "db",
        &target,
        Some(&mac("52:54:00:3a:10:02")),
        &opts,
        false,
        &StateTmp::new().state,
    )
    .unwrap();
    assert!(!h.changed, "{h:?}");
    // A MAC on a NIC that is not on the network is refused with a hint naming --network.
    let e = hotplug::hotplug_with(
        &c,
        "media",
        &target,
        Some(&mac("52:54:00:3a:10:03")),
        &opts,
        false,
        &StateTmp::new().state,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(
        e.hint
            .as_deref()
            .unwrap_or("")
            .contains("--network default"),
        "{e:?}"
    );
    let e = hotplug::hotplug_with(
        &c,
        "media",
        &Target::Network("nope".into()),
        None,
        &opts,
        false,
        &StateTmp::new().state,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}");
}

/// The CLI's `--network`: exclusive with `--bridge` and `--direct`, its name checked before
/// libvirt is asked, and `--xml` rewrites onto it without libvirt.
#[test]
fn cli_network_flag() {
    let state = StateTmp::new();
    let run = |args: &[&str]| {
        let out = Command::new(vbridge_bin())
            .args(args)
            .env("VBRIDGE_STATE_DIR", state.dir.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let uri = homelab_uri();
    let (code, _, err) = run(&[
        "-c",
        &uri,
        "attach",
        "nas",
        "--network",
        "default",
        "--bridge",
        "br1",
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&[
        "-c",
        &uri,
        "attach",
        "nas",
        "--network",
        "default",
        "--direct",
        "eth0",
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["-c", &uri, "attach", "nas", "--network", "a/b"]);
    assert_ne!(code, 0);
    assert!(err.contains("not a valid network name"), "{err}");
    let (code, _, err) = run(&["-c", &uri, "attach", "nas", "--network", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("no network nope"), "{err}");
    let (code, out, err) = run(&[
        "-c",
        &uri,
        "--dry-run",
        "attach",
        "nas",
        "--network",
        "default",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("network default"), "{out}");
    let doc = std::env::temp_dir().join(format!("vbridge-net-{}.xml", std::process::id()));
    std::fs::write(
        &doc,
        "<domain><devices>\n  <interface type='bridge'>\n    <source bridge='br0'/>\n    <model type='virtio'/>\n  </interface>\n</devices></domain>\n",
    )
    .unwrap();
    let (code, out, err) = run(&["attach", "--xml", doc.to_str().unwrap(), "--network", "lan"]);
    let _ = std::fs::remove_file(&doc);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("<interface type='network'>\n    <source network='lan'/>"),
        "{out}"
    );
}
