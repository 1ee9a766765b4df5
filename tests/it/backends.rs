//! Persistent host bridges for every stack: rendered files (golden), detection on file trees
//! (golden table), refusals that write nothing, apply + remove returning a tree to its exact
//! bytes, validation by each stack's own tool, and the stacks run for real in namespaces
//! (networkd, netplan -> networkd, ifupdown2).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use vbridge::host::backends::{self, detect, ifupdown, networkd, nm, Backend, Config, FileApplier};
use vbridge::plan::{apply, Plan};

pub fn dhcp() -> Config {
    Config {
        nic: "enp3s0".into(),
        bridge: "br0".into(),
        mac: "52:54:00:12:34:56".into(),
        dhcp: true,
        address: None,
        gateway: None,
        dns: vec![],
        mtu: None,
    }
}

pub fn fixed() -> Config {
    Config {
        dhcp: false,
        address: Some(("192.168.1.10".parse().unwrap(), 24)),
        gateway: Some("192.168.1.1".parse().unwrap()),
        dns: vec!["192.168.1.1".parse().unwrap(), "9.9.9.9".parse().unwrap()],
        ..dhcp()
    }
}

/// `--mtu 9000`: on the bridge and on the NIC, in every stack's files.
pub fn jumbo() -> Config {
    Config {
        mtu: Some(9000),
        ..dhcp()
    }
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/backends")
}

/// Compare with tests/data/backends/NAME; `VBRIDGE_BLESS=1` rewrites it.
#[track_caller]
fn golden(name: &str, text: &str) {
    let p = data().join(name);
    if std::env::var_os("VBRIDGE_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    let want = std::fs::read_to_string(&p)
        .unwrap_or_else(|_| panic!("{} missing: run with VBRIDGE_BLESS=1", p.display()));
    assert_eq!(text, want, "{name} differs (VBRIDGE_BLESS=1 regenerates)");
}

/// A tool the test needs: present, or a skip outside CI and a failure in CI.
pub fn tool_or_skip(test: &str, program: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()))
        .unwrap_or(false);
    if found {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {program} is missing and CI must run it: install {package} (scripts/deps all)"
    );
    eprintln!("SKIPPED {test}: {program} missing (install {package})");
    false
}

/// Write files (relative path -> text) under a new temp root.
pub(crate) fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (p, t) in files {
        let f = d.path().join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, t).unwrap();
    }
    d
}

