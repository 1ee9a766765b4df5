//! The lab: a real libvirtd + QEMU guests on a bridge, inside network namespaces, for the
//! root-only tests (hotplug, attach on a real daemon, verify, doctor faults).
//!
//! ```text
//! [host netns]  vnetX (libvirt's TAP) --\
//!                                        br0 (10.77.N.2/24) -- uplink0 (veth, the "physical NIC")
//! [lan netns]                                                   lan0 (veth peer) 10.77.N.1/24
//!                                                               dnsmasq DHCP 10.77.N.100-150
//! ```
//!
//! ```ignore
//! let lab = Lab::start("smoke");                       // panics with the reason on failure
//! let dom = lab.define_guest(GuestSpec::new("g", vec![Nic::bridge(lab.bridge)]));
//! let ip = lab.wait_console(&dom, "LEASE ip=", Duration::from_secs(60)).expect("lease");
//! assert!(lab.ping_from_lan(&ip));
//! let out = lab.vbridge(&["verify", &dom]);           // runs in the host netns with -c URI
//! let trace = lab.trace();
//! drop(lab);                                           // tears everything down, every outcome
//! lab::assert_nothing_left(&trace);
//! ```
//!
//! API (all methods panic with a message saying what failed; a broken lab fails the test,
//! it never skips it):
//! - `Lab::start(name: &str) -> Lab`; fields `host: Netns`, `lan: Netns`, `bridge: &'static str`
//!   ("br0", private to the lab's netns), `subnet: u8` (the N of 10.77.N.0/24), `id: String`,
//!   `timings: Timings`.
//! - `uri() -> &str`, `virsh(&[&str]) -> Output`, `virsh_ok(&[&str]) -> String`,
//!   `vbridge(&[&str]) -> Output`, `vbridge_json(state: &Path, &[&str]) -> (Output, Value)`.
//! - `define_guest(GuestSpec) -> String` (the domain name), `console(&str) -> String`,
//!   `wait_console(&str, marker, Duration) -> Option<String>`,
//!   `wait_console_from(&str, marker, from: usize, Duration) -> Option<(String, usize)>`.
//! - `define_nat_network(label) -> String`, `nat_prefix() -> String` (10.78.N.).
//! - `kill_libvirtd()` (SIGKILL, as a crash; `libvirtd_pid()` + `kill_libvirtd_pid(pid)` to
//!   kill without a /proc walk in between), `restart_libvirtd()` (on the same state).
//! - `ping_from_lan(&str) -> bool`, `wait_ping(&str, Duration) -> bool`, `leases() -> String`,
//!   `bridge_ports() -> Vec<String>`, `addr(u8) -> String`, `processes() -> Vec<u32>`,
//!   `peak_rss_kib() -> u64`, `trace() -> Trace`; `lab::assert_nothing_left(&Trace)`,
//!   `lab::finish(Lab, what)` (drop, assert nothing left, print teardown time and RSS).
//!
//! Parallelism: at most [`MAX_LABS`] labs run at once in a test process (each guest is
//! ~230 MB of TCG QEMU on a 2-core machine); further `Lab::start` calls wait their turn.

// A shared API: not every test uses every part of it.
#![allow(dead_code)]

pub mod assets;
pub mod chroot;
pub mod daemon;
pub mod delay_proxy;
pub mod guest;
pub mod sshd;
pub mod topology;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub use chroot::Libvirt;
pub use guest::{Dhcp as GuestDhcp, GuestSpec, Nic};

use crate::common::{run_status, unique, vbridge_bin, Netns};
use daemon::Daemon;
use topology::Dhcp;

/// Labs allowed to run at once in one test process.
pub const MAX_LABS: usize = 2;

/// How long set-up steps took, for the tests to print.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Namespaces, bridge, veth, addresses, dnsmasq.
    pub network: Duration,
    /// libvirtd from spawn to answering on its socket.
    pub libvirtd: Duration,
    /// Building or loading the cached kernel and initramfs.
    pub assets: Duration,
    /// Time spent waiting for a free lab slot.
    pub queued: Duration,
}

