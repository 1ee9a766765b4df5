//! host-bridge and tap against the real kernel, inside namespaces the tests create: a "host"
//! namespace whose veth `eth1` plays the physical NIC (address, default route), and a
//! "gateway" namespace at the other end. Nothing is created in the root namespace.

use crate::common::{self, Netns};
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// The host and its LAN gateway, on 10.88.N.0/24.
struct Lab {
    host: Netns,
    /// Kept alive for the lab's lifetime; its Drop deletes the namespace.
    _gw: Netns,
    net: u8,
}

impl Lab {
    fn new(net: u8) -> Lab {
        let host = Netns::new("vbh");
        let gw = Netns::new("vbg");
        host.ip(&[
            "link", "add", "eth1", "type", "veth", "peer", "name", "gw0", "netns", &gw.name,
        ]);
        host.ip(&["addr", "add", &format!("10.88.{net}.2/24"), "dev", "eth1"]);
        host.ip(&["link", "set", "eth1", "up"]);
        gw.ip(&["addr", "add", &format!("10.88.{net}.1/24"), "dev", "gw0"]);
        gw.ip(&["link", "set", "gw0", "up"]);
        host.ip(&["route", "add", "default", "via", &format!("10.88.{net}.1")]);
        host.ip(&[
            "route",
            "add",
            &format!("10.{net}.0.0/16"),
            "via",
            &format!("10.88.{net}.254"),
            "metric",
            "50",
        ]);
        Lab { host, _gw: gw, net }
    }

    fn gateway(&self) -> String {
        format!("10.88.{}.1", self.net)
    }

    /// Links (name, mac, master, up), addresses and routes of the host namespace.
    fn snapshot(&self) -> Value {
        net_snapshot(&self.host)
    }

    /// The IPv4 and global IPv6 addresses of `dev` as `snapshot` shows them, in order.
    fn addr_infos(&self, dev: &str) -> Vec<Value> {
        let snap = self.snapshot();
        let l = snap["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == dev)
            .unwrap_or_else(|| panic!("{dev} missing"))
            .clone();
        l["addr"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["scope"] != "link")
            .cloned()
            .collect()
    }

    fn addrs_of(&self, dev: &str) -> String {
        self.host.ip(&["-br", "-4", "addr", "show", "dev", dev])
    }

    fn sys(&self, path: &str) -> String {
        let out = self.host.exec("cat", &[path]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Links (name, mac, master, up), addresses and routes of a namespace, in a form that
/// compares equal exactly when nothing that matters differs.
pub(crate) fn net_snapshot(ns: &Netns) -> Value {
    let j = |args: &[&str]| -> Value {
        let mut v = vec!["-j"];
        v.extend_from_slice(args);
        serde_json::from_str(&ns.ip(&v)).unwrap()
    };
    let links: Vec<Value> = j(&["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let up = l["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "UP"));
            serde_json::json!({"ifname": l["ifname"], "address": l["address"],
                "master": l["master"], "up": up})
        })
        .collect();
    let addrs: Vec<Value> = j(&["addr", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let infos: Vec<Value> = l["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    serde_json::json!({"family": a["family"], "local": a["local"],
                        "prefixlen": a["prefixlen"], "broadcast": a["broadcast"],
                        "scope": a["scope"], "label": a["label"],
                        "secondary": a["secondary"], "dynamic": a["dynamic"],
                        "valid_life_time": a["valid_life_time"],
                        "preferred_life_time": a["preferred_life_time"]})
                })
                .collect();
            serde_json::json!({"ifname": l["ifname"], "addr": infos})
        })
        .collect();
    serde_json::json!({
        "links": links,
        "addrs": addrs,
        "routes4": j(&["-4", "route", "show", "table", "main"]),
        "routes6": j(&["-6", "route", "show", "table", "main"]),
    })
}

/// A lab on 10.88.`net`.0/24 and a private state directory for `test`; None (the test is
/// skipped) unless running as root.
fn lab_for(test: &str, net: u8) -> Option<(Lab, tempfile::TempDir)> {
    if !common::require_root(test) {
        return None;
    }
    Some((Lab::new(net), tempfile::tempdir().unwrap()))
}

/// The user's own netplan file under `root`, with `text`; its path.
fn user_netplan(root: &Path, text: &str) -> std::path::PathBuf {
    let user = root.join("etc/netplan/50-cloud-init.yaml");
    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    std::fs::write(&user, text).unwrap();
    user
}

/// Lifetimes count down: take them out of a snapshot, leaving the rest to compare exactly.
fn split_lifetimes(v: &Value, out: &mut Vec<(String, u64)>) -> Value {
    match v {
        Value::Object(m) => {
            let mut o = serde_json::Map::new();
            for (k, x) in m {
                if k.ends_with("_life_time") {
                    let secs = x.as_u64().unwrap_or(u64::MAX);
                    out.push((format!("{k} of {}", m["local"]), secs));
                } else {
                    o.insert(k.clone(), split_lifetimes(x, out));
                }
            }
            Value::Object(o)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| split_lifetimes(x, out)).collect()),
        x => x.clone(),
    }
}