/// Every file under `root`: relative path -> (mode, bytes).
pub(crate) fn snapshot(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, (m, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn apply_all(plan: &Plan<backends::FileStep>) {
    apply(&plan.steps, &mut FileApplier).unwrap_or_else(|s| panic!("{}", s.error.message));
}

pub(crate) const INTERFACES: &str = "# The loopback network interface\nauto lo\niface lo inet loopback\n\n# comment kept\nsource /etc/network/interfaces.d/*\n\nallow-hotplug enp3s0\niface  enp3s0 inet   static # odd spacing kept\n\taddress 192.168.1.10/24\n\tgateway 192.168.1.1\n\tmtu 1500\n    dns-nameservers 192.168.1.1\n\niface enp3s0 inet6 auto\n\n# other stanza untouched\nauto eth9\niface eth9 inet dhcp\n";

pub(crate) const NETWORKD_USER: &str = "[Match]\nName=enp3s0\n\n[Network]\nDHCP=yes\n";

pub(crate) const NM_USER: &str = "[connection]\nid=Wired\nuuid=0c52b4c8-8010-4a1d-9f00-809e9ded7d16\ntype=ethernet\ninterface-name=enp3s0\nautoconnect-priority=5\n\n[ipv4]\nmethod=auto\n";

pub(crate) const NETPLAN_USER: &str =
    "network:\n  version: 2\n  ethernets:\n    enp3s0:\n      dhcp4: true\n";

#[test]
fn rendered_files_match_the_golden_files() {
    for (name, cfg) in [("dhcp", dhcp()), ("static", fixed()), ("mtu", jumbo())] {
        let root = tree(&[
            ("etc/network/interfaces", INTERFACES),
            (
                "etc/NetworkManager/system-connections/Wired.nmconnection",
                NM_USER,
            ),
        ]);
        for b in [Backend::Networkd, Backend::Ifupdown, Backend::Nm] {
            let plan = b.plan(root.path(), &cfg).unwrap();
            let shown = backends::diff(&plan).replace(&root.path().display().to_string(), "ROOT");
            golden(&format!("{b}-{name}.diff"), &shown);
        }
    }
    golden("nm-unmanaged-taps.conf", &nm::unmanaged_taps_conf());
}

#[test]
fn the_ifupdown_edit_is_lossless_outside_the_nic_stanzas() {
    let root = tree(&[("etc/network/interfaces", INTERFACES)]);
    let plan = ifupdown::plan(root.path(), &fixed()).unwrap();
    let edit = plan
        .steps
        .iter()
        .find_map(|s| match s {
            backends::FileStep::Edit { after, .. } => Some(after.clone()),
            _ => None,
        })
        .unwrap();
    let (old, new): (Vec<&str>, Vec<&str>) = (INTERFACES.lines().collect(), edit.lines().collect());
    assert_eq!(old.len(), new.len());
    let changed: Vec<usize> = (0..old.len()).filter(|&i| old[i] != new[i]).collect();
    // The two headers turned to manual (spacing and the trailing comment kept), the
    // addressing disabled; mtu, the other stanzas and every comment stay as they were.
    assert_eq!(changed, vec![8, 9, 10, 12, 14], "{edit}");
    assert_eq!(new[8], "iface  enp3s0 inet   manual # odd spacing kept");
    assert_eq!(new[9], "#vbridge# \taddress 192.168.1.10/24");
    assert_eq!(new[14], "iface enp3s0 inet6 manual");
}

/// Relative path -> text of a test tree.
type Files<'a> = Vec<(&'a str, String)>;

/// Each case: a file tree, whether NM runs -> the chosen stack or the refusal.
#[test]
fn detection_golden_table() {
    let nd = "etc/systemd/network/20-wired.network";
    let nmf = "etc/NetworkManager/system-connections/Wired.nmconnection";
    let np = "etc/netplan/50-cloud-init.yaml";
    let ifs = "etc/network/interfaces";
    let ours = networkd::render(&dhcp()).unwrap();
    let cases: Vec<(&str, Files, bool)> = vec![
        ("empty host", vec![], true),
        ("netplan names it", vec![(np, NETPLAN_USER.into())], false),
        ("networkd .network", vec![(nd, NETWORKD_USER.into())], false),
        (
            "networkd glob",
            vec![(nd, "[Match]\nName=en*\n[Network]\nDHCP=yes\n".into())],
            false,
        ),
        (
            "networkd other name",
            vec![(nd, "[Match]\nName=eth*\n".into())],
            false,
        ),
        ("ifupdown stanza", vec![(ifs, INTERFACES.into())], false),
        ("NM profile, NM running", vec![(nmf, NM_USER.into())], true),
        ("NM profile, NM stopped", vec![(nmf, NM_USER.into())], false),
        (
            "netplan + ifupdown",
            vec![(np, NETPLAN_USER.into()), (ifs, INTERFACES.into())],
            false,
        ),
        (
            "ifupdown + NM running",
            vec![(ifs, INTERFACES.into()), (nmf, NM_USER.into())],
            true,
        ),
        (
            "already a bridge port (ifupdown)",
            vec![(
                ifs,
                "auto br9\niface br9 inet dhcp\n  bridge-ports enp3s0 eth7\n".into(),
            )],
            false,
        ),
        (
            "already a bond port (networkd)",
            vec![(nd, "[Match]\nName=enp3s0\n[Network]\nBond=bond0\n".into())],
            false,
        ),
        (
            "already a bridge port (netplan)",
            vec![(
                np,
                "network:\n  bridges:\n    br7:\n      interfaces: [enp3s0]\n".into(),
            )],
            false,
        ),
        (
            "already a port (NM)",
            vec![(nmf, format!("{NM_USER}\n[connection]\nmaster=br5\n"))],
            true,
        ),
        (
            "vbridge's own networkd files",
            vec![
                ("etc/systemd/network/00-vbridge-br0.netdev", ours[0].clone()),
                (
                    "etc/systemd/network/00-vbridge-br0-port-enp3s0.network",
                    ours[2].clone(),
                ),
            ],
            false,
        ),
        (
            "unparseable interfaces",
            vec![(ifs, "auto lo\nthis is not a stanza\n".into())],
            false,
        ),
    ];
    let mut table = String::new();
    for (name, files, nm_running) in cases {
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
        let root = tree(&refs);
        let r = detect(root.path(), "enp3s0", nm_running);
        let shown = match r {
            Ok(b) => format!("-> {b}"),
            Err(e) => format!("refused: {}", e.message),
        };
        table.push_str(&format!(
            "{name}: {}\n",
            shown.replace(&root.path().display().to_string(), "ROOT")
        ));
    }
    golden("detect.txt", &table);
}

/// Refusals happen in the plan, before any file is written.
#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    type Case<'a> = (Backend, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            Backend::Ifupdown,
            vec![("etc/network/interfaces", "auto lo\ngarbage line\n")],
            "cannot parse",
        ),
        (
            Backend::Ifupdown,
            vec![("etc/network/interfaces", "auto lo\niface lo inet loopback\n")],
            "does not read /etc/network/interfaces.d",
        ),
        (
            Backend::Ifupdown,
            vec![(
                "etc/network/interfaces",
                "source-directory interfaces.d\nauto bond0\niface bond0 inet dhcp\n bond-slaves enp3s0\n",
            )],
            "already a port of bond0",
        ),
        (
            Backend::Networkd,
            vec![(
                "etc/systemd/network/10-br.network",
                "[Match]\nName=enp3s0\n[Network]\nBridge=br9\n",
            )],
            "already a port of br9",
        ),
        (
            Backend::Networkd,
            vec![(
                "etc/systemd/network/00-a.network",
                "[Match]\nName=enp*\n[Network]\nDHCP=yes\n",
            )],
            "sorts before vbridge's",
        ),
        (
            Backend::Nm,
            vec![(
                "etc/NetworkManager/system-connections/p.nmconnection",
                "[connection]\nid=p\ntype=ethernet\ninterface-name=enp3s0\nmaster=bond1\n",
            )],
            "already a port of bond1",
        ),
        (
            Backend::Networkd,
            vec![("etc/systemd/network/00-vbridge-br0.netdev", "[NetDev]\nName=x\n")],
            "not written by vbridge",
        ),
    ];
    for (b, files, want) in cases {
        let root = tree(&files);
        let before = snapshot(root.path());
        let e = b.plan(root.path(), &dhcp()).expect_err(want);
        assert!(e.message.contains(want), "{b}: {} (want {want})", e.message);
        assert_eq!(snapshot(root.path()), before, "{b}: {want}");
    }
    // Detection refuses two stacks, naming both files.
    let root = tree(&[
        ("etc/network/interfaces", INTERFACES),
        ("etc/systemd/network/20-wired.network", NETWORKD_USER),
    ]);
    let e = detect(root.path(), "enp3s0", false).unwrap_err();
    assert!(
        e.message.contains("networkd (") && e.message.contains("ifupdown ("),
        "{}",
        e.message
    );
}

