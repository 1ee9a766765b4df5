//! `host-bridge --persist --apply`, `--confirm-within` and `--remove` against the real network
//! stacks, each running inside a namespace with a private mount namespace whose /etc holds
//! the test's files: ifupdown2 (`ifup`, `ifreload`) and systemd-networkd with a private
//! D-Bus (`networkctl reload`). The proof: the bridge comes up from vbridge's files, and
//! `--remove` (or the reverter) returns links, addresses, routes and the files to exactly
//! what they were. Also the file trees of every stack through the binary (dry-run diffs,
//! modes, backups, JSON, auto detection, remove).

use crate::backends::{
    snapshot, tool_or_skip, tree, wait_for, wire_nic, INTERFACES, NETPLAN_USER, NETWORKD_USER, NIC,
    NIC_MAC, NM_USER,
};
use crate::common::{self, require_root, Netns};
use crate::host::{assert_same, net_snapshot};
use crate::lab::stop_child;
use crate::lab::topology;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A process that holds a private mount namespace inside a network namespace, prepared by
/// a fixed script (arguments as "$@"); programs run in both namespaces through nsenter.
/// Ended by its pid in every outcome, after the programs started in it.
struct Holder {
    child: Option<Child>,
    pid: u32,
    /// Programs started inside (daemons), ended first.
    procs: Vec<(Child, &'static str)>,
}

impl Holder {
    fn start(ns: &Netns, dir: &Path, script: &str, args: &[&str]) -> Holder {
        let f = dir.join("holder.sh");
        std::fs::write(
            &f,
            format!("set -e\n{script}\necho ready\nexec sleep 3600\n"),
        )
        .unwrap();
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "unshare",
                "--mount",
                "--propagation",
            ])
            .args(["private", "sh"])
            .arg(&f)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = child.id();
        let h = Holder {
            child: Some(child),
            pid,
            procs: vec![],
        };
        assert_eq!(line.trim(), "ready", "the holder's script failed");
        h
    }

    /// `program args` inside the holder's namespaces.
    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-m", "-n", "--", program])
            .args(args);
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program, args).output().unwrap()
    }

    /// A daemon inside, ended (by pid) before the holder.
    fn spawn(&mut self, what: &'static str, program: &str, args: &[&str], log: &Path) {
        let c = self
            .cmd(program, args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        self.procs.push((c, what));
    }

    /// `vbridge ARGS` inside, with a private state directory; its JSON when `-o json`.
    fn vbridge(&self, state: &Path, args: &[&str]) -> Output {
        let env = format!("VBRIDGE_STATE_DIR={}", state.display());
        let bin = common::vbridge_bin();
        let mut v = vec![env.as_str(), bin.to_str().unwrap()];
        v.extend_from_slice(args);
        self.run("env", &v)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        for (c, what) in self.procs.drain(..).rev() {
            stop_child(c, what, Duration::from_secs(5));
        }
        if let Some(c) = self.child.take() {
            stop_child(c, "mount-namespace holder", Duration::from_secs(2));
        }
    }
}

/// A daemon's log (`F` and `F.err`): its last lines on stderr when the test fails.
struct LogTailOnPanic(std::path::PathBuf);

impl Drop for LogTailOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default()
                + &std::fs::read_to_string(self.0.with_extension("err")).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(150)..].join("\n");
            eprintln!("--- the last lines of {}:\n{tail}", self.0.display());
        }
    }
}

/// Bind an empty directory over the other stacks' configuration, so the host's own files
/// cannot leak into the test (and `auto` sees only the test's stack).
const HIDE_OTHERS: &str = "empty=\"$1\"
for d in /etc/netplan /run/netplan /etc/NetworkManager/system-connections /etc/systemd/network /run/systemd/network /etc/network; do
  if [ -d \"$d\" ]; then mount --bind \"$empty\" \"$d\"; fi
done
";

#[track_caller]
fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The user's static address of the NIC and the LAN's gateway.
fn user_addr(subnet: u8) -> (String, String) {
    (
        topology::addr(subnet, 9, true),
        topology::addr(subnet, 1, false),
    )
}

/// Milliseconds since the Unix epoch, the clock of the reverter's record.
fn now_ms() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    d.unwrap().as_millis() as u64
}

/// The reverter's record of this window's revert: written after `since_ms` (a record of an
/// earlier window in the same state directory is not this one's), the pending file gone.
fn revert_record(state: &Path, since_ms: u64) -> Value {
    let file = state.join("last-revert-host-bridge.json");
    let mut rec = Value::Null;
    let done = wait_for(40, || {
        rec = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        rec["at_ms"].as_u64().is_some_and(|t| t >= since_ms)
            && !state.join("pending-host-bridge.json").exists()
    });
    assert!(done, "the reverter did not run (last record: {rec})");
    rec
}

