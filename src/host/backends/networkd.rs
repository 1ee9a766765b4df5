//! systemd-networkd: a `.netdev` for the bridge, a `.network` binding the NIC to it and a
//! `.network` for the bridge's addressing, all vbridge's own files in /etc/systemd/network.
//! The user's files stay untouched: networkd applies only the first `.network` file (by
//! name) that matches a link, and vbridge's names sort first.

use super::{
    create, delete_ours, glob_match, ini_entries, ini_get, list_dir, under, Config, FileStep, MARK,
};
use crate::error::{Error, Result};
use crate::host::run_program;
use crate::plan::Plan;
use std::path::{Path, PathBuf};

/// Where vbridge writes; networkd also reads /run and /lib (same name: /etc wins).
pub const DIR: &str = "/etc/systemd/network";
pub const DIRS: [&str; 3] = [DIR, "/run/systemd/network", "/lib/systemd/network"];
/// networkd reads its files as the systemd-network user: they must be world-readable
/// (they hold no secret).
pub const MODE: u32 = 0o644;

fn prefix(bridge: &str) -> String {
    format!("00-vbridge-{bridge}")
}

/// vbridge's three files for a bridge: netdev, the bridge's network, the port's network.
pub fn file_paths(root: &Path, cfg: &Config) -> [PathBuf; 3] {
    let d = under(root, DIR);
    let p = prefix(&cfg.bridge);
    [
        d.join(format!("{p}.netdev")),
        d.join(format!("{p}.network")),
        d.join(format!("{p}-port-{}.network", cfg.nic)),
    ]
}

fn header(cfg: &Config, what: &str) -> String {
    format!(
        "# {MARK}: {what} of bridge {} (port {}).\n# vbridge owns this file; `vbridge host-bridge --remove --bridge {}` removes it.\n",
        cfg.bridge, cfg.nic, cfg.bridge
    )
}

/// The three files' contents, in the order of [`file_paths`] (pure; golden-tested).
pub fn render(cfg: &Config) -> Result<[String; 3]> {
    let mac = super::super::netplan::check(cfg)?;
    let netdev = format!(
        "{}[NetDev]\nName={}\nKind=bridge\nMACAddress={mac}\n\n[Bridge]\nSTP=no\nForwardDelaySec=0\n",
        header(cfg, "the bridge device"),
        cfg.bridge
    );
    let mut net = format!(
        "{}[Match]\nName={}\n\n{}[Network]\n",
        header(cfg, "the addressing"),
        cfg.bridge,
        link_section(cfg)
    );
    if cfg.dhcp {
        net.push_str("DHCP=ipv4\n");
    }
    if let Some((ip, len)) = cfg.address {
        net.push_str(&format!("Address={ip}/{len}\n"));
    }
    if let Some(g) = cfg.gateway {
        net.push_str(&format!("Gateway={g}\n"));
    }
    for d in &cfg.dns {
        net.push_str(&format!("DNS={d}\n"));
    }
    let port = format!(
        "{}[Match]\nName={}\n\n{}[Network]\nBridge={}\n",
        header(cfg, "the port"),
        cfg.nic,
        link_section(cfg),
        cfg.bridge
    );
    Ok([netdev, net, port])
}

/// `[Link] MTUBytes=` for `--mtu`, in both `.network` files: the bridge and its port each
/// need it (networkd leaves a link's MTU alone unless told, and a new bridge starts at 1500).
fn link_section(cfg: &Config) -> String {
    cfg.mtu
        .map(|m| format!("[Link]\nMTUBytes={m}\n\n"))
        .unwrap_or_default()
}

/// A `.network` file of the system, by file name (the order networkd reads them in).
#[derive(Debug, Clone)]
pub struct NetworkFile {
    pub path: PathBuf,
    pub name: String,
    pub text: String,
}