/// Apply, apply again (no change), remove: the tree is back byte for byte, modes included;
/// and the plan's own undo does the same.
#[test]
fn remove_returns_the_tree_to_its_exact_previous_state() {
    for cfg in [dhcp(), fixed()] {
        for b in [
            Backend::Networkd,
            Backend::Ifupdown,
            Backend::Nm,
            Backend::Netplan,
        ] {
            let root = tree(&[
                ("etc/network/interfaces", INTERFACES),
                (
                    "etc/network/interfaces.d/other",
                    "auto eth5\niface eth5 inet dhcp\n",
                ),
                ("etc/systemd/network/20-wired.network", NETWORKD_USER),
                (
                    "etc/NetworkManager/system-connections/Wired.nmconnection",
                    NM_USER,
                ),
                ("etc/netplan/01-old.yaml", "network:\n  version: 2\n"),
            ]);
            std::fs::set_permissions(
                root.path().join("etc/network/interfaces"),
                std::fs::Permissions::from_mode(0o640),
            )
            .unwrap();
            let before = snapshot(root.path());
            let plan = b.plan(root.path(), &cfg).unwrap();
            assert!(!plan.is_empty());
            apply_all(&plan);
            let after = snapshot(root.path());
            for s in &plan.steps {
                if let backends::FileStep::Create { path, mode, .. } = s {
                    let rel = path
                        .strip_prefix(root.path())
                        .unwrap()
                        .display()
                        .to_string();
                    assert_eq!(after[&rel].0, *mode, "{b}: {rel}");
                }
            }
            assert!(
                b.plan(root.path(), &cfg).unwrap().is_empty(),
                "{b}: second plan"
            );
            let rm = b.remove(root.path(), &cfg.bridge).unwrap();
            apply_all(&rm);
            assert_eq!(snapshot(root.path()), before, "{b}: remove");
            assert!(
                b.remove(root.path(), &cfg.bridge).unwrap().is_empty(),
                "{b}: idempotent"
            );
            apply_all(&plan);
            apply_all(&Plan::new(plan.undo()));
            assert_eq!(snapshot(root.path()), before, "{b}: undo");
        }
    }
}

