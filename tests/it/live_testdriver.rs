//! Issue 9 on libvirt's test driver: `attach --live` planned, dry-run and rolled back, the
//! NIC options (`--mtu`, `--queues`, `--direct`), and every bad value refused with one line
//! before anything changes. The test driver has no `virDomainUpdateDeviceFlags`, which makes
//! it the place to prove that a live step libvirt refuses leaves the definition as it was.

use crate::common::{vbridge_bin, StateTmp};
use std::process::Command;
use std::time::Duration;
use vbridge::attach::live::LiveOptions;
use vbridge::attach::{self, AttachRequest};
use vbridge::domxml::{self, NicOptions, Selection, Target};
use vbridge::libvirt::Conn;
use vbridge::validate::{BridgeName, DirectMode, Mtu, Queues};

fn homelab_uri() -> String {
    format!("test://{}/examples/homelab.xml", env!("CARGO_MANIFEST_DIR"))
}

fn conn() -> Conn {
    vbridge::libvirt::init();
    Conn::open(Some(&homelab_uri())).expect("test driver opens")
}

fn br0() -> Target {
    Target::Bridge(BridgeName::parse("br0").unwrap())
}

fn request(live: Option<LiveOptions>) -> AttachRequest {
    AttachRequest {
        target: br0(),
        selection: Selection::Auto,
        nic: NicOptions::default(),
        live,
        dry_run: false,
        persist: false,
        progress: Default::default(),
    }
}

