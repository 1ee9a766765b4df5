//! NetworkManager: two keyfiles in /etc/NetworkManager/system-connections/ (0600, NM
//! ignores others): the bridge profile and a port profile for the NIC whose
//! autoconnect-priority beats the NIC's existing profile, which stays as it is. Also the
//! doctor's `nm-manages-taps` check and its conf.d fix.

use super::{create, delete_ours, ini_entries, ini_get, list_dir, under, Config, FileStep, MARK};
use crate::error::{Error, Result};
use crate::plan::Plan;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const DIR: &str = "/etc/NetworkManager/system-connections";
/// Profiles NM reads: /etc, and /run (netplan's generated ones live there).
pub const DIRS: [&str; 2] = [DIR, "/run/NetworkManager/system-connections"];
/// NM refuses keyfiles others can read.
pub const MODE: u32 = 0o600;
/// NetworkManager's configuration directory.
pub const CONF_DIR: &str = "/etc/NetworkManager";
/// Where NetworkManager writes its pid while it runs.
pub const PID_FILE: &str = "/run/NetworkManager/NetworkManager.pid";
/// The conf.d file of the doctor's fix.
pub const TAPS_CONF: &str = "/etc/NetworkManager/conf.d/90-vbridge-unmanaged-taps.conf";

pub fn bridge_id(bridge: &str) -> String {
    format!("vbridge-{bridge}")
}

pub fn port_id(cfg: &Config) -> String {
    port_id_for(&cfg.bridge, &cfg.nic)
}

pub fn port_id_for(bridge: &str, nic: &str) -> String {
    format!("vbridge-{bridge}-port-{nic}")
}

pub fn file_paths(root: &Path, cfg: &Config) -> [PathBuf; 2] {
    let d = under(root, DIR);
    [
        d.join(format!("{}.nmconnection", bridge_id(&cfg.bridge))),
        d.join(format!("{}.nmconnection", port_id(cfg))),
    ]
}