#[test]
fn a_step_refuses_a_file_changed_since_the_plan() {
    let root = tree(&[("etc/network/interfaces", INTERFACES)]);
    let plan = ifupdown::plan(root.path(), &dhcp()).unwrap();
    std::fs::write(root.path().join("etc/network/interfaces"), "changed\n").unwrap();
    let stopped = apply(&plan.steps, &mut FileApplier).unwrap_err();
    assert_eq!(stopped.applied, 1);
    assert!(
        stopped.error.message.contains("changed since"),
        "{}",
        stopped.error.message
    );
    // remove after a user edit of an edited file refuses instead of overwriting it
    let root = tree(&[("etc/network/interfaces", INTERFACES)]);
    apply_all(&ifupdown::plan(root.path(), &dhcp()).unwrap());
    let f = root.path().join("etc/network/interfaces");
    let mut t = std::fs::read_to_string(&f).unwrap();
    t.push_str("auto eth4\n");
    std::fs::write(&f, t).unwrap();
    let e = ifupdown::remove(root.path(), "br0").unwrap_err();
    assert!(e.message.contains("changed after vbridge"), "{}", e.message);
}

#[test]
fn nm_taps_check_follows_nm_conf_merging() {
    let conf = |files: &[(&str, &str)]| {
        let r = tree(files);
        nm::nm_leaves_taps_unmanaged(r.path())
    };
    assert!(!conf(&[(
        "NetworkManager.conf",
        "[main]\nplugins=keyfile\n"
    )]));
    assert!(conf(&[(
        "conf.d/90-vbridge-unmanaged-taps.conf",
        &nm::unmanaged_taps_conf()
    )]));
    assert!(conf(&[(
        "NetworkManager.conf",
        "[keyfile]\nunmanaged-devices=interface-name:vnet*,interface-name:tap*\n"
    )]));
    // A later file replacing the list wins over vbridge's append.
    assert!(!conf(&[
        (
            "conf.d/90-vbridge-unmanaged-taps.conf",
            &nm::unmanaged_taps_conf()
        ),
        (
            "conf.d/95-user.conf",
            "[keyfile]\nunmanaged-devices=mac:00:11:22:33:44:55\n"
        ),
    ]));
    assert!(conf(&[(
        "conf.d/a.conf",
        "[keyfile]\nunmanaged-devices=type:tun\n"
    )]));
    let root = tempfile::tempdir().unwrap();
    let plan = nm::unmanaged_taps_plan(root.path()).unwrap();
    apply_all(&plan);
    assert!(nm::nm_leaves_taps_unmanaged(
        &root.path().join("etc/NetworkManager")
    ));
}