/// One lab. Dropping it tears everything down: domains, libvirtd, dnsmasq, namespaces.
pub struct Lab {
    pub id: String,
    pub bridge: &'static str,
    pub subnet: u8,
    pub timings: Timings,
    // Drop order matters: the explicit Drop stops processes, then the namespaces go,
    // then the directory, then the slot is released.
    daemon: Option<Daemon>,
    dhcp: Option<Dhcp>,
    pub host: Netns,
    pub lan: Netns,
    dir: tempfile::TempDir,
    _slot: Slot,
}

impl Lab {
    /// Build a complete lab on the machine's own libvirtd. `name` labels it in logs and
    /// temp paths.
    pub fn start(name: &str) -> Lab {
        Lab::build(name, Libvirt::System, &[])
    }

    /// A lab whose libvirtd lacks the connection drivers named in `without` (`["network"]`:
    /// a host where libvirt's network driver is not installed).
    pub fn start_without(name: &str, without: &[&str]) -> Lab {
        Lab::build(name, Libvirt::System, without)
    }

    /// Build a complete lab whose libvirtd is `libvirt` (the chroot is built first if needed;
    /// `timings.libvirtd` does not include that build).
    pub fn start_with(name: &str, libvirt: Libvirt) -> Lab {
        Lab::build(name, libvirt, &[])
    }

    fn build(name: &str, libvirt: Libvirt, without: &[&str]) -> Lab {
        if libvirt == Libvirt::Backports {
            chroot::chroot();
        }
        let t0 = Instant::now();
        let slot = Slot::take();
        sweep_stale_labs();
        let queued = t0.elapsed();

        let t = Instant::now();
        assets::assets();
        let assets_time = t.elapsed();

        let t = Instant::now();
        let id = unique("lab");
        // A short path: the libvirtd socket lives under it (sun_path is 108 bytes).
        let dir = tempfile::Builder::new()
            .prefix(&format!("vb-{}-{id}-", short(name)))
            .tempdir()
            .expect("lab temp dir");
        fs::create_dir_all(dir.path().join("console")).unwrap();
        let host = Netns::new("labh");
        let lan = Netns::new("labl");
        let mut lab = Lab {
            id,
            bridge: topology::BRIDGE,
            subnet: subnet(),
            timings: Timings {
                queued,
                assets: assets_time,
                ..Timings::default()
            },
            daemon: None,
            dhcp: None,
            host,
            lan,
            dir,
            _slot: slot,
        };
        // From here a panic unwinds through `lab`'s Drop, which cleans up any partial state.
        topology::wire(&lab.host, &lab.lan, lab.subnet);
        lab.dhcp = Some(Dhcp::start(&lab.lan, lab.subnet, lab.dir.path()));
        lab.timings.network = t.elapsed();

        let t = Instant::now();
        lab.daemon = Some(match libvirt {
            Libvirt::System => {
                Daemon::start_with(&lab.host, lab.dir.path(), &assets::cache_dir(), without)
            }
            Libvirt::Backports => {
                let c = chroot::chroot();
                let name = c.root.file_name().unwrap().to_string_lossy();
                let caps = assets::cache_dir().join(format!("qemu-capabilities-{name}"));
                Daemon::start_chroot(&lab.host, lab.dir.path(), &c.root, &caps)
            }
        });
        lab.timings.libvirtd = t.elapsed();
        lab
    }

    /// `qemu:///system?socket=<run dir>/libvirt-sock`
    pub fn uri(&self) -> &str {
        &self.daemon().uri
    }

    /// libvirtd's own pid (finding it walks /proc: take it before a kill that must be quick).
    pub fn libvirtd_pid(&self) -> u32 {
        self.daemon().libvirtd_pid().expect("libvirtd runs")
    }