/// `vbridge -c URI -o json ARGS` with its own state dir: exit code and stdout as JSON.
fn cli(state: &std::path::Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(vbridge_bin())
        .args(["-c", &homelab_uri(), "-o", "json"])
        .args(args)
        .env("VBRIDGE_STATE_DIR", state)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

#[test]
fn a_live_step_libvirt_refuses_puts_the_definition_back() {
    let c = conn();
    let tmp = StateTmp::new();
    let before = c.domain("web").unwrap().persistent_xml().unwrap();
    let live = LiveOptions {
        flap: Duration::ZERO,
        verify_within: None,
    };
    let r = attach::attach_request(&c, &["web".into()], &request(Some(live)), &tmp.state, None)
        .unwrap();
    let d = &r.domains[0];
    let e = d
        .error
        .as_ref()
        .expect("the test driver cannot update a device");
    assert!(
        e.message.contains("virDomainUpdateDeviceFlags"),
        "{}",
        e.message
    );
    assert!(
        e.hint.as_deref().unwrap_or_default().contains("undone"),
        "{e:?}"
    );
    assert_eq!(c.domain("web").unwrap().persistent_xml().unwrap(), before);
    // The backup of a change that was undone would mislead `undo`: it is gone (the
    // definition that was briefly there stays beside it as `*.xml.pre-undo`).
    assert_eq!(tmp.state.latest_backup("web").unwrap(), None);
}

/// Several VMs in one call: each its own result; the one libvirt refuses does not stop the
/// shut-off one, whose definition changes.
#[test]
fn one_failing_vm_does_not_stop_the_others() {
    let c = conn();
    let tmp = StateTmp::new();
    let r = attach::attach_request(
        &c,
        &["web".into(), "db".into()],
        &request(Some(LiveOptions::default())),
        &tmp.state,
        None,
    )
    .unwrap();
    assert!(r.domains[0].error.is_some(), "{r:?}");
    assert!(
        r.domains[1].error.is_none() && r.domains[1].changed,
        "{r:?}"
    );
    assert!(!r.ok());
    let db = domxml::nics(&c.domain("db").unwrap().persistent_xml().unwrap()).unwrap();
    assert!(db[0].is_on_bridge("br0"));
}

#[test]
fn dry_run_shows_the_live_and_the_persistent_change() {
    let tmp = StateTmp::new();
    let (code, r) = cli(tmp.dir.path(), &["-n", "attach", "web", "--live"]);
    assert_eq!(code, Some(0), "{r}");
    let d = &r["domains"][0];
    assert_eq!(d["changed"], true);
    assert_eq!(d["live"]["moved"][0]["from"], "network default", "{r}");
    assert_eq!(d["live"]["moved"][0]["to"], "bridge br0", "{r}");
    assert_eq!(d["live"]["flap_ms"], 1000);
    let diff = d["diff"].as_str().unwrap();
    for part in [
        "+++ b/web.xml",
        "# move web's NIC 52:54:00:3a:10:01 from network default to bridge br0, link down (live)",
        "+++ b/web.live.xml",
        "# hold web's NIC link down for 1000 ms",
        "+      <link state='up'/>",
    ] {
        assert!(diff.contains(part), "{part:?} missing from:\n{diff}");
    }
    assert!(d["notes"].to_string().contains("stays model e1000"), "{r}");
    // A shut-off VM: only its definition changes, --live or not.
    let (_, r) = cli(tmp.dir.path(), &["-n", "attach", "db", "--live"]);
    assert!(r["domains"][0]["live"].is_null(), "{r}");
}

#[test]
fn nic_options_and_macvtap_in_the_definition() {
    let c = conn();
    let tmp = StateTmp::new();
    let req = AttachRequest {
        nic: NicOptions {
            mtu: Some(Mtu::new(9000).unwrap()),
            queues: Some(Queues::new(2).unwrap()),
        },
        ..request(None)
    };
    let r = attach::attach_request(&c, &["db".into()], &req, &tmp.state, None).unwrap();
    assert!(r.ok(), "{r:?}");
    let nic = &domxml::nics(&c.domain("db").unwrap().persistent_xml().unwrap()).unwrap()[0];
    assert_eq!((nic.mtu, nic.queues), (Some(9000), Some(2)));
    // Asked again: nothing to change.
    let again = attach::attach_request(&c, &["db".into()], &req, &tmp.state, None).unwrap();
    assert!(!again.domains[0].changed, "{again:?}");
    assert!(nic.is_on_bridge("br0"));
    // More queues than vCPUs: refused, nothing written.
    let before = c.domain("db").unwrap().persistent_xml().unwrap();
    let req = AttachRequest {
        nic: NicOptions {
            mtu: None,
            queues: Some(Queues::new(4).unwrap()),
        },
        ..request(None)
    };
    let r = attach::attach_request(&c, &["db".into()], &req, &tmp.state, None).unwrap();
    let e = r.domains[0].error.as_ref().unwrap();
    assert!(e.message.contains("vCPU"), "{e:?}");
    assert_eq!(c.domain("db").unwrap().persistent_xml().unwrap(), before);
    // macvtap: the test driver's host is not this one, so the NIC is not looked up.
    let req = AttachRequest {
        target: Target::Direct {
            dev: BridgeName::parse("eno1").unwrap(),
            mode: DirectMode::Vepa,
        },
        ..request(None)
    };
    let r = attach::attach_request(&c, &["db".into()], &req, &tmp.state, None).unwrap();
    assert!(r.ok(), "{r:?}");
    let nic = &domxml::nics(&c.domain("db").unwrap().persistent_xml().unwrap()).unwrap()[0];
    assert_eq!(nic.kind, "direct");
    assert_eq!(nic.source.get("dev").map(String::as_str), Some("eno1"));
    assert_eq!(nic.source.get("mode").map(String::as_str), Some("vepa"));
    assert_eq!(nic.mtu, Some(9000), "the earlier MTU stays");
}

#[test]
fn hotplug_carries_mtu_and_queues() {
    let tmp = StateTmp::new();
    let (code, r) = cli(
        tmp.dir.path(),
        &[
            "-n",
            "attach",
            "web",
            "--hotplug",
            "--mtu",
            "9000",
            "--queues",
            "1",
        ],
    );
    assert_eq!(code, Some(0), "{r}");
    let diff = r["domains"][0]["diff"].as_str().unwrap();
    // One queue is the default: no <driver> is written for it.
    assert!(
        diff.contains("<mtu size='9000'/>") && !diff.contains("<driver"),
        "{diff}"
    );
    let (code, r) = cli(
        tmp.dir.path(),
        &["attach", "web", "--hotplug", "--queues", "2"],
    );
    assert_eq!(code, Some(1), "{r}");
    assert!(r.to_string().contains("vCPU"), "{r}");
}

/// Each bad value: exit 1, one line saying why, as JSON here; nothing looked up or changed.
#[test]
fn bad_values_are_refused_with_one_line() {
    let tmp = StateTmp::new();
    let cases: &[(&[&str], &str)] = &[
        (&["attach", "web", "--mtu", "67"], "out of range"),
        (&["attach", "web", "--mtu", "65536"], "out of range"),
        (&["attach", "web", "--mtu", "jumbo"], "not a number"),
        (&["attach", "web", "--queues", "0"], "at least one"),
        (
            &["attach", "web", "--direct", "eth0", "--mode", "hairpin"],
            "unknown macvtap mode",
        ),
        (
            &["attach", "web", "--direct", "eth/0"],
            "not a valid interface name",
        ),
        (
            &["attach", "ghost-vm", "--live", "--mtu", "12"],
            "out of range",
        ),
    ];
    for (args, says) in cases {
        let (code, r) = cli(tmp.dir.path(), args);
        assert_eq!(code, Some(1), "{args:?}: {r}");
        let msg = r["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{args:?} should say {says:?}: {r}");
        assert!(!msg.contains('\n'), "{args:?}: one line: {msg}");
        assert_eq!(r["error"]["kind"], "invalid-input", "{r}");
    }
    // Usage errors (exit 2): options that need --live or --direct, or conflict.
    for args in [
        &["attach", "web", "--flap-ms", "10"][..],
        &["attach", "web", "--no-verify"],
        &["attach", "web", "--mode", "vepa"],
        &["attach", "web", "--live", "--hotplug"],
        &[
            "attach",
            "web",
            "--live",
            "--no-verify",
            "--verify-within",
            "3",
        ],
        &["attach", "web", "--direct", "eth0", "--bridge", "br1"],
    ] {
        let (code, r) = cli(tmp.dir.path(), args);
        assert_eq!(code, Some(2), "{args:?}: {r}");
        assert_eq!(r["error"]["kind"], "usage", "{args:?}: {r}");
    }
}

/// `--live` on a transient VM moves only the running NIC: its "persistent" XML is the live
/// one, and defining it would make the VM persistent behind the user's back.
#[test]
fn live_on_a_transient_vm_plans_the_move_and_no_definition() {
    let c = conn();
    let tmp = StateTmp::new();
    c.create_domain(
        "<domain type='test'><name>tr2</name><memory unit='MiB'>256</memory>\
         <os><type arch='x86_64'>hvm</type></os><devices>\
         <interface type='network'><mac address='52:54:00:3a:20:02'/>\
         <source network='default'/><model type='virtio'/></interface>\
         </devices></domain>",
    )
    .expect("the test driver creates transient domains");
    let req = AttachRequest {
        dry_run: true,
        ..request(Some(LiveOptions::default()))
    };
    let r = attach::attach_request(&c, &["tr2".into()], &req, &tmp.state, None).unwrap();
    let d = &r.domains[0];
    assert!(d.error.is_none() && d.changed, "{d:?}");
    assert!(
        d.notes.iter().any(|n| n.contains("tr2 is transient")),
        "{:?}",
        d.notes
    );
    let diff = d.diff.as_deref().unwrap();
    assert!(diff.contains("+++ b/tr2.live.xml"), "{diff}");
    assert!(
        !diff.contains("+++ b/tr2.xml"),
        "a definition was planned:\n{diff}"
    );
    // Without --live the persistent rewrite is refused, as before.
    let req = AttachRequest {
        dry_run: true,
        ..request(None)
    };
    let r = attach::attach_request(&c, &["tr2".into()], &req, &tmp.state, None).unwrap();
    assert!(r.domains[0].error.is_some(), "{r:?}");
}