#[test]
fn nm_port_profile_beats_the_nics_own_profile() {
    let root = tree(&[(
        "etc/NetworkManager/system-connections/Wired.nmconnection",
        NM_USER,
    )]);
    let plan = nm::plan(root.path(), &dhcp()).unwrap();
    let port = plan.steps[1].texts().1.unwrap();
    assert!(port.contains("autoconnect-priority=6\n"), "{port}");
}

#[test]
fn every_nm_keyfile_passes_nmcli_offline() {
    if !tool_or_skip(
        "every_nm_keyfile_passes_nmcli_offline",
        "nmcli",
        "network-manager",
    ) {
        return;
    }
    let v6 = Config {
        address: Some(("fd00:77::2".parse().unwrap(), 64)),
        gateway: Some("fd00:77::1".parse().unwrap()),
        dns: vec!["fd00:77::1".parse().unwrap()],
        ..fixed()
    };
    for cfg in [dhcp(), fixed(), v6, jumbo()] {
        let root = tempfile::tempdir().unwrap();
        let plan = nm::plan(root.path(), &cfg).unwrap();
        assert_eq!(plan.steps.len(), 2);
        Backend::Nm.validate(root.path(), &cfg, &plan).unwrap();
        for s in &plan.steps {
            let text = s.texts().1.unwrap();
            let id = text.lines().find_map(|l| l.strip_prefix("id=")).unwrap();
            let out = nm::nmcli_offline(text, id).unwrap();
            // NM kept what vbridge wrote (its normal form, same values).
            for l in text
                .lines()
                .filter(|l| l.contains('=') && !l.starts_with('#'))
            {
                assert!(out.contains(l), "nmcli dropped {l:?} of {id}:\n{out}");
            }
        }
    }
    // and refuses a broken one
    let bad = "[connection]\nid=x\ntype=bridge\n[ipv4]\nmethod=manual\n";
    assert!(nm::nmcli_offline(bad, "x").is_err());
}

#[test]
fn ifquery_accepts_the_planned_interfaces() {
    if !tool_or_skip(
        "ifquery_accepts_the_planned_interfaces",
        "ifquery",
        "ifupdown2",
    ) {
        return;
    }
    for cfg in [dhcp(), fixed(), jumbo()] {
        let root = tree(&[("etc/network/interfaces", INTERFACES)]);
        let plan = ifupdown::plan(root.path(), &cfg).unwrap();
        Backend::Ifupdown
            .validate(root.path(), &cfg, &plan)
            .unwrap();
    }
}

#[test]
fn networkd_and_netplan_validate() {
    let root = tree(&[("etc/systemd/network/20-wired.network", NETWORKD_USER)]);
    for cfg in [fixed(), jumbo()] {
        let plan = networkd::plan(root.path(), &cfg).unwrap();
        Backend::Networkd
            .validate(root.path(), &cfg, &plan)
            .unwrap();
    }
    if !tool_or_skip("networkd_and_netplan_validate", "netplan", "netplan.io") {
        return;
    }
    let root = tree(&[("etc/netplan/01-old.yaml", "network:\n  version: 2\n")]);
    let plan = Backend::Netplan.plan(root.path(), &dhcp()).unwrap();
    Backend::Netplan
        .validate(root.path(), &dhcp(), &plan)
        .unwrap();
}