/// Two snapshots are the same: equal but for lifetimes, and those within a few seconds
/// (a forever lifetime only matches forever).
pub(crate) fn assert_same(now: &Value, before: &Value, what: &str) {
    let (mut ln, mut lb) = (Vec::new(), Vec::new());
    let (n, b) = (
        split_lifetimes(now, &mut ln),
        split_lifetimes(before, &mut lb),
    );
    if n != b {
        // The whole of both is long; what differs is what a person needs.
        let (b, n) = (
            serde_json::to_string_pretty(&b).unwrap(),
            serde_json::to_string_pretty(&n).unwrap(),
        );
        let diff = similar::TextDiff::from_lines(&b, &n)
            .unified_diff()
            .context_radius(6)
            .header("before", "now")
            .to_string();
        panic!("{what}: the namespace differs (lifetimes left out)\n{diff}");
    }
    assert_eq!(ln.len(), lb.len(), "{what}");
    for ((kn, x), (kb, y)) in ln.iter().zip(&lb) {
        assert_eq!(kn, kb, "{what}");
        let forever = 4294967295;
        assert_eq!(*x == forever, *y == forever, "{what}: {kn} {x} vs {y}");
        assert!(x.abs_diff(*y) <= 5, "{what}: {kn} is {x} s, was {y} s");
    }
}

fn json_of(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Run vbridge in the host namespace with a private state directory.
fn vbridge_in(lab: &Lab, state: &Path, args: &[&str]) -> Output {
    let env = format!("VBRIDGE_STATE_DIR={}", state.display());
    let bin = common::vbridge_bin();
    let mut v = vec![env.as_str(), bin.to_str().unwrap()];
    v.extend_from_slice(args);
    lab.host.exec("env", &v)
}

/// The command succeeded; its stderr is the message if not.
#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The command was refused (exit 1); returns its stderr for further checks.
#[track_caller]
fn assert_refused(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

/// `vbridge -o json host-bridge eth1 --live EXTRA…` in the host namespace.
fn live_json(lab: &Lab, state: &Path, extra: &[&str]) -> Output {
    let mut v = vec!["-o", "json", "host-bridge", "eth1", "--live"];
    v.extend_from_slice(extra);
    vbridge_in(lab, state, &v)
}

/// The command succeeded; what it printed as JSON.
#[track_caller]
fn ok_json(out: &Output) -> Value {
    assert_ok(out);
    json_of(out)
}

/// `live_json` with a probe of `target` nobody answers: refused and rolled back after 1 s.
fn rolled_back(lab: &Lab, state: &Path, target: &str) -> Value {
    let out = live_json(lab, state, &["--probe", target, "--rollback-after", "1"]);
    assert_refused(&out);
    let j = json_of(&out);
    assert_eq!(j["rolled_back"], true);
    j
}

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        // PID 1 here reaps orphans only every ~2 s: a zombie has finished.
        Ok(s) => s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
    }
}