/// Every `.network` file networkd would read under `root`, one per name (/etc first), sorted
/// by name.
pub fn network_files(root: &Path) -> Vec<NetworkFile> {
    let mut out: Vec<NetworkFile> = Vec::new();
    for d in DIRS {
        for p in list_dir(&under(root, d)) {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !name.ends_with(".network") || out.iter().any(|f| f.name == name) {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            out.push(NetworkFile {
                path: p,
                name,
                text,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

impl NetworkFile {
    /// Whether its `[Match] Name=` matches `link` (files matching on other properties only
    /// are not judged: vbridge sees names, not live links).
    pub fn matches(&self, link: &str) -> bool {
        let e = ini_entries(&self.text);
        let names: Vec<&str> = e
            .iter()
            .filter(|(s, k, _)| s == "Match" && k == "Name")
            .flat_map(|(_, _, v)| v.split_whitespace())
            .collect();
        if names.is_empty() {
            return false;
        }
        let (neg, pos): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| n.starts_with('!'));
        if !neg.is_empty() {
            return !neg.iter().any(|n| glob_match(&n[1..], link));
        }
        pos.iter().any(|n| glob_match(n, link))
    }

    /// The master it puts a link under (`Bridge=`, `Bond=`).
    pub fn master(&self) -> Option<String> {
        let e = ini_entries(&self.text);
        ini_get(&e, "Network", "Bridge")
            .or_else(|| ini_get(&e, "Network", "Bond"))
            .map(str::to_string)
    }

    pub fn ours(&self) -> bool {
        self.text.contains(MARK)
    }
}

/// The first `.network` file matching `link`: the only one networkd applies to it.
pub fn first_match<'a>(files: &'a [NetworkFile], link: &str) -> Option<&'a NetworkFile> {
    files.iter().find(|f| f.matches(link))
}

/// The files: netdev, the bridge's and the port's network, refused when a user's file would
/// take precedence or makes the NIC a port already.
pub fn plan(root: &Path, cfg: &Config) -> Result<Plan<FileStep>> {
    let texts = render(cfg)?;
    let files = network_files(root);
    if let Some(f) = first_match(&files, &cfg.nic).filter(|f| !f.ours()) {
        if let Some(m) = f.master() {
            return Err(Error::conflict(format!(
                "{} is already a port of {m} ({})",
                cfg.nic,
                f.path.display()
            ))
            .with_hint("a NIC can be the port of one bridge or bond only: remove it there first"));
        }
    }
    check_precedence(root, cfg, &files)?;
    let mut steps = Vec::new();
    for (path, text) in file_paths(root, cfg).into_iter().zip(texts) {
        steps.extend(create(path, text, MODE)?);
    }
    Ok(Plan::new(steps))
}

/// A user's `.network` file that sorts before vbridge's and matches the NIC or the bridge
/// would win over it: refuse, naming it.
fn check_precedence(root: &Path, cfg: &Config, files: &[NetworkFile]) -> Result<()> {
    let [_, net, port] = file_paths(root, cfg);
    for (link, ours) in [(&cfg.nic, port), (&cfg.bridge, net)] {
        let ours_name = ours
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(f) = files
            .iter()
            .find(|f| f.matches(link) && !f.ours() && f.name < ours_name)
        {
            return Err(Error::conflict(format!(
                "{} matches {link} and sorts before vbridge's {ours_name}: networkd would apply it instead",
                f.path.display()
            ))
            .with_hint("rename it to sort after 00-vbridge-*, or drop its [Match] of that name"));
        }
    }
    Ok(())
}

/// systemd has no offline checker for `.network`/`.netdev` files (`networkctl` and
/// `systemd-analyze verify` only know units), so vbridge checks what it renders against the
/// sections and keys networkd reads, and re-checks precedence on the planned tree. The
/// namespace proof runs the real networkd on these files and finds no warning about them.
pub fn validate(root: &Path, cfg: &Config, plan: &Plan<FileStep>) -> Result<()> {
    const KNOWN: &[(&str, &[&str])] = &[
        ("NetDev", &["Name", "Kind", "MACAddress"]),
        ("Bridge", &["STP", "ForwardDelaySec"]),
        ("Match", &["Name"]),
        ("Link", &["MTUBytes"]),
        ("Network", &["Bridge", "DHCP", "Address", "Gateway", "DNS"]),
    ];
    for s in &plan.steps {
        let (_, Some(text)) = s.texts() else { continue };
        for (sec, key, _) in ini_entries(text) {
            let ok = KNOWN
                .iter()
                .any(|(s, keys)| *s == sec && keys.contains(&key.as_str()));
            if !ok {
                return Err(Error::host(format!(
                    "{}: [{sec}] {key}= is not a key vbridge checked against networkd",
                    s.path().display()
                )));
            }
        }
    }
    check_precedence(root, cfg, &network_files(root))
}

/// Whether networkd is still at work on one of `links` (by name, links the kernel has): it
/// does not know the link yet (it drops a NIC that leaves a bridge and reads it again), it
/// was told to configure it anew and has not started (`pending`, `initialized`), or an
/// address or route of it is requested, being set or being removed. `networkctl list
/// --json=short` asks networkd itself over D-Bus, so a reload or reconfigure asked before
/// is already in its answer. False when networkd cannot be asked (not running, not
/// installed): then only quiet counts.
pub fn busy_with(links: &[&str]) -> bool {
    run_program("networkctl", &["list", "--json=short"]).is_ok_and(|out| busy_in(&out, links))
}

/// [`busy_with`] on networkd's answer (pure).
pub(crate) fn busy_in(json: &str, links: &[&str]) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return false;
    };
    let Some(ifaces) = v["Interfaces"].as_array() else {
        return false;
    };
    let name = |i: &serde_json::Value| i["Name"].as_str().map(str::to_string);
    let known: Vec<String> = ifaces.iter().filter_map(name).collect();
    if links.iter().any(|l| !known.iter().any(|k| k == l)) {
        return true;
    }
    let mine = ifaces
        .iter()
        .filter(|i| i["Name"].as_str().is_some_and(|n| links.contains(&n)));
    let in_flight = |c: &serde_json::Value| {
        c["ConfigState"].as_str().is_some_and(|s| {
            s.split(',')
                .any(|f| matches!(f, "requesting" | "configuring" | "removing"))
        })
    };
    mine.into_iter().any(|i| {
        matches!(
            i["AdministrativeState"].as_str(),
            Some("pending" | "initialized")
        ) || ["Addresses", "Routes"]
            .iter()
            .filter_map(|k| i[*k].as_array())
            .flatten()
            .any(in_flight)
    })
}

/// vbridge's files for `bridge` removed.
pub fn remove(root: &Path, bridge: &str) -> Result<Plan<FileStep>> {
    let p = prefix(bridge);
    let mut steps = Vec::new();
    for f in list_dir(&under(root, DIR)) {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mine = name == format!("{p}.netdev")
            || name == format!("{p}.network")
            || (name.starts_with(&format!("{p}-port-")) && name.ends_with(".network"));
        if mine {
            steps.extend(delete_ours(&f)?);
        }
    }
    Ok(Plan::new(steps))
}

#[cfg(test)]
mod tests {
    use super::busy_in;

    /// networkd's answer (`networkctl list --json=short`, systemd 252), cut to what counts.
    fn answer(admin: &str, route_state: &str) -> String {
        format!(
            r#"{{"Interfaces":[
            {{"Index":1,"Name":"lo","AdministrativeState":"unmanaged"}},
            {{"Index":2,"Name":"enp9s0","AdministrativeState":"{admin}",
              "Addresses":[{{"Family":2,"ConfigSource":"static","ConfigState":"configured"}}],
              "Routes":[{{"Family":2,"ConfigSource":"static","ConfigState":"{route_state}"}}]}},
            {{"Index":3,"Name":"br9","AdministrativeState":"initialized"}}]}}"#
        )
    }

    #[test]
    fn busy_while_a_link_waits_or_a_setting_is_in_flight() {
        let devs = ["enp9s0"];
        assert!(!busy_in(&answer("configured", "configured"), &devs));
        // Waiting for an RA is how a link can stay "configuring": not busy by itself.
        assert!(!busy_in(&answer("configuring", "configured"), &devs));
        assert!(!busy_in(&answer("failed", "configured,marked"), &devs));
        assert!(busy_in(&answer("initialized", "configured"), &devs));
        assert!(busy_in(&answer("pending", "configured"), &devs));
        assert!(busy_in(&answer("configuring", "requesting"), &devs));
        assert!(busy_in(
            &answer("configured", "configuring,configured"),
            &devs
        ));
        assert!(busy_in(&answer("configured", "removing"), &devs));
        // Another link's state does not count; nor does an answer that is not networkd's.
        assert!(!busy_in(
            &answer("configured", "configured"),
            &["enp9s0", "lo"]
        ));
        assert!(busy_in(&answer("configured", "configured"), &["br9"]));
        // A link the kernel has and networkd has not read (yet).
        assert!(busy_in(
            &answer("configured", "configured"),
            &["enp9s0", "br0"]
        ));
        assert!(!busy_in("not json", &devs));
        assert!(!busy_in("{}", &devs));
    }
}