// ---- The stacks for real, in namespaces -------------------------------------------------

use crate::common::{require_root, run, Netns};
use crate::lab::stop_child;
use crate::lab::topology::{self, Dhcp, LAN_IF};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The NIC inside the host namespace (a veth whose peer is the LAN's lan0).
pub(crate) const NIC: &str = "enp9s0";
pub(crate) const NIC_MAC: &str = "52:54:00:9a:bc:de";

/// Runs a program inside `ns` in a private mount namespace prepared by `script` (fixed
/// text, arguments passed as "$@"): nothing of the host's mounts changes.
fn in_private_mounts(ns: &Netns, dir: &Path, script: &str, args: &[&str]) -> Command {
    let f = dir.join("prepare.sh");
    std::fs::write(&f, script).unwrap();
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &ns.name,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
    ])
    .arg(&f)
    .args(args);
    c
}

/// systemd-networkd standalone (LAB.md): read-only sysfs so it does not wait for udev, its
/// state dir on a tmpfs owned by systemd-network, `etc` bound over /etc/systemd/network.
const NETWORKD: &str = "set -e
umount -l /sys
mount -t sysfs -o ro sysfs /sys
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/netif
chown systemd-network:systemd-network /run/systemd/netif
mount --bind \"$1\" /etc/systemd/network
exec /lib/systemd/systemd-networkd
";

/// networkd, started by the test and ended by pid in every outcome.
struct Networkd {
    child: Option<Child>,
    log: PathBuf,
}

impl Networkd {
    fn start(ns: &Netns, dir: &Path, etc: &Path) -> Networkd {
        let log = dir.join("networkd.log");
        let child = in_private_mounts(ns, dir, NETWORKD, &[etc.to_str().unwrap()])
            .env("SYSTEMD_LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("networkd.err")).unwrap())
            .spawn()
            .expect("cannot start systemd-networkd");
        Networkd {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        let err =
            std::fs::read_to_string(self.log.with_file_name("networkd.err")).unwrap_or_default();
        std::fs::read_to_string(&self.log).unwrap_or_default() + &err
    }
}

impl Drop for Networkd {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            stop_child(c, "systemd-networkd", Duration::from_secs(5));
        }
    }
}

/// Host and LAN namespaces joined by NIC <-> lan0, the LAN at 10.77.SUBNET.1 with dnsmasq.
pub(crate) fn wire_nic(subnet: u8, dir: &Path) -> (Netns, Netns, Dhcp) {
    let host = Netns::new("vbkh");
    let lan = Netns::new("vbkl");
    host.ip(&[
        "link", "add", NIC, "address", NIC_MAC, "type", "veth", "peer", "name", LAN_IF, "netns",
        &lan.name,
    ]);
    lan.ip(&[
        "addr",
        "add",
        &topology::addr(subnet, 1, true),
        "dev",
        LAN_IF,
    ]);
    lan.ip(&["link", "set", LAN_IF, "up"]);
    let dhcp = Dhcp::start(&lan, subnet, dir);
    (host, lan, dhcp)
}

fn ns_cfg(subnet: u8, static_addr: bool) -> Config {
    Config {
        nic: NIC.into(),
        bridge: "br0".into(),
        mac: NIC_MAC.into(),
        dhcp: !static_addr,
        address: static_addr.then(|| (topology::addr(subnet, 7, false).parse().unwrap(), 24)),
        gateway: static_addr.then(|| topology::addr(subnet, 1, false).parse().unwrap()),
        dns: vec![],
        mtu: None,
    }
}