/// A UUID derived from the profile's id, so the same request renders the same file.
pub fn uuid_for(id: &str) -> String {
    let h = |seed: u64| {
        id.bytes().fold(seed, |acc, b| {
            (acc ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (h(0xcbf2_9ce4_8422_2325), h(0x84222325cbf29ce4));
    // Version 5 layout (name-based), RFC 4122 variant.
    let a = (a & !0xf000) | 0x5000;
    let b = (b & !(0xc << 60)) | (0x8 << 60);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// A profile on disk.
#[derive(Debug, Clone)]
pub struct Profile {
    pub path: PathBuf,
    pub id: String,
    pub interface: Option<String>,
    pub mac: Option<String>,
    pub master: Option<String>,
    pub priority: i32,
    pub ours: bool,
}

/// Every keyfile NM would read under `root`.
pub fn profiles(root: &Path) -> Vec<Profile> {
    let mut out = Vec::new();
    for d in DIRS {
        for p in list_dir(&under(root, d)) {
            if p.extension().is_none_or(|x| x != "nmconnection") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let e = ini_entries(&text);
            let get = |s: &str, k: &str| ini_get(&e, s, k).map(str::to_string);
            out.push(Profile {
                id: get("connection", "id").unwrap_or_default(),
                interface: get("connection", "interface-name"),
                mac: get("ethernet", "mac-address").map(|m| m.to_ascii_lowercase()),
                master: get("connection", "master").or_else(|| get("connection", "controller")),
                priority: get("connection", "autoconnect-priority")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                ours: text.contains(MARK),
                path: p,
            });
        }
    }
    out
}

impl Profile {
    /// Whether it applies to the NIC (by name, or by the NIC's MAC).
    pub fn is_for(&self, nic: &str, mac: Option<&str>) -> bool {
        self.interface.as_deref() == Some(nic)
            || (self.interface.is_none()
                && mac.is_some_and(|m| self.mac.as_deref() == Some(&m.to_ascii_lowercase())))
    }
}

fn ip_section(cfg: &Config, v6: bool) -> String {
    let mine = cfg.address.filter(|(ip, _)| ip.is_ipv6() == v6);
    let mut s = format!("[{}]\n", if v6 { "ipv6" } else { "ipv4" });
    let method = match (cfg.dhcp, mine, v6) {
        (true, _, _) => "auto",
        (false, Some(_), _) => "manual",
        (false, None, false) => "disabled",
        (false, None, true) => "ignore",
    };
    if let Some((ip, len)) = mine {
        // NM's own form: the gateway rides on the first address.
        match cfg.gateway {
            Some(g) => s.push_str(&format!("address1={ip}/{len},{g}\n")),
            None => s.push_str(&format!("address1={ip}/{len}\n")),
        }
        let dns: Vec<String> = cfg
            .dns
            .iter()
            .filter(|d| d.is_ipv6() == v6)
            .map(|d| format!("{d};"))
            .collect();
        if !dns.is_empty() {
            s.push_str(&format!("dns={}\n", dns.concat()));
        }
    } else if cfg.dhcp && !v6 && !cfg.dns.is_empty() {
        let dns: Vec<String> = cfg
            .dns
            .iter()
            .filter(|d| matches!(d, IpAddr::V4(_)))
            .map(|d| format!("{d};"))
            .collect();
        s.push_str(&format!("dns={}\n", dns.concat()));
    }
    s.push_str(&format!("method={method}\n"));
    s
}

/// The bridge and port keyfiles (pure; golden-tested). `priority` is the port's
/// autoconnect-priority.
pub fn render(cfg: &Config, priority: i32) -> Result<[String; 2]> {
    let mac = super::super::netplan::check(cfg)?;
    let head = |what: &str| {
        format!(
            "# {MARK}: {what} of bridge {} (port {}).\n# vbridge owns this file; `vbridge host-bridge --remove --bridge {}` removes it.\n",
            cfg.bridge, cfg.nic, cfg.bridge
        )
    };
    // NM 1.42 has no `bridge.mtu`: a bridge device takes its MTU from the profile's
    // `ethernet.mtu`, as an Ethernet port does.
    let mtu = cfg.mtu.map(|m| format!("mtu={m}\n")).unwrap_or_default();
    let bid = bridge_id(&cfg.bridge);
    let bridge = format!(
        "{}[connection]\nid={bid}\nuuid={}\ntype=bridge\ninterface-name={}\n\n[ethernet]\ncloned-mac-address={mac}\n{mtu}\n[bridge]\nforward-delay=0\nstp=false\n\n{}\n{}",
        head("the bridge profile"),
        uuid_for(&bid),
        cfg.bridge,
        ip_section(cfg, false),
        ip_section(cfg, true),
    );
    let pid = port_id(cfg);
    let port = format!(
        "{}[connection]\nid={pid}\nuuid={}\ntype=ethernet\ninterface-name={}\nmaster={}\nslave-type=bridge\nautoconnect-priority={priority}\n\n[ethernet]\n{mtu}\n[bridge-port]\n",
        head("the port profile"),
        uuid_for(&pid),
        cfg.nic,
        cfg.bridge,
    );
    Ok([bridge, port])
}

/// The keyfiles, the port's priority one above every profile of the NIC.
pub fn plan(root: &Path, cfg: &Config) -> Result<Plan<FileStep>> {
    let all = profiles(root);
    let theirs: Vec<&Profile> = all
        .iter()
        .filter(|p| !p.ours && p.is_for(&cfg.nic, Some(&cfg.mac)))
        .collect();
    if let Some(p) = theirs.iter().find(|p| p.master.is_some()) {
        return Err(Error::conflict(format!(
            "{} is already a port of {} ({})",
            cfg.nic,
            p.master.as_deref().unwrap_or("?"),
            p.path.display()
        ))
        .with_hint("a NIC can be the port of one bridge or bond only: remove it there first"));
    }
    let top = theirs.iter().map(|p| p.priority).max().unwrap_or(0);
    if top >= 999 {
        return Err(Error::conflict(format!(
            "the NIC's profile has autoconnect-priority {top}, the highest NM allows: vbridge's port profile cannot win"
        ))
        .with_hint("lower that profile's connection.autoconnect-priority"));
    }
    if let Some(p) = all
        .iter()
        .find(|p| !p.ours && p.interface.as_deref() == Some(&cfg.bridge))
    {
        return Err(Error::conflict(format!(
            "{} is already a profile for {}",
            p.path.display(),
            cfg.bridge
        ))
        .with_hint("choose another bridge name, or remove that profile"));
    }
    let texts = render(cfg, top + 1)?;
    let mut steps = Vec::new();
    for (path, text) in file_paths(root, cfg).into_iter().zip(texts) {
        steps.extend(create(path, text, MODE)?);
    }
    Ok(Plan::new(steps))
}

/// Every keyfile the plan writes goes through `nmcli --offline connection modify`, NM's own
/// keyfile reader and validator (no daemon needed), and must come out with its id.
pub fn validate(plan: &Plan<FileStep>) -> Result<()> {
    for s in &plan.steps {
        let (_, Some(text)) = s.texts() else { continue };
        let e = ini_entries(text);
        let id = ini_get(&e, "connection", "id")
            .unwrap_or_default()
            .to_string();
        let out = nmcli_offline(text, &id).map_err(|e| e.context(s.path().display()))?;
        if !out.contains(&format!("id={id}")) {
            return Err(Error::host(format!(
                "nmcli read {} but did not keep its id",
                s.path().display()
            )));
        }
    }
    Ok(())
}

/// `nmcli --offline connection modify connection.id ID < keyfile`: the normalised keyfile.
/// nmcli prints warnings ("Warning: master=... doesn't refer to any existing profile") on
/// stdout before the keyfile: only the keyfile, from its first section on, is returned, so
/// its output can never be taken for a keyfile with a stray line in it.
pub fn nmcli_offline(keyfile: &str, id: &str) -> Result<String> {
    let out = crate::host::run_program_with_input(
        "nmcli",
        &["--offline", "connection", "modify", "connection.id", id],
        keyfile,
    )
    .map_err(|e| match e.kind {
        crate::error::ErrorKind::NotFound => {
            e.with_hint("install network-manager (nmcli >= 1.40 reads keyfiles offline)")
        }
        _ => Error::invalid(e.message),
    })?;
    Ok(keyfile_part(&out).to_string())
}

/// The keyfile in nmcli's output: from the first `[section]` line on.
pub fn keyfile_part(out: &str) -> &str {
    let mut at = 0;
    for l in out.split_inclusive('\n') {
        if l.starts_with('[') {
            return &out[at..];
        }
        at += l.len();
    }
    ""
}

/// Whether NetworkManager runs: its pid file under `root` names a live NetworkManager
/// process. (Its profiles count for detection only then: without the daemon nothing
/// applies them.)
pub fn nm_running(root: &Path) -> bool {
    let pid = std::fs::read_to_string(under(root, PID_FILE)).unwrap_or_default();
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "NetworkManager")
}

/// vbridge's keyfiles for `bridge` removed; the user's profiles were never touched.
pub fn remove(root: &Path, bridge: &str) -> Result<Plan<FileStep>> {
    let b = bridge_id(bridge);
    let mut steps = Vec::new();
    for f in list_dir(&under(root, DIR)) {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name == format!("{b}.nmconnection")
            || (name.starts_with(&format!("{b}-port-")) && name.ends_with(".nmconnection"))
        {
            steps.extend(delete_ours(&f)?);
        }
    }
    Ok(Plan::new(steps))
}

/// The conf.d file that keeps libvirt's TAP devices (`vnet*`, `tap*`) unmanaged, appended
/// to whatever list the user has (`+=`).
pub fn unmanaged_taps_conf() -> String {
    format!(
        "# {MARK}: NetworkManager leaves libvirt's TAP devices alone, or it can take them off their bridge.\n[keyfile]\nunmanaged-devices+=interface-name:vnet*;interface-name:tap*\n"
    )
}

/// The doctor's fix: write [`unmanaged_taps_conf`] under `root` (or nothing when it is there).
pub fn unmanaged_taps_plan(root: &Path) -> Result<Plan<FileStep>> {
    unmanaged_taps_plan_in(&under(root, CONF_DIR))
}

/// The conf.d file of the doctor's fix in NetworkManager's configuration directory.
pub fn unmanaged_taps_file(conf_dir: &Path) -> PathBuf {
    conf_dir.join("conf.d").join(
        Path::new(TAPS_CONF)
            .file_name()
            .expect("TAPS_CONF names a file"),
    )
}

/// [`unmanaged_taps_plan`] for a configuration directory (/etc/NetworkManager).
pub fn unmanaged_taps_plan_in(conf_dir: &Path) -> Result<Plan<FileStep>> {
    Ok(Plan::new(
        create(unmanaged_taps_file(conf_dir), unmanaged_taps_conf(), 0o644)?
            .into_iter()
            .collect(),
    ))
}

/// Undoing the doctor's fix: vbridge's conf.d file removed (nothing when it is gone).
pub fn unmanaged_taps_removal(conf_dir: &Path) -> Result<Plan<FileStep>> {
    Ok(Plan::new(
        delete_ours(&unmanaged_taps_file(conf_dir))?
            .into_iter()
            .collect(),
    ))
}

/// Whether NetworkManager's configuration under `conf_dir` (/etc/NetworkManager) leaves
/// `vnet0` and `tap0` unmanaged: NetworkManager.conf, then conf.d/*.conf by name, with `=`
/// replacing the `[keyfile] unmanaged-devices` list and `+=`/`-=` editing it, as NM reads them.
pub fn nm_leaves_taps_unmanaged(conf_dir: &Path) -> bool {
    let mut files = vec![conf_dir.join("NetworkManager.conf")];
    files.extend(
        list_dir(&conf_dir.join("conf.d"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "conf")),
    );
    let mut specs: Vec<String> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (sec, key, val) in ini_entries(&text) {
            if sec != "keyfile" {
                continue;
            }
            let items = || {
                val.split([';', ','])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            match key.as_str() {
                "unmanaged-devices" => specs = items().collect(),
                "unmanaged-devices+" => specs.extend(items()),
                "unmanaged-devices-" => {
                    let drop: Vec<String> = items().collect();
                    specs.retain(|s| !drop.contains(s));
                }
                _ => {}
            }
        }
    }
    ["vnet0", "tap0"]
        .iter()
        .all(|dev| specs.iter().any(|s| spec_covers(s, dev)))
}

/// Whether one NM device spec matches the TAP device `dev`.
fn spec_covers(spec: &str, dev: &str) -> bool {
    if spec == "*" || spec == "type:tun" {
        return true;
    }
    let Some(pat) = spec.strip_prefix("interface-name:") else {
        return false;
    };
    if let Some(exact) = pat.strip_prefix('=') {
        return exact == dev;
    }
    super::glob_match(pat.strip_prefix('~').unwrap_or(pat), dev)
}