    /// SIGKILL libvirtd itself, as a crash would end it (tini, its parent, then exits).
    pub fn kill_libvirtd(&self) {
        self.kill_libvirtd_pid(self.libvirtd_pid());
    }

    /// [`Lab::kill_libvirtd`] with its pid taken beforehand ([`Lab::libvirtd_pid`]).
    pub fn kill_libvirtd_pid(&self, pid: u32) {
        // SAFETY: kill(2) on the pid of libvirtd in this lab's own process tree.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let t0 = Instant::now();
        while alive(pid) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "libvirtd survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Start libvirtd again on the lab's state (its definitions on disk), as after a crash.
    pub fn restart_libvirtd(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        self.daemon = Some(Daemon::start(
            &self.host,
            self.dir.path(),
            &assets::cache_dir(),
        ));
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("lab daemon running")
    }

    /// The lab's temp directory (logs, console files, leases).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `10.77.N.host`
    pub fn addr(&self, host: u8) -> String {
        topology::addr(self.subnet, host, false)
    }

    /// `virsh -c URI ARGS...`, whatever its status.
    pub fn virsh(&self, args: &[&str]) -> Output {
        let mut v = vec!["-c", self.uri()];
        v.extend_from_slice(args);
        run_status("virsh", &v)
    }

    /// The persistent definition as libvirt prints it (what a backup holds), without the
    /// newline virsh adds of its own.
    pub fn inactive_xml(&self, dom: &str) -> String {
        let x = self.virsh_ok(&["dumpxml", "--inactive", "--security-info", dom]);
        x.trim_end().to_string()
    }

    /// The one NIC of domain `dom`, from its live XML.
    pub fn live_nic(&self, dom: &str) -> vbridge::domxml::Nic {
        let nics = vbridge::domxml::nics(&self.virsh_ok(&["dumpxml", dom])).unwrap();
        assert_eq!(nics.len(), 1, "{nics:?}");
        nics.into_iter().next().unwrap()
    }

    /// `attach --live` of running `dom` onto a bridge that leads nowhere (`brdead`, made here:
    /// no uplink, no DHCP): it must fail with the move reverted and the definition as it was.
    /// Returns the report and how long the call took.
    pub fn live_move_to_dead_bridge(
        &self,
        state: &Path,
        dom: &str,
    ) -> (serde_json::Value, Duration) {
        self.host.ip(&["link", "add", "brdead", "type", "bridge"]);
        self.host.ip(&["link", "set", "brdead", "up"]);
        let before = self.inactive_xml(dom);
        let t = Instant::now();
        let (out, r) = self.vbridge_json(
            state,
            &[
                "attach",
                dom,
                "--live",
                "--bridge",
                "brdead",
                "--verify-within",
                "4",
            ],
        );
        let took = t.elapsed();
        assert_eq!(out.status.code(), Some(1), "{r}");
        assert_eq!(r["domains"][0]["live"]["reverted"], true, "{r}");
        assert_eq!(
            self.inactive_xml(dom),
            before,
            "the definition is not what it was"
        );
        (r, took)
    }

    /// `virsh -c URI ARGS...`; panics with its stderr unless it succeeds; returns stdout.
    pub fn virsh_ok(&self, args: &[&str]) -> String {
        let out = self.virsh(args);
        assert!(
            out.status.success(),
            "virsh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The vbridge binary inside the host netns with `-c URI` first.
    pub fn vbridge(&self, args: &[&str]) -> Output {
        let bin = vbridge_bin();
        let mut v = vec!["-c", self.uri()];
        v.extend_from_slice(args);
        self.host.exec(bin.to_str().unwrap(), &v)
    }

    /// The vbridge binary inside the host netns with `-c URI -o json` and its own state
    /// directory (`VBRIDGE_STATE_DIR=state`); returns the output and stdout parsed as JSON.
    pub fn vbridge_json(&self, state: &Path, args: &[&str]) -> (Output, serde_json::Value) {
        let bin = vbridge_bin();
        let env = format!("VBRIDGE_STATE_DIR={}", state.display());
        let mut v = vec![
            env.as_str(),
            bin.to_str().unwrap(),
            "-c",
            self.uri(),
            "-o",
            "json",
        ];
        v.extend_from_slice(args);
        let out = self.host.exec("env", &v);
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "vbridge {args:?}: not JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out, json)
    }

    /// Define (and, if `spec.running`, start) a guest; returns its domain name, unique per lab.
    pub fn define_guest(&self, spec: GuestSpec) -> String {
        let a = assets::assets();
        let name = format!("{}-{}", self.id, spec.name);
        let xml = guest::domain_xml(
            &spec,
            &name,
            &a.kernel,
            &a.initrd,
            &self.console_path(&name),
            guest::domain_type(),
        );
        let file = self.dir().join(format!("{name}.xml"));
        fs::write(&file, xml).unwrap();
        self.virsh_ok(&["define", file.to_str().unwrap()]);
        if spec.running {
            self.virsh_ok(&["start", &name]);
        }
        name
    }

    /// Define and start a libvirt NAT network (`<forward mode='nat'/>`, 10.78.N.0/24 with
    /// libvirt's own dnsmasq serving .100-.150, told `no-ping` as the LAN's dnsmasq is, else each
    /// lease waits ~3 s for an ICMP probe) inside the private daemon; returns its name.
    /// Its bridge (virbrX), dnsmasq and iptables rules all live in the lab's host netns, and go
    /// with the daemon's process tree and the namespace at teardown.
    pub fn define_nat_network(&self, label: &str) -> String {
        let name = format!("{}-{label}", self.id);
        let net = |h: u8| format!("10.78.{}.{h}", self.subnet);
        let xml = format!(
            "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\n  \
             <name>{name}</name>\n  <forward mode='nat'/>\n  \
             <bridge stp='off' delay='0'/>\n  <ip address='{gw}' netmask='255.255.255.0'>\n    \
             <dhcp><range start='{lo}' end='{hi}'/></dhcp>\n  </ip>\n  \
             <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options>\n</network>\n",
            name = vbridge::xml::escape(&name),
            gw = net(1),
            lo = net(100),
            hi = net(150),
        );
        let file = self.dir().join(format!("{name}.net.xml"));
        fs::write(&file, xml).unwrap();
        self.virsh_ok(&["net-define", file.to_str().unwrap()]);
        let out = self.virsh(&["net-start", &name]);
        assert!(
            out.status.success(),
            "the NAT network does not start in the lab: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(self.daemon().run_dir.join("libvirtd.log"))
                .map(|l| l.lines().rev().take(15).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default()
        );
        name
    }

    /// `10.78.N.` - the prefix of the NAT network's addresses.
    pub fn nat_prefix(&self) -> String {
        format!("10.78.{}.", self.subnet)
    }

    /// The serial console file of a domain.
    pub fn console_path(&self, domain: &str) -> PathBuf {
        self.dir().join("console").join(format!("{domain}.log"))
    }

    /// The console output so far ("" before the guest starts).
    pub fn console(&self, domain: &str) -> String {
        let b = fs::read(self.console_path(domain)).unwrap_or_default();
        String::from_utf8_lossy(&b).into_owned()
    }

    /// Wait for `marker` on the console and return the word after it (the IP for
    /// `"LEASE ip="`), or None after `timeout`.
    pub fn wait_console(&self, domain: &str, marker: &str, timeout: Duration) -> Option<String> {
        self.wait_console_from(domain, marker, 0, timeout)
            .map(|(w, _)| w)
    }

    /// Like `wait_console`, looking only at console bytes from offset `from` on (pass
    /// `console(domain).len()` or a previous returned offset to wait for a *new* marker).
    pub fn wait_console_from(
        &self,
        domain: &str,
        marker: &str,
        from: usize,
        timeout: Duration,
    ) -> Option<(String, usize)> {
        let t0 = Instant::now();
        loop {
            if let Some(hit) = guest::find_marker(&self.console(domain), marker, from) {
                return Some(hit);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// One `busybox ping -c1 -W1 IP` from the LAN namespace.
    pub fn ping_from_lan(&self, ip: &str) -> bool {
        self.lan
            .exec("busybox", &["ping", "-c1", "-W1", ip])
            .status
            .success()
    }

    /// Ping from the LAN until it answers or `timeout` passes.
    pub fn wait_ping(&self, ip: &str, timeout: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            if self.ping_from_lan(ip) {
                return true;
            }
            if t0.elapsed() > timeout {
                return false;
            }
        }
    }

    /// dnsmasq's lease file.
    pub fn leases(&self) -> String {
        self.dhcp.as_ref().map(Dhcp::leases).unwrap_or_default()
    }

    /// Names of the ports of the lab's bridge (`ip -j link show master br0`).
    pub fn bridge_ports(&self) -> Vec<String> {
        let out = self.host.ip(&["-j", "link", "show", "master", self.bridge]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every process the lab runs: tini, libvirtd, QEMU, dnsmasq.
    pub fn processes(&self) -> Vec<u32> {
        let mut v = Vec::new();
        if let Some(d) = &self.daemon {
            v.extend(d.pid());
            v.extend(d.processes());
        }
        if let Some(d) = &self.dhcp {
            v.extend(d.pid());
        }
        v
    }

    /// Sum of the peak resident set (VmHWM) of the lab's processes, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.processes()
            .into_iter()
            .filter_map(|p| status_field(p, "VmHWM:"))
            .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// What `assert_nothing_left` checks after the lab is dropped.
    pub fn trace(&self) -> Trace {
        Trace {
            netns: vec![self.host.name.clone(), self.lan.name.clone()],
            pids: self.processes(),
            dir: self.dir().to_path_buf(),
            id: self.id.clone(),
        }
    }

    /// Destroy every domain of the private daemon (bounded by libvirt's own timeouts).
    fn destroy_domains(&self) {
        let Some(d) = &self.daemon else { return };
        if d.pid().is_none() {
            return;
        }
        let out = self.virsh(&["list", "--name", "--state-running", "--state-paused"]);
        for dom in String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            let _ = self.virsh(&["destroy", dom]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Each step tolerates the state a failed start or test left behind.
        self.destroy_domains();
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        if let Some(mut d) = self.dhcp.take() {
            d.stop();
        }
        // host, lan (ip netns del), dir and the slot go with the fields.
    }
}

/// What a lab leaves to check after it is gone.
#[derive(Clone, Debug)]
pub struct Trace {
    pub netns: Vec<String>,
    pub pids: Vec<u32>,
    pub dir: PathBuf,
    pub id: String,
}

/// Tear the lab down, panic if anything of it is left, and print how long the teardown took
/// and the peak RSS of the lab's processes, under `what`.
pub fn finish(lab: Lab, what: &str) {
    let trace = lab.trace();
    let rss = lab.peak_rss_kib();
    let t = Instant::now();
    drop(lab);
    let teardown = t.elapsed();
    assert_nothing_left(&trace);
    eprintln!(
        "{what}: teardown {teardown:?}, peak RSS of lab processes {} MiB",
        rss / 1024
    );
}

/// Panic unless the lab is entirely gone: no namespace, none of its processes (also none
/// whose command line names its directory or id), no mount mentioning it, no temp dir.
pub fn assert_nothing_left(t: &Trace) {
    let mut left = Vec::new();
    for ns in &t.netns {
        if Path::new("/run/netns").join(ns).exists() {
            left.push(format!("netns {ns}"));
        }
    }
    // A process the teardown ended may still be on its way out (its command line already
    // gone, its state not yet Z) on a loaded machine: give it a few seconds to finish dying.
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in &t.pids {
        if alive(pid) {
            left.push(format!("process {pid} ({})", cmdline(pid)));
        }
    }
    let dir = t.dir.to_string_lossy().into_owned();
    for pid in all_pids() {
        let c = cmdline(pid);
        if alive(pid) && (c.contains(&dir) || c.contains(&t.id)) {
            left.push(format!("process {pid} ({c})"));
        }
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        if line.contains(&dir) || t.netns.iter().any(|n| line.contains(n.as_str())) {
            left.push(format!("mount {line}"));
        }
    }
    if t.dir.exists() {
        left.push(format!("directory {dir}"));
    }
    assert!(left.is_empty(), "lab {} left behind: {left:#?}", t.id);
}

/// Remove what labs of test processes that no longer exist left behind (a run killed with
/// SIGKILL cannot clean up): namespaces named like ours whose creating process is gone, and
/// the processes still inside them (libvirtd, QEMU, dnsmasq of that lab), by pid.
/// Runs once per test process.
fn sweep_stale_labs() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        let Ok(rd) = fs::read_dir("/run/netns") else {
            return;
        };
        let live: Vec<u32> = all_pids().into_iter().map(|p| p % 100_000).collect();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // common::unique: prefix + 5 digits of the creator's pid + 3 digits of counter.
            let Some(digits) = name
                .strip_prefix("labh")
                .or_else(|| name.strip_prefix("labl"))
            else {
                continue;
            };
            if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let owner: u32 = digits[..5].parse().unwrap();
            if live.contains(&owner) {
                continue; // maybe another test process's live lab: never touch it
            }
            let pids = run_status("ip", &["netns", "pids", &name]);
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    eprintln!("lab: ending pid {pid} left in stale namespace {name}");
                    // SAFETY: kill(2) on a process inside a namespace only labs create.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            eprintln!("lab: deleting stale namespace {name}");
            let _ = run_status("ip", &["netns", "del", &name]);
        }
        // Temp dirs "vb-<label>-lab<pid5><n3>-<random>" of dead processes.
        let Ok(rd) = fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(owner) = name
                .strip_prefix("vb-")
                .and_then(|r| r.split_once("-lab"))
                .map(|(_, r)| r)
                .filter(|r| r.len() > 9 && r.as_bytes()[8] == b'-')
                .and_then(|r| r[..5].parse::<u32>().ok())
            else {
                continue;
            };
            if !live.contains(&owner) {
                eprintln!("lab: removing stale {}", e.path().display());
                let _ = fs::remove_dir_all(e.path());
            }
        }
    });
}

/// A lab slot; at most MAX_LABS exist at once.
struct Slot;

static SLOTS: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

impl Slot {
    fn take() -> Slot {
        let mut n = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= MAX_LABS {
            n = SLOT_FREED.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        SLOT_FREED.notify_one();
    }
}

/// N of 10.77.N.0/24: differs between labs of a process and, mostly, between processes.
/// Labs are in separate namespaces, so a clash would be harmless anyway.
fn subnet() -> u8 {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    (10 + (std::process::id().wrapping_mul(7).wrapping_add(n)) % 240) as u8
}

fn short(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect()
}

/// End a child we started: SIGTERM, wait up to `grace`, then SIGKILL and reap.
pub(crate) fn stop_child(mut child: Child, what: &str, grace: Duration) {
    let pid = child.id() as i32;
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // SAFETY: kill(2) on the pid of our own unreaped child: it cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < grace {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("lab: {what} (pid {pid}) ignored SIGTERM for {grace:?}; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether a process exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    match status_field(pid, "State:") {
        Some(s) => !s.starts_with('Z') && !s.starts_with('X'),
        None => false,
    }
}

fn status_field(pid: u32, key: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// All processes below `root` (not including it), from the ppid links in /proc.
pub(crate) fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| {
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // The command name may contain spaces and parentheses: parse after the last ')'.
            let rest = &stat[stat.rfind(')')? + 1..];
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parents {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}