/// `ip -4 addr show dev DEV` ("" while it does not exist).
fn addrs_of(ns: &Netns, dev: &str) -> String {
    let o = ns.exec("ip", &["-4", "addr", "show", "dev", dev]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Wait until `f` holds, up to `secs`.
pub(crate) fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// br0 exists with NIC as its port, STP off, forward delay 0, the NIC's MAC.
fn assert_bridge(host: &Netns, what: &str) {
    let d = host.ip(&["-d", "link", "show", "br0"]);
    assert!(
        d.contains("stp_state 0") && d.contains("forward_delay 0"),
        "{what}: {d}"
    );
    assert!(d.contains(NIC_MAC), "{what}: br0 lacks the NIC's MAC: {d}");
    let port = host.ip(&["link", "show", NIC]);
    assert!(port.contains("master br0"), "{what}: {port}");
}

/// networkd from vbridge's files: static address, then a DHCP lease with the NIC's MAC.
/// Both from files under a root written by the plan through the file applier.
#[test]
fn networkd_runs_vbridges_files_in_a_namespace() {
    let t = "networkd_runs_vbridges_files_in_a_namespace";
    if !require_root(t) || !tool_or_skip(t, "dnsmasq", "dnsmasq-base") {
        return;
    }
    for static_addr in [true, false] {
        let subnet = 250 + static_addr as u8;
        let dir = tempfile::tempdir().unwrap();
        let (host, _lan, dhcp) = wire_nic(subnet, dir.path());
        let root = tempfile::tempdir().unwrap();
        let cfg = ns_cfg(subnet, static_addr);
        let plan = networkd::plan(root.path(), &cfg).unwrap();
        Backend::Networkd
            .validate(root.path(), &cfg, &plan)
            .unwrap();
        apply_all(&plan);
        let etc = root.path().join("etc/systemd/network");
        let nd = Networkd::start(&host, dir.path(), &etc);
        let want = topology::addr(subnet, 7, true);
        let ok = wait_for(20, || {
            let a = addrs_of(&host, "br0");
            if static_addr {
                a.contains(&want)
            } else {
                a.contains("dynamic") && dhcp.leases().contains(NIC_MAC)
            }
        });
        let log = nd.log();
        assert!(
            ok,
            "static={static_addr}: br0 got no address: {}\n{log}",
            host.ip(&["addr"])
        );
        assert_bridge(&host, "networkd");
        if static_addr {
            let r = host.ip(&["route"]);
            assert!(r.contains(&format!("default via 10.77.{subnet}.1")), "{r}");
        }
        // networkd read every file of vbridge's and complained about none of them.
        for f in [
            "00-vbridge-br0.netdev",
            "00-vbridge-br0.network",
            "00-vbridge-br0-port-enp9s0.network",
        ] {
            let bad = log.lines().find(|l| {
                l.contains(f)
                    && (l.contains("Unknown") || l.contains("rror") || l.contains("ignoring"))
            });
            assert!(bad.is_none(), "{f}: {bad:?}\n{log}");
        }
        drop(nd);
    }
}

/// netplan end to end: vbridge's netplan file -> `netplan generate --root-dir` -> the
/// generated networkd files run by networkd -> br0 with the NIC's MAC and a DHCP lease.
#[test]
fn netplan_file_generated_and_run_by_networkd() {
    let t = "netplan_file_generated_and_run_by_networkd";
    if !require_root(t)
        || !tool_or_skip(t, "netplan", "netplan.io")
        || !tool_or_skip(t, "dnsmasq", "dnsmasq-base")
    {
        return;
    }
    let subnet = 252;
    let dir = tempfile::tempdir().unwrap();
    let (host, _lan, dhcp) = wire_nic(subnet, dir.path());
    let root = tempfile::tempdir().unwrap();
    let cfg = ns_cfg(subnet, false);
    let plan = Backend::Netplan.plan(root.path(), &cfg).unwrap();
    Backend::Netplan.validate(root.path(), &cfg, &plan).unwrap();
    apply_all(&plan);
    run(
        "netplan",
        &["generate", "--root-dir", root.path().to_str().unwrap()],
    );
    let generated = root.path().join("run/systemd/network");
    let nd = Networkd::start(&host, dir.path(), &generated);
    let ok = wait_for(20, || {
        addrs_of(&host, "br0").contains("dynamic") && dhcp.leases().contains(NIC_MAC)
    });
    assert!(
        ok,
        "no lease on br0: {}\n{}\n{}",
        host.ip(&["addr"]),
        dhcp.leases(),
        nd.log()
    );
    assert_bridge(&host, "netplan");
    drop(nd);
    // remove: vbridge's file gone, the root back as it was (only netplan's output remains,
    // which `netplan generate` rewrites from the files).
    apply_all(&Backend::Netplan.remove(root.path(), "br0").unwrap());
    assert!(!root.path().join("etc/netplan/90-vbridge-br0.yaml").exists());
}

/// ifupdown2 in a private mount namespace: ifup the planned configuration, check it with
/// ifquery -c, show the links, then ifdown.
const IFUPDOWN: &str = "set -e
mount -t tmpfs tmpfs /run/network
ifup -i \"$1\" -a
ifquery -i \"$1\" -a -c
echo '--- links'
ip -d link show
echo '--- addresses'
ip -4 addr show
ifdown -i \"$1\" -a
";

/// ifupdown2 applies vbridge's stanza with the NIC's own stanza turned to manual: br0 with
/// its address and the NIC as its port (the NIC keeps no address), `ifquery -c` passes, and
/// after ifdown and remove the namespace and the files are as before.
#[test]
fn ifupdown2_applies_vbridges_stanza_in_a_namespace() {
    let t = "ifupdown2_applies_vbridges_stanza_in_a_namespace";
    if !require_root(t)
        || !tool_or_skip(t, "ifup", "ifupdown2")
        || !tool_or_skip(t, "dnsmasq", "dnsmasq-base")
    {
        return;
    }
    let subnet = 253;
    let dir = tempfile::tempdir().unwrap();
    let (host, _lan, _dhcp) = wire_nic(subnet, dir.path());
    let links_before = host.ip(&["-br", "link"]);
    let user = format!(
        "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n\n# the NIC\nauto {NIC}\niface {NIC} inet static\n    address {}\n",
        topology::addr(subnet, 9, true)
    );
    let root = tree(&[("etc/network/interfaces", &user)]);
    let before = snapshot(root.path());
    let cfg = ns_cfg(subnet, true);
    let plan = ifupdown::plan(root.path(), &cfg).unwrap();
    Backend::Ifupdown
        .validate(root.path(), &cfg, &plan)
        .unwrap();
    apply_all(&plan);
    let flat = dir.path().join("interfaces");
    std::fs::write(
        &flat,
        ifupdown::flatten(root.path(), &Plan::default()).unwrap(),
    )
    .unwrap();
    let out = in_private_mounts(&host, dir.path(), IFUPDOWN, &[flat.to_str().unwrap()])
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "ifupdown2 failed:\n{so}\n{se}");
    assert!(
        so.contains("[pass]") && !so.contains("[fail]"),
        "ifquery -c:\n{so}"
    );
    let links = so.split("--- links").nth(1).unwrap();
    let addrs = so.split("--- addresses").nth(1).unwrap();
    assert!(
        links.contains("master br0") && links.contains("stp_state 0"),
        "{links}"
    );
    assert!(links.contains(NIC_MAC), "br0 lacks the NIC's MAC: {links}");
    assert!(addrs.contains(&topology::addr(subnet, 7, true)), "{addrs}");
    assert!(
        !addrs.contains(&topology::addr(subnet, 9, true)),
        "the NIC kept its address: {addrs}"
    );
    // ifdown took br0 away; remove puts the user's file back byte for byte.
    assert_eq!(
        host.ip(&["-br", "link"])
            .replace("UP", "DOWN")
            .lines()
            .count(),
        links_before.lines().count()
    );
    assert!(!host.ip(&["-br", "link"]).contains("br0"));
    apply_all(&Backend::Ifupdown.remove(root.path(), "br0").unwrap());
    assert_eq!(snapshot(root.path()), before);
}