/// Wait for a detached reverter we started to finish; kill it (by its pid) if it overstays.
fn wait_gone(pid: u32, within: Duration) {
    let t = Instant::now();
    while !process_gone(pid) {
        if t.elapsed() > within {
            // SAFETY: kill on a pid this test started and recorded; no memory involved.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("reverter {pid} still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn live_moves_the_nic_onto_the_bridge_and_is_idempotent() {
    let Some((lab, state)) = lab_for("live_moves_the_nic_onto_the_bridge_and_is_idempotent", 11)
    else {
        return;
    };
    let mac = lab.sys("/sys/class/net/eth1/address");
    // --dry-run shows the plan and touches nothing.
    let untouched = lab.snapshot();
    let out = vbridge_in(&lab, state.path(), &["-n", "host-bridge", "eth1", "--live"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would change") && text.contains("set eth1 master br0"),
        "{text}"
    );
    assert_same(&lab.snapshot(), &untouched, "a dry run changed something");
    let out = live_json(&lab, state.path(), &["--rollback-after", "3"]);
    let j = ok_json(&out);
    assert_eq!(j["changed"], true);
    assert_eq!(j["mode"], "live");
    assert_eq!(j["rolled_back"], false);
    assert_eq!(j["pending"], false);
    assert_eq!(j["bridge"], "br0");
    assert_eq!(j["nic"], "eth1");
    assert_eq!(j["addresses"], serde_json::json!(["10.88.11.2/24"]));
    assert_eq!(j["probe"]["answered"], true);
    assert_eq!(j["probe"]["target"], lab.gateway());
    eprintln!(
        "live apply+probe: {} ms (probe {} ms)",
        j["apply_ms"], j["probe"]["ms"]
    );

    // Address, default route and the static route moved; br0 has the NIC's MAC.
    assert!(lab.addrs_of("br0").contains("10.88.11.2/24"));
    assert!(!lab.addrs_of("eth1").contains("10.88.11.2"));
    let routes = lab.host.ip(&["route", "show"]);
    assert!(
        routes.contains("default via 10.88.11.1 dev br0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.11.0.0/16 via 10.88.11.254 dev br0 metric 50"),
        "{routes}"
    );
    assert_eq!(lab.sys("/sys/class/net/br0/address"), mac);
    assert!(lab
        .sys("/sys/class/net/eth1/master/uevent")
        .contains("INTERFACE=br0"));
    assert_eq!(lab.sys("/sys/class/net/br0/bridge/stp_state"), "0");
    assert_eq!(lab.sys("/sys/class/net/br0/bridge/forward_delay"), "0");
    // The gateway answered through br0: its neighbour entry lives there.
    let neigh = lab.host.ip(&["neigh", "show", "dev", "br0"]);
    assert!(neigh.contains("10.88.11.1"), "{neigh}");

    // A second run changes nothing.
    let before = lab.snapshot();
    let out = live_json(&lab, state.path(), &[]);
    assert!(out.status.success());
    let j = json_of(&out);
    assert_eq!(j["changed"], false);
    assert_eq!(j["steps"], serde_json::json!([]));
    assert_same(&lab.snapshot(), &before, "a second run changed something");
}

#[test]
fn ipv6_addresses_move_and_the_probe_speaks_icmpv6() {
    let Some((lab, state)) = lab_for("ipv6_addresses_move_and_the_probe_speaks_icmpv6", 16) else {
        return;
    };
    lab.host
        .ip(&["addr", "add", "fd88:16::2/64", "dev", "eth1", "nodad"]);
    lab._gw
        .ip(&["addr", "add", "fd88:16::1/64", "dev", "gw0", "nodad"]);
    let out = live_json(&lab, state.path(), &["--probe", "fd88:16::1"]);
    let j = ok_json(&out);
    assert_eq!(j["probe"]["answered"], true, "{j}");
    let v6 = lab.host.ip(&["-6", "addr", "show", "dev", "br0"]);
    assert!(v6.contains("fd88:16::2/64"), "{v6}");
    // A v6 target that does not answer rolls everything back, v6 included.
    let lab = Lab::new(17);
    lab.host
        .ip(&["addr", "add", "fd88:17::2/64", "dev", "eth1", "nodad"]);
    let before2 = lab.snapshot();
    rolled_back(&lab, state.path(), "fd88:17::99");
    assert_same(&lab.snapshot(), &before2, "v6 rollback not exact");
}

#[test]
fn unanswered_probe_rolls_back_exactly() {
    let Some((lab, state)) = lab_for("unanswered_probe_rolls_back_exactly", 12) else {
        return;
    };
    let before = lab.snapshot();
    let t = Instant::now();
    let j = rolled_back(&lab, state.path(), "10.88.12.99");
    let took = t.elapsed();
    assert_eq!(j["changed"], false);
    assert_eq!(j["probe"]["answered"], false);
    eprintln!(
        "rollback: probe gave up after {} ms, undo took {} ms, command {:?}",
        j["probe"]["ms"], j["rollback_ms"], took
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_same(&lab.snapshot(), &before, "state differs after the rollback");

    // The text form says so too, on stderr: a rollback is the command failing.
    let out = vbridge_in(
        &lab,
        state.path(),
        &[
            "host-bridge",
            "eth1",
            "--live",
            "--probe",
            "10.88.12.99",
            "--rollback-after",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rolled back"));
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_same(
        &lab.snapshot(),
        &before,
        "state differs after the second rollback",
    );
}

/// eth1 gets a secondary, a labelled secondary and a leased (finite lifetime) secondary
/// besides its primary; `promote` sets net.ipv4.conf.eth1.promote_secondaries (inside the
/// lab namespace only).
fn many_addresses(net: u8, promote: bool) -> Lab {
    let lab = Lab::new(net);
    if promote {
        let key = "net.ipv4.conf.eth1.promote_secondaries=1";
        let out = lab.host.exec("sysctl", &["-w", key]);
        assert_ok(&out);
    }
    let a = |cidr: String, extra: &[&str]| {
        let mut v = vec!["addr", "add", cidr.as_str(), "dev", "eth1"];
        v.extend_from_slice(extra);
        lab.host.ip(&v);
    };
    a(format!("10.88.{net}.3/24"), &[]);
    a(format!("10.88.{net}.4/24"), &["label", "eth1:lab"]);
    a(
        format!("10.88.{net}.5/24"),
        &["valid_lft", "3000", "preferred_lft", "2000"],
    );
    let infos = lab.addr_infos("eth1");
    assert_eq!(infos.len(), 4, "{infos:?}");
    assert_eq!(infos[3]["dynamic"], true, "{infos:?}");
    lab
}

fn live_keeps_every_address_exactly(net: u8, promote: bool) {
    // A probe nobody answers: rolled back to exactly the previous state.
    let lab = many_addresses(net, promote);
    let state = tempfile::tempdir().unwrap();
    let before = lab.snapshot();
    let eth1 = lab.addr_infos("eth1");
    rolled_back(&lab, state.path(), &format!("10.88.{net}.99"));
    assert_same(
        &lab.snapshot(),
        &before,
        "the rollback did not restore exactly",
    );

    // Answered: br0 has the same addresses in the same order, secondaries, labels (renamed),
    // lifetimes; eth1 has none left.
    let out = live_json(&lab, state.path(), &[]);
    let j = ok_json(&out);
    assert_eq!(j["changed"], true);
    let notes = j["notes"].to_string();
    assert!(notes.contains("no DHCP client"), "{notes}");
    let want: Vec<Value> = eth1
        .iter()
        .map(|a| {
            let mut a = a.clone();
            if a["label"] == "eth1:lab" {
                a["label"] = "br0:lab".into();
            } else if a["label"] == "eth1" {
                a["label"] = "br0".into();
            }
            a
        })
        .collect();
    assert_same(
        &Value::Array(lab.addr_infos("br0")),
        &Value::Array(want),
        "br0 did not get eth1's addresses as they were",
    );
    assert!(lab.addr_infos("eth1").is_empty());
}

#[test]
fn live_keeps_secondaries_labels_and_lifetimes() {
    if !common::require_root("live_keeps_secondaries_labels_and_lifetimes") {
        return;
    }
    live_keeps_every_address_exactly(18, false);
}

#[test]
fn live_keeps_secondaries_with_promote_secondaries() {
    if !common::require_root("live_keeps_secondaries_with_promote_secondaries") {
        return;
    }
    live_keeps_every_address_exactly(19, true);
}

#[test]
fn confirm_window_reverts_unless_confirmed() {
    let Some((lab, state)) = lab_for("confirm_window_reverts_unless_confirmed", 13) else {
        return;
    };
    let before = lab.snapshot();

    // Not confirmed: reverted by itself.
    let t = Instant::now();
    let out = live_json(&lab, state.path(), &["--confirm-within", "1"]);
    assert_ok(&out);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "did not return at once"
    );
    let j = json_of(&out);
    assert_eq!(j["pending"], true);
    let pid = j["reverter_pid"].as_u64().unwrap() as u32;
    assert!(lab.addrs_of("br0").contains("10.88.13.2/24"));
    assert!(state.path().join("pending-host-bridge.json").exists());
    wait_for("the revert", Duration::from_secs(6), || {
        lab.host
            .ip(&["link", "show"])
            .lines()
            .all(|l| !l.contains(" br0:"))
    });
    wait_gone(pid, Duration::from_secs(5));
    assert_same(&lab.snapshot(), &before, "not restored exactly");
    assert!(!state.path().join("pending-host-bridge.json").exists());
    assert!(state.path().join("last-revert-host-bridge.json").exists());

    // Confirmed (as from a fresh connection: a separate process): kept.
    let out = live_json(&lab, state.path(), &["--confirm-within", "2"]);
    assert!(out.status.success());
    let pid = json_of(&out)["reverter_pid"].as_u64().unwrap() as u32;
    let out = vbridge_in(
        &lab,
        state.path(),
        &["-o", "json", "host-bridge", "--confirm"],
    );
    assert_ok(&out);
    assert_eq!(json_of(&out)["confirmed"], true);
    wait_gone(pid, Duration::from_secs(6));
    assert!(lab.addrs_of("br0").contains("10.88.13.2/24"));
    assert!(lab
        .host
        .ip(&["route"])
        .contains("default via 10.88.13.1 dev br0"));

    // Nothing left to confirm.
    let out = vbridge_in(&lab, state.path(), &["host-bridge", "--confirm"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn refusals_name_the_reason() {
    let Some((lab, state)) = lab_for("refusals_name_the_reason", 14) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    lab.host.ip(&["link", "add", "brx", "type", "bridge"]);
    lab.host
        .ip(&["link", "add", "v1", "type", "veth", "peer", "name", "v2"]);
    lab.host.ip(&["link", "set", "v1", "master", "brx"]);
    let before = lab.snapshot();
    let cases: &[(&[&str], &str)] = &[
        (&["host-bridge", "eth9", "--live"], "does not exist"),
        (&["host-bridge", "v1", "--live"], "already a port of brx"),
        (
            &["host-bridge", "eth1", "--live", "--bridge", "br/0"],
            "not a valid interface name",
        ),
        (
            &["host-bridge", "eth1", "--live", "--bridge", "v2"],
            "not a bridge",
        ),
        (
            &[
                "host-bridge",
                "eth1",
                "--netplan",
                "--root-dir",
                r,
                "--address",
                "10.0.0.300/24",
            ],
            "not a valid address",
        ),
        (
            &[
                "host-bridge",
                "eth1",
                "--netplan",
                "--root-dir",
                r,
                "--address",
                "10.0.0.3",
            ],
            "PREFIX is missing",
        ),
        (
            &[
                "host-bridge",
                "eth1",
                "--netplan",
                "--root-dir",
                r,
                "--address",
                "10.0.0.3/24",
                "--gateway",
                "abc",
            ],
            "not a valid gateway",
        ),
        (
            &[
                "host-bridge",
                "eth1",
                "--netplan",
                "--root-dir",
                r,
                "--dhcp",
                "--dns",
                "1.1.1.1,1.2.3",
            ],
            "not a valid DNS",
        ),
        (
            &["host-bridge", "eth1", "--netplan", "--root-dir", r],
            "--dhcp",
        ),
        (&["host-bridge", "eth1", "--dhcp"], "--live"),
        (&["host-bridge", "lo", "--live"], "loopback"),
        (
            &["host-bridge", "lo", "--netplan", "--root-dir", r, "--dhcp"],
            "loopback",
        ),
        (
            &["host-bridge", "v1", "--netplan", "--root-dir", r, "--dhcp"],
            "already a port of brx",
        ),
    ];
    for (args, want) in cases {
        let out = vbridge_in(&lab, state.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err} lacks {want:?}");
    }
    assert_same(&lab.snapshot(), &before, "a refusal changed something");
    assert!(
        std::fs::read_dir(root.path()).unwrap().next().is_none(),
        "a refusal wrote files"
    );
}

#[test]
fn netplan_file_for_the_nic() {
    let Some((lab, state)) = lab_for("netplan_file_for_the_nic", 15) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let user_text = "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n";
    let user = user_netplan(root.path(), user_text);
    let before = lab.snapshot();

    let args = [
        "-o",
        "json",
        "host-bridge",
        "eth1",
        "--netplan",
        "--root-dir",
        r,
        "--dhcp",
    ];
    let out = vbridge_in(&lab, state.path(), &args);
    let j = ok_json(&out);
    assert_eq!(j["changed"], true);
    assert_eq!(j["mode"], "netplan");
    let file = root.path().join("etc/netplan/90-vbridge-br0.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mac = lab.sys("/sys/class/net/eth1/address");
    assert!(text.contains(&format!("macaddress: \"{mac}\"")), "{text}");
    assert!(text.contains("stp: false") && text.contains("forward-delay: 0"));
    // Again: no change. The user's file is untouched; the live network too.
    let j = json_of(&vbridge_in(&lab, state.path(), &args));
    assert_eq!(j["changed"], false);
    assert_eq!(std::fs::read_to_string(&user).unwrap(), user_text);
    assert_same(
        &lab.snapshot(),
        &before,
        "netplan without --apply changed the network",
    );

    // Switching to a static address backs up vbridge's previous file.
    let out = vbridge_in(
        &lab,
        state.path(),
        &[
            "-o",
            "json",
            "host-bridge",
            "eth1",
            "--netplan",
            "--root-dir",
            r,
            "--address",
            "10.88.15.2/24",
            "--gateway",
            "10.88.15.1",
            "--dns",
            "10.88.15.1,9.9.9.9",
        ],
    );
    let j = ok_json(&out);
    let backup = j["backup"].as_str().expect("a backup");
    assert_eq!(std::fs::read_to_string(backup).unwrap(), text);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("addresses: [\"10.88.15.2/24\"]"), "{text}");

    // Real netplan renders it: bridge with STP off, forward delay 0, pinned MAC, static
    // address, gateway and DNS on br0, eth1 a plain port.
    let out = common::run_status("netplan", &["generate", "--root-dir", r]);
    assert_ok(&out);
    let nd = root.path().join("run/systemd/network");
    let netdev = std::fs::read_to_string(nd.join("10-netplan-br0.netdev")).unwrap();
    assert!(
        netdev.contains("Kind=bridge") && netdev.contains("STP=false"),
        "{netdev}"
    );
    assert!(netdev.contains("ForwardDelaySec=0"), "{netdev}");
    assert!(netdev.contains(&format!("MACAddress={mac}")), "{netdev}");
    let br = std::fs::read_to_string(nd.join("10-netplan-br0.network")).unwrap();
    for want in [
        "Address=10.88.15.2/24",
        "Gateway=10.88.15.1",
        "DNS=10.88.15.1",
        "DNS=9.9.9.9",
    ] {
        assert!(br.contains(want), "{want} missing in {br}");
    }
    let port = std::fs::read_to_string(nd.join("10-netplan-eth1.network")).unwrap();
    assert!(
        port.contains("Bridge=br0") && !port.contains("Address="),
        "{port}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// A namespace with a bridge `brt` for the tap tests; None (skipped) unless root.
fn tap_ns(test: &str) -> Option<Netns> {
    if !common::require_root(test) {
        return None;
    }
    let ns = Netns::new("vbt");
    ns.ip(&["link", "add", "brt", "type", "bridge"]);
    Some(ns)
}

#[test]
fn tap_add_and_del() {
    let Some(ns) = tap_ns("tap_add_and_del") else {
        return;
    };
    ns.ip(&["link", "set", "brt", "up"]);
    let add = [
        "-o", "json", "tap", "add", "tp0", "--bridge", "brt", "--owner", "65534",
    ];
    let out = ns.vbridge(&add);
    assert_ok(&out);
    assert_eq!(json_of(&out)["changed"], true);
    // Persistent after the command exited, a TAP, on the bridge, up, owned.
    let sys = |p: &str| {
        String::from_utf8_lossy(&ns.exec("cat", &[p]).stdout)
            .trim()
            .to_string()
    };
    let flags = u32::from_str_radix(
        sys("/sys/class/net/tp0/tun_flags").trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert_eq!(
        flags & 0x1802,
        0x1802,
        "not a persistent TAP without PI: {flags:#x}"
    );
    assert_eq!(sys("/sys/class/net/tp0/owner"), "65534");
    let link = ns.ip(&["-d", "link", "show", "tp0"]);
    assert!(link.contains("master brt"), "{link}");
    assert!(link.contains("tun type tap"), "{link}");
    assert!(
        link.contains("<NO-CARRIER,BROADCAST,MULTICAST,UP>") || link.contains(",UP"),
        "{link}"
    );
    // Idempotent.
    assert_eq!(json_of(&ns.vbridge(&add))["changed"], false);
    // Off the bridge: the next run puts it back.
    ns.ip(&["link", "set", "tp0", "nomaster"]);
    assert_eq!(json_of(&ns.vbridge(&add))["changed"], true);
    assert!(ns.ip(&["link", "show", "tp0"]).contains("master brt"));
    // A name that is not a TAP is refused.
    let out = ns.vbridge(&["tap", "add", "brt", "--bridge", "brt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a TAP"));
    let out = ns.vbridge(&["tap", "del", "brt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(ns.ip(&["link", "show", "brt"]).contains("brt"));
    // Delete, twice.
    let out = ns.vbridge(&["-o", "json", "tap", "del", "tp0"]);
    assert_ok(&out);
    assert_eq!(json_of(&out)["changed"], true);
    assert!(!ns.ip(&["link", "show"]).contains("tp0"));
    assert_eq!(
        json_of(&ns.vbridge(&["-o", "json", "tap", "del", "tp0"]))["changed"],
        false
    );
    // A missing bridge is refused.
    let out = ns.vbridge(&["tap", "add", "tp1", "--bridge", "nobr0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!ns.ip(&["link", "show"]).contains("tp1"));
}

#[test]
fn out_of_range_windows_and_live_dhcp_are_refused() {
    let Some((lab, state)) = lab_for("out_of_range_windows_and_live_dhcp_are_refused", 21) else {
        return;
    };
    let before = lab.snapshot();
    for args in [
        &[
            "host-bridge",
            "eth1",
            "--live",
            "--rollback-after",
            "18446744073709551615",
        ][..],
        &[
            "host-bridge",
            "eth1",
            "--live",
            "--confirm-within",
            "18446744073709551615",
        ],
        &["host-bridge", "eth1", "--live", "--confirm-within", "86401"],
        &["host-bridge", "eth1", "--live", "--rollback-after", "0"],
    ] {
        let out = vbridge_in(&lab, state.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} is a usage error: {err}"
        );
        assert!(err.contains("86400"), "{args:?}: {err}");
    }
    // --live --dhcp would leave a lease nobody renews: refused with the way to do it.
    let out = vbridge_in(
        &lab,
        state.path(),
        &["host-bridge", "eth1", "--live", "--dhcp"],
    );
    let err = assert_refused(&out);
    assert!(
        err.contains("no DHCP client") && err.contains("--netplan --dhcp"),
        "{err}"
    );
    assert_same(
        &lab.snapshot(),
        &before,
        "a refused command changed something",
    );
    assert!(std::fs::read_dir(state.path()).unwrap().next().is_none());
}

#[test]
fn live_address_replaces_the_nics_addresses() {
    if !common::require_root("live_address_replaces_the_nics_addresses") {
        return;
    }
    let lab = many_addresses(22, false);
    let state = tempfile::tempdir().unwrap();
    let before = lab.snapshot();
    let args = |probe: &'static str| {
        let mut v = vec![
            "-o",
            "json",
            "host-bridge",
            "eth1",
            "--live",
            "--address",
            "10.88.22.50/24",
            "--gateway",
            "10.88.22.1",
            "--rollback-after",
            "1",
        ];
        if !probe.is_empty() {
            v.extend_from_slice(&["--probe", probe]);
        }
        v
    };
    // Not answered: the NIC gets back all four addresses as they were.
    let out = vbridge_in(&lab, state.path(), &args("10.88.22.99"));
    assert_refused(&out);
    assert_same(
        &lab.snapshot(),
        &before,
        "the rollback did not restore exactly",
    );
    // Answered: br0 has exactly the address asked for, eth1 none; the gateway route is on br0.
    let out = vbridge_in(&lab, state.path(), &args(""));
    assert_ok(&out);
    let br0: Vec<Value> = lab.addr_infos("br0");
    let cidrs: Vec<String> = br0
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert_eq!(cidrs, ["10.88.22.50/24"]);
    assert!(lab.addr_infos("eth1").is_empty());
    let routes = lab.host.ip(&["route", "show", "default"]);
    assert_eq!(
        routes.trim(),
        "default via 10.88.22.1 dev br0 proto static",
        "{routes}"
    );
    // Again: nothing to do.
    let j = json_of(&vbridge_in(&lab, state.path(), &args("")));
    assert_eq!(j["changed"], false, "{j}");
}

#[test]
fn netplan_refuses_a_user_file_that_addresses_the_nic() {
    let Some((lab, state)) = lab_for("netplan_refuses_a_user_file_that_addresses_the_nic", 23)
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let text = "network:\n  version: 2\n  ethernets:\n    eth1:\n      addresses: [10.88.23.2/24]\n      routes:\n        - to: default\n          via: 10.88.23.1\n";
    let user = user_netplan(root.path(), text);
    let out = vbridge_in(
        &lab,
        state.path(),
        &[
            "host-bridge",
            "eth1",
            "--netplan",
            "--root-dir",
            r,
            "--address",
            "10.88.23.2/24",
            "--gateway",
            "10.88.23.1",
        ],
    );
    let err = assert_refused(&out);
    assert!(err.contains(user.to_str().unwrap()), "{err}");
    assert!(err.contains("Address=10.88.23.2/24"), "{err}");
    assert!(
        err.contains("back up") && err.contains("remove eth1's addresses"),
        "{err}"
    );
    assert!(!root.path().join("etc/netplan/90-vbridge-br0.yaml").exists());
    assert_eq!(std::fs::read_to_string(&user).unwrap(), text);
}

/// A non-persistent TAP in `ns`, the way QEMU holds a VM's vnetX: it lives while the
/// returned descriptor is open. Made from a thread that joins the namespace, so nothing
/// appears in the root namespace.
fn held_tap(ns: &Netns, name: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let path = format!("/run/netns/{}", ns.name);
    let name = name.to_string();
    std::thread::spawn(move || {
        let nsf = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid namespace fd; it moves only this thread.
        assert_eq!(
            unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        // SAFETY: a C string literal path; the result is checked.
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fd is fresh and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut req = [0u8; 40];
        req[..name.len()].copy_from_slice(name.as_bytes());
        req[16..18].copy_from_slice(&(0x0002u16 | 0x1000).to_ne_bytes()); // IFF_TAP | IFF_NO_PI
                                                                          // SAFETY: req is a live 40-byte ifreq for TUNSETIFF.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), 0x4004_54ca, req.as_mut_ptr()) };
        assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
        fd
    })
    .join()
    .unwrap()
}

#[test]
fn tap_del_refuses_a_vms_tap_and_owner_minus_one() {
    let Some(ns) = tap_ns("tap_del_refuses_a_vms_tap_and_owner_minus_one") else {
        return;
    };
    let fd = held_tap(&ns, "vnet7");
    assert!(ns.ip(&["link", "show", "vnet7"]).contains("vnet7"));
    let out = ns.vbridge(&["tap", "del", "vnet7"]);
    let err = assert_refused(&out);
    assert!(
        err.contains("not persistent") || err.contains("holds it"),
        "{err}"
    );
    assert!(
        err.contains(&std::process::id().to_string()),
        "the holder is named: {err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(ns.ip(&["link", "show", "vnet7"]).contains("vnet7"));
    // --force deletes it anyway.
    let out = ns.vbridge(&["tap", "del", "vnet7", "--force"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with('\n'), "{text:?}");
    assert!(!ns.ip(&["link", "show"]).contains("vnet7"));
    drop(fd);
    // uid 4294967295 is (uid_t)-1, "no owner": refused, nothing made.
    let out = ns.vbridge(&[
        "tap",
        "add",
        "tp9",
        "--bridge",
        "brt",
        "--owner",
        "4294967295",
    ]);
    let err = assert_refused(&out);
    assert!(err.contains("out of range"), "{err}");
    assert!(!ns.ip(&["link", "show"]).contains("tp9"));
    // The text form of a plain add/del ends its last line.
    let out = ns.vbridge(&["tap", "add", "tp8", "--bridge", "brt"]);
    assert!(String::from_utf8_lossy(&out.stdout).ends_with('\n'));
    let out = ns.vbridge(&["tap", "del", "tp8"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("\n"));
}

/// `vbridge ARGS` in the host namespace under strace, SIGKILLed at the entry of its `kill_at`th
/// `sendto` (None: only traced, every sendto written to `log`).
fn vbridge_straced(
    lab: &Lab,
    state: &Path,
    log: &Path,
    kill_at: Option<usize>,
    args: &[&str],
) -> Output {
    let env = format!("VBRIDGE_STATE_DIR={}", state.display());
    let bin = common::vbridge_bin();
    let inject = kill_at.map(|n| format!("inject=sendto:signal=SIGKILL:when={n}"));
    let mut v = vec![
        env.as_str(),
        "strace",
        "-o",
        log.to_str().unwrap(),
        "-e",
        "trace=sendto",
    ];
    if let Some(i) = &inject {
        v.extend(["-e", i.as_str()]);
    }
    v.push(bin.to_str().unwrap());
    v.extend_from_slice(args);
    lab.host.exec("env", &v)
}

/// `host-bridge --live` killed (SIGKILL) after each of its steps in turn: the record written
/// before the first step restores the exact previous state, by whichever way comes next:
/// the reverter when its window ends, `--confirm` (which will not keep a change that stopped
/// part-way), or `--remove`.
#[test]
fn live_killed_between_steps_is_restored_exactly() {
    let Some((lab, state)) = lab_for("live_killed_between_steps_is_restored_exactly", 24) else {
        return;
    };
    let before = lab.snapshot();
    let trace = tempfile::tempdir().unwrap();
    let log = trace.path().join("sendto.log");
    // One traced run, kept pending, to find which sendto calls carry the steps: the netlink
    // requests that change something (not the GETs of observing and looking up indexes).
    // Then `--remove` puts everything back.
    let run = [
        "-o",
        "json",
        "host-bridge",
        "eth1",
        "--live",
        "--confirm-within",
        "60",
    ];
    let out = vbridge_straced(&lab, state.path(), &log, None, &run);
    let steps = ok_json(&out)["steps"].as_array().unwrap().len();
    let calls: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("sendto("))
        .map(str::to_string)
        .collect();
    let step_calls: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            ["RTM_NEW", "RTM_DEL"]
                .iter()
                .any(|t| l.contains(&format!("nlmsg_type={t}")))
        })
        .map(|(i, _)| i + 1)
        .collect();
    assert!(steps >= 3, "a plan of {steps} steps proves little");
    assert_eq!(
        step_calls.len(),
        steps,
        "one request per step:\n{}",
        calls.join("\n")
    );
    let out = vbridge_in(
        &lab,
        state.path(),
        &["-o", "json", "host-bridge", "--remove"],
    );
    assert_eq!(ok_json(&out)["reverted"], true);
    assert_same(&lab.snapshot(), &before, "--remove of a complete change");

    let mut ways = Vec::new();
    for done in 0..steps {
        let way = ["reverter", "--confirm", "--remove"][done % 3];
        let window = if way == "reverter" { "1" } else { "60" };
        let run = [
            "-o",
            "json",
            "host-bridge",
            "eth1",
            "--live",
            "--confirm-within",
            window,
        ];
        let out = vbridge_straced(&lab, state.path(), &log, Some(step_calls[done]), &run);
        assert_eq!(
            out.status.code(),
            None,
            "not killed at step {}: {}",
            done + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        let record: Value = serde_json::from_slice(
            &std::fs::read(state.path().join("pending-host-bridge.json")).expect("a record"),
        )
        .unwrap();
        assert_eq!(record["complete"], false, "after {done} steps");
        match way {
            "reverter" => {
                let pid = record["reverter_pid"].as_u64().expect("armed") as u32;
                wait_gone(pid, Duration::from_secs(10));
                let rec: Value = serde_json::from_slice(
                    &std::fs::read(state.path().join("last-revert-host-bridge.json")).unwrap(),
                )
                .unwrap();
                assert_eq!(rec["reverted"], true, "after {done} steps: {rec}");
            }
            "--confirm" => {
                let out = vbridge_in(&lab, state.path(), &["host-bridge", "--confirm"]);
                let err = assert_refused(&out);
                assert!(err.contains("stopped part-way"), "{err}");
            }
            _ => {
                let out = vbridge_in(
                    &lab,
                    state.path(),
                    &["-o", "json", "host-bridge", "--remove"],
                );
                assert_eq!(ok_json(&out)["reverted"], true, "after {done} steps");
            }
        }
        assert!(!state.path().join("pending-host-bridge.json").exists());
        assert_same(
            &lab.snapshot(),
            &before,
            &format!("killed after {done} of {steps} steps, restored by {way}"),
        );
        ways.push(format!("{done}:{way}"));
    }
    eprintln!(
        "host-bridge --live killed after each of {steps} steps, restored: {}",
        ways.join(" ")
    );

    // Killed without a window: no reverter, and the next change is refused until --remove.
    let out = vbridge_straced(
        &lab,
        state.path(),
        &log,
        Some(step_calls[1]),
        &["host-bridge", "eth1", "--live"],
    );
    assert_eq!(out.status.code(), None);
    let err = assert_refused(&vbridge_in(
        &lab,
        state.path(),
        &["host-bridge", "eth1", "--live"],
    ));
    assert!(
        err.contains("stopped part-way") && err.contains("--remove"),
        "{err}"
    );
    let out = vbridge_in(
        &lab,
        state.path(),
        &["-o", "json", "host-bridge", "--remove"],
    );
    assert_eq!(ok_json(&out)["reverted"], true);
    assert_same(
        &lab.snapshot(),
        &before,
        "killed without a window, then --remove",
    );
}