/// After the reverter ran: the namespace and the file tree as before the change, and the
/// reverter process gone.
fn assert_reverted(
    host: &Netns,
    before: &Value,
    root: &Path,
    files_before: &std::collections::BTreeMap<String, (u32, Vec<u8>)>,
    j: &Value,
) {
    assert_same(
        &net_snapshot(host),
        before,
        "the reverter did not restore the namespace",
    );
    assert_eq!(
        &snapshot(root),
        files_before,
        "the reverter did not restore the files"
    );
    if let Some(pid) = j["reverter_pid"].as_u64() {
        assert!(
            wait_for(5, || !crate::lab::alive(pid as u32)),
            "reverter {pid} lingers"
        );
    }
}

/// `DEV`'s MTU in `ns`.
fn mtu_of(ns: &Netns, dev: &str) -> u32 {
    let o = ns.exec("cat", &[&format!("/sys/class/net/{dev}/mtu")]);
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// `--persist ... --mtu 9000 --apply` under a confirm window: the stack brings br0 and the
/// NIC up at 9000 from vbridge's files alone (`--persist` has no live step), and the reverter
/// puts the NIC back at its own MTU, the namespace and the files as `before` once `settle`
/// (waiting for the stack) returns.
fn mtu_from_the_files_then_reverted(
    h: &Holder,
    host: &Netns,
    state: &Path,
    persist: &[&str],
    before: &Value,
    root: &Path,
    settle: &dyn Fn(),
) {
    let files_before = snapshot(root);
    let nic_mtu = mtu_of(host, NIC);
    assert_ne!(nic_mtu, 9000);
    let mut args = persist.to_vec();
    args.extend_from_slice(&["--mtu", "9000", "--confirm-within", "8"]);
    let since = now_ms();
    let j = ok_json(&h.vbridge(state, &args));
    assert_eq!(j["pending"], true, "{j}");
    let t = std::time::Instant::now();
    let jumbo = wait_for(6, || {
        mtu_of(host, "br0") == 9000 && mtu_of(host, NIC) == 9000
    });
    assert!(
        jumbo,
        "from the files: br0 mtu {}, {NIC} mtu {}\n{}",
        mtu_of(host, "br0"),
        mtu_of(host, NIC),
        host.ip(&["-d", "link"])
    );
    eprintln!(
        "[{}] MTU 9000 on br0 and {NIC} from the stack's files, {:?} after the call",
        j["mode"].as_str().unwrap_or_default(),
        t.elapsed()
    );
    assert!(host.ip(&["link", "show", NIC]).contains("master br0"));
    let rec = revert_record(state, since);
    assert_eq!(rec["reverted"], true, "{rec:#}");
    assert!(
        wait_for(5, || mtu_of(host, NIC) == nic_mtu),
        "the reverter left {NIC} at mtu {}",
        mtu_of(host, NIC)
    );
    settle();
    assert_reverted(host, before, root, &files_before, &j);
}

/// ifupdown2 with vbridge's stanza for real: `ifup -a` brings the NIC up as the user's
/// interfaces file says (the state to return to); `--persist --backend ifupdown --apply`
/// writes the stanza, turns the NIC's stanza to manual and runs `ifreload -a` under the
/// probe; `--remove` gives the NIC its address and routes back and restores the files;
/// both equal to before. Then the same with `--confirm-within`, left to the reverter, and
/// again with `--mtu 9000` (br0 and the NIC at 9000 from the stanzas, then reverted).
#[test]
fn ifupdown2_persist_apply_and_remove_in_a_namespace() {
    let t = "ifupdown2_persist_apply_and_remove_in_a_namespace";
    if !require_root(t)
        || !tool_or_skip(t, "ifreload", "ifupdown2")
        || !tool_or_skip(t, "dnsmasq", "dnsmasq-base")
        || !tool_or_skip(t, "nsenter", "util-linux")
    {
        return;
    }
    let subnet = 245;
    let dir = tempfile::tempdir().unwrap();
    let (host, _lan, _dhcp) = wire_nic(subnet, dir.path());
    let (addr, gw) = user_addr(subnet);
    let user = format!(
        "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n\n# the NIC\nauto {NIC}\niface {NIC} inet static\n    address {addr}\n    gateway {gw}\n"
    );
    let root = tree(&[("etc/network/interfaces", &user)]);
    std::fs::create_dir_all(root.path().join("etc/network/interfaces.d")).unwrap();
    // ifupdown2 reads its own settings from /etc/network/ifupdown2: the tree has a copy.
    let conf = root.path().join("etc/network/ifupdown2");
    common::run(
        "cp",
        &["-r", "/etc/network/ifupdown2", conf.to_str().unwrap()],
    );
    let empty = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/network");
    let script = format!(
        "{HIDE_OTHERS}mount --bind \"$2\" /etc/network\nmkdir -p /run/network\nmount -t tmpfs tmpfs /run/network"
    );
    let h = Holder::start(
        &host,
        dir.path(),
        &script,
        &[empty.path().to_str().unwrap(), etc.to_str().unwrap()],
    );
    let up = h.run("ifup", &["-a"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let before = net_snapshot(&host);
    let files_before = snapshot(root.path());
    assert!(host.ip(&["-4", "addr"]).contains(&addr));
    let state = tempfile::tempdir().unwrap();
    let persist = [
        "-o",
        "json",
        "host-bridge",
        NIC,
        "--persist",
        "--backend",
        "ifupdown",
        "--address",
        &addr,
        "--gateway",
        &gw,
        "--apply",
    ];
    let j = ok_json(&h.vbridge(state.path(), &persist));
    assert_eq!(j["changed"], true, "{j}");
    assert_eq!(j["mode"], "ifupdown");
    assert_eq!(j["probe"]["answered"], true, "{j}");
    let links = host.ip(&["-d", "link", "show", NIC]);
    assert!(links.contains("master br0"), "{links}");
    assert!(host.ip(&["-4", "addr", "show", "br0"]).contains(&addr));
    assert!(!host.ip(&["-4", "addr", "show", NIC]).contains(&addr));
    assert!(host
        .ip(&["route"])
        .contains(&format!("default via {gw} dev br0")));
    // The files ifupdown reads: vbridge's stanza (0600) and the user's, edited with a backup.
    let ours = root.path().join("etc/network/interfaces.d/vbridge-br0");
    let mode = std::fs::metadata(&ours).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(root
        .path()
        .join("etc/network/interfaces.vbridge-bak-br0")
        .exists());

    let j = ok_json(&h.vbridge(state.path(), &["-o", "json", "host-bridge", "--remove"]));
    assert_eq!(j["changed"], true, "{j}");
    assert_eq!(j["nic"], NIC);
    assert_same(
        &net_snapshot(&host),
        &before,
        "--remove did not restore the namespace",
    );
    assert_eq!(
        snapshot(root.path()),
        files_before,
        "--remove did not restore the files"
    );
    // ifupdown2 agrees: the running state is the user's configuration again.
    let q = h.run("ifquery", &["-a", "-c"]);
    let qo = String::from_utf8_lossy(&q.stdout);
    assert!(!qo.contains("[fail]"), "{qo}");
    let j = ok_json(&h.vbridge(state.path(), &["-o", "json", "host-bridge", "--remove"]));
    assert_eq!(j["changed"], false, "second --remove: {j}");

    // Under a confirm window nobody confirms: the reverter puts files and network back.
    let mut windowed = persist.to_vec();
    windowed.extend_from_slice(&["--confirm-within", "2"]);
    let since = now_ms();
    let j = ok_json(&h.vbridge(state.path(), &windowed));
    assert_eq!(j["pending"], true, "{j}");
    assert!(host.ip(&["link", "show", NIC]).contains("master br0"));
    let rec = revert_record(state.path(), since);
    assert_eq!(rec["reverted"], true, "{rec:#}");
    assert_reverted(&host, &before, root.path(), &files_before, &j);
    let pause = || std::thread::sleep(Duration::from_secs(1));
    mtu_from_the_files_then_reverted(
        &h,
        &host,
        state.path(),
        &persist,
        &before,
        root.path(),
        &pause,
    );
}

/// systemd-networkd (with its own D-Bus, so `networkctl reload` reaches it) configures the
/// NIC from the user's .network file; `--persist --backend networkd --apply` makes it build
/// br0 from vbridge's files; `--remove` returns links, addresses, routes and files to
/// exactly what they were, and networkd reloading the user's file keeps it so. Then under a
/// confirm window, left to the reverter; and with `--mtu 9000` (br0 and the NIC at 9000 from
/// the .network files, the NIC's own MTU back after the revert).
#[test]
fn networkd_persist_apply_and_remove_in_a_namespace() {
    let t = "networkd_persist_apply_and_remove_in_a_namespace";
    if !require_root(t)
        || !tool_or_skip(t, "dnsmasq", "dnsmasq-base")
        || !tool_or_skip(t, "dbus-daemon", "dbus")
        || !tool_or_skip(t, "networkctl", "systemd")
        || !tool_or_skip(t, "nsenter", "util-linux")
    {
        return;
    }
    let subnet = 246;
    let dir = tempfile::tempdir().unwrap();
    let (host, _lan, _dhcp) = wire_nic(subnet, dir.path());
    let (addr, gw) = user_addr(subnet);
    let user = format!("[Match]\nName={NIC}\n\n[Network]\nAddress={addr}\nGateway={gw}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n");
    let root = tree(&[("etc/systemd/network/20-wired.network", &user)]);
    let empty = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/systemd/network");
    let script = format!(
        "{HIDE_OTHERS}mount --bind \"$2\" /etc/systemd/network
umount -l /sys
mount -t sysfs -o ro sysfs /sys
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/netif /run/dbus
chown systemd-network:systemd-network /run/systemd/netif
mount -t tmpfs tmpfs /run/dbus"
    );
    let mut h = Holder::start(
        &host,
        dir.path(),
        &script,
        &[empty.path().to_str().unwrap(), etc.to_str().unwrap()],
    );
    h.spawn(
        "dbus-daemon",
        "dbus-daemon",
        &["--system", "--nofork", "--nopidfile"],
        &dir.path().join("dbus.log"),
    );
    let bus = wait_for(10, || {
        h.run("test", &["-S", "/run/dbus/system_bus_socket"])
            .status
            .success()
    });
    assert!(bus, "no D-Bus socket");
    let log = dir.path().join("networkd.log");
    // Debug level with times: on a failure, its tail says what networkd did and when.
    h.spawn(
        "systemd-networkd",
        "env",
        &[
            "SYSTEMD_LOG_LEVEL=debug",
            "SYSTEMD_LOG_TIME=1",
            "/lib/systemd/systemd-networkd",
        ],
        &log,
    );
    let _tail = LogTailOnPanic(log.clone());
    let configured = wait_for(20, || {
        host.ip(&["-4", "addr", "show", NIC]).contains(&addr)
            && host.ip(&["route"]).contains(&format!("default via {gw}"))
    });
    assert!(
        configured,
        "networkd did not configure {NIC}: {}",
        host.ip(&["addr"])
    );
    // networkd answers on its bus name before vbridge's reload needs it.
    assert!(wait_for(10, || h
        .run("networkctl", &["list"])
        .status
        .success()));
    let before = net_snapshot(&host);
    let files_before = snapshot(root.path());
    let state = tempfile::tempdir().unwrap();
    let persist = [
        "-o",
        "json",
        "host-bridge",
        NIC,
        "--persist",
        "--backend",
        "networkd",
        "--address",
        &addr,
        "--gateway",
        &gw,
        "--apply",
        "--rollback-after",
        "15",
    ];
    let j = ok_json(&h.vbridge(state.path(), &persist));
    assert_eq!(j["changed"], true, "{j}");
    assert_eq!(j["probe"]["answered"], true, "{j}");
    let ready = wait_for(15, || {
        host.ip(&["-4", "addr", "show", "br0"]).contains(&addr)
    });
    assert!(ready, "br0 lacks {addr}: {}", host.ip(&["addr"]));
    let d = host.ip(&["-d", "link", "show", "br0"]);
    assert!(d.contains("stp_state 0") && d.contains(NIC_MAC), "{d}");
    assert!(host.ip(&["link", "show", NIC]).contains("master br0"));

    let j = ok_json(&h.vbridge(state.path(), &["-o", "json", "host-bridge", "--remove"]));
    assert_eq!(j["changed"], true, "{j}");
    assert!(j["notes"].to_string().contains("networkctl reload"), "{j}");
    assert_same(
        &net_snapshot(&host),
        &before,
        "--remove did not restore the namespace",
    );
    assert_eq!(
        snapshot(root.path()),
        files_before,
        "--remove did not restore the files"
    );
    // networkd reads the user's file again (the commands the note names): nothing moves.
    for args in [&["reload"][..], &["reconfigure", NIC]] {
        let r = h.run("networkctl", args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    // Once networkd has configured the NIC from the user's file (a reconfigure answers
    // before it starts; a fixed pause is too short on a loaded host).
    let configured = wait_for(20, || {
        let o = h.run("networkctl", &["list", "--no-legend", NIC]);
        String::from_utf8_lossy(&o.stdout).split_whitespace().last() == Some("configured")
    });
    assert!(configured, "networkd did not configure {NIC} again");
    assert_same(
        &net_snapshot(&host),
        &before,
        "networkd's reload changed the namespace",
    );
    let j = ok_json(&h.vbridge(state.path(), &["-o", "json", "host-bridge", "--remove"]));
    assert_eq!(j["changed"], false, "second --remove: {j}");

    // Under a confirm window nobody confirms: the reverter puts the files back, has
    // networkd reload them, and puts the NIC back as it was.
    let mut windowed = persist.to_vec();
    windowed.extend_from_slice(&["--confirm-within", "3"]);
    let since = now_ms();
    let out = h.vbridge(state.path(), &windowed);
    if !out.status.success() {
        let l = std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
        let tail: Vec<&str> = l.lines().rev().take(60).collect();
        panic!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let j = ok_json(&out);
    assert_eq!(j["pending"], true, "{j}");
    let rec = revert_record(state.path(), since);
    assert_eq!(rec["reverted"], true, "{rec:#}");
    std::thread::sleep(Duration::from_secs(1));
    assert_reverted(&host, &before, root.path(), &files_before, &j);
    let pause = || std::thread::sleep(Duration::from_secs(1));
    mtu_from_the_files_then_reverted(
        &h,
        &host,
        state.path(),
        &persist,
        &before,
        root.path(),
        &pause,
    );
}

/// Every stack through the binary, on file trees (`--root-dir`): `--dry-run` shows unified
/// diffs and writes nothing; the files come with their modes and backups; again is no
/// change; `--remove` puts the tree back byte for byte and a second `--remove` changes
/// nothing. `auto` picks the one stack that names the NIC and refuses two.
#[test]
fn every_stack_persists_and_removes_on_a_file_tree() {
    let t = "every_stack_persists_and_removes_on_a_file_tree";
    if !require_root(t) {
        return;
    }
    let nic = "enp3s0";
    let host = Netns::new("vbpt");
    host.ip(&["link", "add", nic, "type", "veth", "peer", "name", "peer0"]);
    host.ip(&["addr", "add", "10.77.247.9/24", "dev", nic]);
    host.ip(&["link", "set", nic, "up"]);
    let live_before = net_snapshot(&host);
    let state = tempfile::tempdir().unwrap();
    let tools = [
        ("netplan", "netplan", "netplan.io"),
        ("ifupdown", "ifquery", "ifupdown2"),
        ("nm", "nmcli", "network-manager"),
    ];
    for backend in ["netplan", "networkd", "ifupdown", "nm"] {
        if let Some((_, tool, pkg)) = tools.iter().find(|(b, _, _)| *b == backend) {
            if !tool_or_skip(t, tool, pkg) {
                continue;
            }
        }
        let root = tree(&[
            ("etc/network/interfaces", INTERFACES),
            ("etc/systemd/network/20-wired.network", NETWORKD_USER),
            (
                "etc/NetworkManager/system-connections/Wired.nmconnection",
                NM_USER,
            ),
            ("etc/netplan/01-old.yaml", "network:\n  version: 2\n"),
        ]);
        let r = root.path().to_str().unwrap();
        let files_before = snapshot(root.path());
        let args = |extra: &[&'static str]| {
            let mut v: Vec<String> = ["-o", "json"].iter().map(|s| s.to_string()).collect();
            v.extend(extra.iter().map(|s| s.to_string()));
            v.extend(
                [
                    "host-bridge",
                    nic,
                    "--persist",
                    "--backend",
                    backend,
                    "--root-dir",
                    r,
                    "--address",
                    "10.77.247.9/24",
                    "--gateway",
                    "10.77.247.1",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            v
        };
        let run = |v: Vec<String>| {
            let v: Vec<&str> = v.iter().map(String::as_str).collect();
            let bin = common::vbridge_bin();
            let env = format!("VBRIDGE_STATE_DIR={}", state.path().display());
            let mut all = vec![env.as_str(), bin.to_str().unwrap()];
            all.extend(v);
            host.exec("env", &all)
        };
        let j = ok_json(&run(args(&["--dry-run"])));
        assert_eq!(j["changed"], true, "{backend}: {j}");
        let diff = j["diff"].as_str().unwrap();
        assert!(
            diff.contains("--- /dev/null") && diff.contains("+++ "),
            "{backend}: {diff}"
        );
        assert_eq!(
            snapshot(root.path()),
            files_before,
            "{backend}: dry run wrote"
        );
        let j = ok_json(&run(args(&[])));
        assert_eq!(j["changed"], true, "{backend}: {j}");
        assert_eq!(j["backends"][0], backend);
        for f in j["files"].as_array().unwrap() {
            let p = f.as_str().unwrap();
            let m = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let want = if backend == "networkd" || p.ends_with("/interfaces") {
                0o644
            } else {
                0o600
            };
            assert_eq!(m, want, "{backend}: {p}");
        }
        for b in j["backups"].as_array().into_iter().flatten() {
            assert!(Path::new(b.as_str().unwrap()).exists(), "{backend}: {b}");
        }
        let j = ok_json(&run(args(&[])));
        assert_eq!(j["changed"], false, "{backend}: again: {j}");
        let rm = |extra: &[&str]| {
            let bin = common::vbridge_bin();
            let env = format!("VBRIDGE_STATE_DIR={}", state.path().display());
            let mut all = vec![env.as_str(), bin.to_str().unwrap(), "-o", "json"];
            all.extend_from_slice(extra);
            all.extend_from_slice(&["host-bridge", "--remove", "--root-dir", r]);
            host.exec("env", &all)
        };
        let j = ok_json(&rm(&["--dry-run"]));
        assert_eq!(j["changed"], true, "{backend}: {j}");
        assert!(
            j["diff"].as_str().unwrap().contains("+++ /dev/null"),
            "{backend}: {j}"
        );
        let j = ok_json(&rm(&[]));
        assert_eq!(j["changed"], true, "{backend}: {j}");
        assert_eq!(j["backends"][0], backend);
        assert_eq!(snapshot(root.path()), files_before, "{backend}: remove");
        let j = ok_json(&rm(&[]));
        assert_eq!(j["changed"], false, "{backend}: second remove: {j}");
    }
    assert_same(
        &net_snapshot(&host),
        &live_before,
        "file trees changed the network",
    );

    // auto: the one stack that names the NIC; two are refused, naming both files.
    let one = tree(&[("etc/systemd/network/20-wired.network", NETWORKD_USER)]);
    let two = tree(&[
        ("etc/systemd/network/20-wired.network", NETWORKD_USER),
        ("etc/netplan/50-cloud-init.yaml", NETPLAN_USER),
    ]);
    let base = [
        "-o",
        "json",
        "host-bridge",
        nic,
        "--persist",
        "--dhcp",
        "--root-dir",
    ];
    let mut a: Vec<&str> = base.to_vec();
    a.push(one.path().to_str().unwrap());
    let j = ok_json(&host.vbridge(&a));
    assert_eq!(j["mode"], "networkd", "{j}");
    let mut a: Vec<&str> = base.to_vec();
    a.push(two.path().to_str().unwrap());
    let out = host.vbridge(&a);
    assert_eq!(out.status.code(), Some(1));
    let err =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("more than one network stack")
            && err.contains("20-wired.network")
            && err.contains("50-cloud-init.yaml"),
        "{err}"
    );
}

/// A private system bus for NetworkManager: everyone may own and call anything, and no
/// service directory, so the bus starts no helper (nm-dispatcher) the test did not start.
const BUS_CONF: &str = "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\" \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context=\"default\">
    <allow user=\"*\"/>
    <allow own=\"*\"/>
    <allow send_destination=\"*\"/>
    <allow send_type=\"method_call\"/>
    <allow receive_sender=\"*\"/>
  </policy>
</busconfig>
";

/// NetworkManager 1.42 for real: with a read-only /sys it does not wait for udev, so it
/// manages the namespace's veth. It brings the NIC up from the user's profile; vbridge's
/// keyfiles (`--persist --backend nm --apply`: `nmcli connection reload`, `nmcli
/// connection up` of the port profile) make br0 with the NIC as its port and the address;
/// `--remove --apply` removes the keyfiles and has NetworkManager take down what it made:
/// the namespace and the files are as before. With `--mtu 9000` under a confirm window, NM
/// gives br0 (`ethernet.mtu` of a bridge profile) and the NIC 9000; the revert puts it back.
#[test]
fn networkmanager_persist_apply_and_remove_in_a_namespace() {
    let t = "networkmanager_persist_apply_and_remove_in_a_namespace";
    if !require_root(t)
        || !tool_or_skip(t, "dnsmasq", "dnsmasq-base")
        || !tool_or_skip(t, "dbus-daemon", "dbus")
        || !tool_or_skip(t, "NetworkManager", "network-manager")
        || !tool_or_skip(t, "nsenter", "util-linux")
    {
        return;
    }
    let subnet = 248;
    let dir = tempfile::tempdir().unwrap();
    let (host, _lan, _dhcp) = wire_nic(subnet, dir.path());
    let (addr, gw) = user_addr(subnet);
    let profile = format!(
        "[connection]\nid=Wired\nuuid=0c52b4c8-8010-4a1d-9f00-809e9ded7d16\ntype=ethernet\ninterface-name={NIC}\n\n[ethernet]\n\n[ipv4]\naddress1={addr},{gw}\nmethod=manual\n\n[ipv6]\nmethod=disabled\n"
    );
    let root = tree(&[
        (
            "etc/NetworkManager/NetworkManager.conf",
            "[main]\nplugins=keyfile\nno-auto-default=*\n",
        ),
        (
            "etc/NetworkManager/system-connections/Wired.nmconnection",
            &profile,
        ),
        ("bus.conf", BUS_CONF),
    ]);
    let user = root
        .path()
        .join("etc/NetworkManager/system-connections/Wired.nmconnection");
    std::fs::set_permissions(&user, std::fs::Permissions::from_mode(0o600)).unwrap();
    let var = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/NetworkManager");
    let script = format!(
        "{HIDE_OTHERS}mount --bind \"$2\" /etc/NetworkManager
mount --bind \"$3\" /var/lib/NetworkManager
umount -l /sys
mount -t sysfs -o ro sysfs /sys
mkdir -p /run/dbus /run/NetworkManager
mount -t tmpfs tmpfs /run/dbus
mount -t tmpfs tmpfs /run/NetworkManager"
    );
    let mut h = Holder::start(
        &host,
        dir.path(),
        &script,
        &[
            empty.path().to_str().unwrap(),
            etc.to_str().unwrap(),
            var.path().to_str().unwrap(),
        ],
    );
    let bus_conf = format!("--config-file={}", root.path().join("bus.conf").display());
    h.spawn(
        "dbus-daemon",
        "dbus-daemon",
        &[&bus_conf, "--nofork", "--nopidfile"],
        &dir.path().join("dbus.log"),
    );
    let bus = wait_for(10, || {
        h.run("test", &["-S", "/run/dbus/system_bus_socket"])
            .status
            .success()
    });
    assert!(bus, "no D-Bus socket");
    let log = dir.path().join("nm.log");
    h.spawn(
        "NetworkManager",
        "NetworkManager",
        &["--no-daemon", "--debug", "--log-level=INFO"],
        &log,
    );
    let nm_log = || {
        std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
            + &std::fs::read_to_string(&log).unwrap_or_default()
    };
    let configured = wait_for(20, || {
        host.ip(&["-4", "addr", "show", NIC]).contains(&addr)
            && host.ip(&["route"]).contains(&format!("default via {gw}"))
    });
    assert!(
        configured,
        "NetworkManager did not configure {NIC}: {}\n{}",
        host.ip(&["addr"]),
        nm_log()
    );
    let settled = |what: &str| {
        // NetworkManager has finished with every device (nothing "connecting").
        let ok = wait_for(20, || {
            let o = h.run("nmcli", &["-t", "-f", "DEVICE,STATE", "device"]);
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            o.status.success() && !s.contains("connecting") && !s.contains("deactivating")
        });
        assert!(ok, "{what}: NetworkManager did not settle\n{}", nm_log());
    };
    settled("start");
    let before = net_snapshot(&host);
    let files_before = snapshot(root.path());
    let state = tempfile::tempdir().unwrap();
    let persist = [
        "-o",
        "json",
        "host-bridge",
        NIC,
        "--persist",
        "--backend",
        "nm",
        "--address",
        &addr,
        "--gateway",
        &gw,
        "--apply",
        "--rollback-after",
        "15",
    ];
    let out = h.vbridge(state.path(), &persist);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        nm_log()
    );
    let j = ok_json(&out);
    assert_eq!(j["mode"], "nm", "auto did not find NetworkManager: {j}");
    assert_eq!(j["changed"], true, "{j}");
    assert_eq!(j["probe"]["answered"], true, "{j}");
    let ready = wait_for(15, || {
        host.ip(&["-4", "addr", "show", "br0"]).contains(&addr)
    });
    assert!(
        ready,
        "br0 lacks {addr}: {}\n{}",
        host.ip(&["addr"]),
        nm_log()
    );
    let d = host.ip(&["-d", "link", "show", "br0"]);
    assert!(d.contains("stp_state 0") && d.contains(NIC_MAC), "{d}");
    assert!(host.ip(&["link", "show", NIC]).contains("master br0"));
    let active = h.run(
        "nmcli",
        &["-t", "-f", "NAME,DEVICE", "connection", "show", "--active"],
    );
    let active = String::from_utf8_lossy(&active.stdout);
    assert!(
        active.contains("vbridge-br0:br0")
            && active.contains(&format!("vbridge-br0-port-{NIC}:{NIC}")),
        "{active}"
    );
    for f in j["files"].as_array().unwrap() {
        // Seen from here, the holder's /etc/NetworkManager is the tree's.
        let rel = f
            .as_str()
            .unwrap()
            .trim_start_matches("/etc/NetworkManager/");
        let m = std::fs::metadata(etc.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, 0o600, "{f}");
    }
    settled("persist");

    // NetworkManager manages both devices: --remove --apply lets it take down what it made
    // (`nmcli connection reload` once the keyfiles are gone) instead of racing it live;
    // the probe still guards the result.
    let remove = ["-o", "json", "host-bridge", "--remove", "--apply"];
    let out = h.vbridge(state.path(), &remove);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        nm_log()
    );
    let j = ok_json(&out);
    assert_eq!(j["changed"], true, "{j}");
    assert_eq!(j["probe"]["answered"], true, "{j}");
    assert_eq!(
        snapshot(root.path()),
        files_before,
        "--remove did not restore the files"
    );
    settled("remove");
    let back = wait_for(20, || {
        let now = net_snapshot(&host);
        now["routes4"] == before["routes4"] && now["links"] == before["links"]
    });
    assert!(back, "{}\n{}", host.ip(&["addr"]), nm_log());
    assert_same(
        &net_snapshot(&host),
        &before,
        "--remove did not restore the namespace",
    );
    let j = ok_json(&h.vbridge(state.path(), &remove));
    assert_eq!(j["changed"], false, "second --remove: {j}");

    // Under a confirm window nobody confirms: the reverter removes the keyfiles, has
    // NetworkManager reload, and the NIC is back as it was.
    let mut windowed = persist.to_vec();
    windowed.extend_from_slice(&["--confirm-within", "3"]);
    let since = now_ms();
    let j = ok_json(&h.vbridge(state.path(), &windowed));
    assert_eq!(j["pending"], true, "{j}");
    let rec = revert_record(state.path(), since);
    assert_eq!(rec["reverted"], true, "{rec:#}\n{}", nm_log());
    settled("revert");
    assert_reverted(&host, &before, root.path(), &files_before, &j);
    mtu_from_the_files_then_reverted(
        &h,
        &host,
        state.path(),
        &persist,
        &before,
        root.path(),
        &|| settled("mtu revert"),
    );
}

/// `--remove` is also the inverse of `--live`: the NIC's address and both its routes come
/// back exactly, the bridge is gone, a second run changes nothing; a bridge that still has
/// another port (a VM's tap, here a veth) is refused and left alone; an unanswered probe
/// rolls the removal back to the bridged state.
#[test]
fn remove_undoes_live_exactly() {
    if !require_root("remove_undoes_live_exactly") {
        return;
    }
    let host = Netns::new("vbrh");
    let gw = Netns::new("vbrg");
    host.ip(&[
        "link", "add", "eth1", "type", "veth", "peer", "name", "gw0", "netns", &gw.name,
    ]);
    host.ip(&["addr", "add", "10.77.249.2/24", "dev", "eth1"]);
    host.ip(&["link", "set", "eth1", "up"]);
    gw.ip(&["addr", "add", "10.77.249.1/24", "dev", "gw0"]);
    gw.ip(&["link", "set", "gw0", "up"]);
    host.ip(&["route", "add", "default", "via", "10.77.249.1"]);
    host.ip(&[
        "route",
        "add",
        "10.249.0.0/16",
        "via",
        "10.77.249.254",
        "metric",
        "50",
    ]);
    let before = net_snapshot(&host);
    let state = tempfile::tempdir().unwrap();
    let vb = |args: &[&str]| {
        let env = format!("VBRIDGE_STATE_DIR={}", state.path().display());
        let bin = common::vbridge_bin();
        let mut v = vec![env.as_str(), bin.to_str().unwrap(), "-o", "json"];
        v.extend_from_slice(args);
        host.exec("env", &v)
    };
    let j = ok_json(&vb(&["host-bridge", "eth1", "--live"]));
    assert_eq!(j["changed"], true, "{j}");
    let bridged = net_snapshot(&host);
    // Dry run: the plan, nothing done.
    let j = ok_json(&vb(&["--dry-run", "host-bridge", "--remove"]));
    assert_eq!(j["changed"], true, "{j}");
    assert!(j["steps"].to_string().contains("delete bridge br0"), "{j}");
    assert_same(
        &net_snapshot(&host),
        &bridged,
        "dry run changed the network",
    );
    // A probe nobody answers: rolled back to the bridged state.
    let out = vb(&[
        "host-bridge",
        "--remove",
        "--probe",
        "10.77.249.99",
        "--rollback-after",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["rolled_back"], true, "{j}");
    assert_same(
        &net_snapshot(&host),
        &bridged,
        "the rollback did not rebuild the bridge",
    );
    // Another port on the bridge: refused, nothing touched.
    host.ip(&[
        "link", "add", "vnet7", "type", "veth", "peer", "name", "vnet7p",
    ]);
    host.ip(&["link", "set", "vnet7", "master", "br0"]);
    let with_port = net_snapshot(&host);
    let out = vb(&["host-bridge", "eth1", "--remove"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("other ports (vnet7)"), "{err}");
    assert_same(
        &net_snapshot(&host),
        &with_port,
        "a refusal changed something",
    );
    host.ip(&["link", "del", "vnet7"]);
    // Answered: exactly as before --live.
    let j = ok_json(&vb(&["host-bridge", "--remove"]));
    assert_eq!(j["changed"], true, "{j}");
    assert_eq!(j["nic"], "eth1");
    assert_eq!(j["probe"]["answered"], true, "{j}");
    assert_same(
        &net_snapshot(&host),
        &before,
        "--remove did not undo --live",
    );
    let j = ok_json(&vb(&["host-bridge", "--remove"]));
    assert_eq!(j["changed"], false, "second --remove: {j}");
}
