//! netplan, the persistent way: render vbridge's own YAML file (never edit the user's),
//! validate it with the real `netplan generate --root-dir` on a staged copy of the
//! configuration, then write it with mode 0600, backing up the file it replaces.

use crate::error::{Error, Result};
use serde::Serialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// What the bridge should look like in netplan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub nic: String,
    pub bridge: String,
    /// The NIC's MAC, pinned on the bridge so a DHCP server hands out the same address.
    pub mac: String,
    pub dhcp: bool,
    pub address: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    /// `mtu:` on the NIC and the bridge.
    pub mtu: Option<u32>,
}

/// The file vbridge owns for a bridge: etc/netplan/90-vbridge-BRIDGE.yaml under `root`.
pub fn file_path(root: &Path, bridge: &str) -> PathBuf {
    root.join("etc/netplan")
        .join(format!("90-vbridge-{bridge}.yaml"))
}

/// A YAML double-quoted scalar.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Check a config before rendering; returns the MAC in canonical form. The names and the
/// gateway's IP version go through the same checks as every host-bridge request.
pub fn check(cfg: &Config) -> Result<String> {
    super::bridge::check_names(&cfg.nic, &cfg.bridge)?;
    let mac = crate::validate::mac(&cfg.mac)?;
    if cfg.dhcp == cfg.address.is_some() {
        return Err(
            Error::invalid("give either DHCP or a static address for the bridge")
                .with_hint("use --dhcp, or --address CIDR [--gateway IP] [--dns IP,...]"),
        );
    }
    crate::validate::same_ip_version(cfg.gateway, cfg.address)?;
    Ok(mac)
}

/// Render the YAML (pure; golden-tested).
pub fn render(cfg: &Config) -> Result<String> {
    let mac = check(cfg)?;
    let mut y = String::new();
    y.push_str(&format!(
        "# Written by vbridge: {} as the port of bridge {}.\n# vbridge owns this file; remove it and run `netplan apply` to undo.\n",
        cfg.nic, cfg.bridge
    ));
    y.push_str("network:\n  version: 2\n  ethernets:\n");
    y.push_str(&format!(
        "    {}:\n      dhcp4: false\n      dhcp6: false\n",
        q(&cfg.nic)
    ));
    if let Some(m) = cfg.mtu {
        y.push_str(&format!("      mtu: {m}\n"));
    }
    y.push_str("  bridges:\n");
    y.push_str(&format!("    {}:\n", q(&cfg.bridge)));
    y.push_str(&format!("      interfaces: [{}]\n", q(&cfg.nic)));
    y.push_str(&format!("      macaddress: {}\n", q(&mac)));
    if let Some(m) = cfg.mtu {
        y.push_str(&format!("      mtu: {m}\n"));
    }
    if cfg.dhcp {
        y.push_str("      dhcp4: true\n");
    } else {
        y.push_str("      dhcp4: false\n      dhcp6: false\n");
    }
    if let Some((ip, len)) = cfg.address {
        y.push_str(&format!(
            "      addresses: [{}]\n",
            q(&format!("{ip}/{len}"))
        ));
    }
    if let Some(g) = cfg.gateway {
        y.push_str(&format!(
            "      routes:\n        - to: default\n          via: {}\n",
            q(&g.to_string())
        ));
    }
    if !cfg.dns.is_empty() {
        let list: Vec<String> = cfg.dns.iter().map(|d| q(&d.to_string())).collect();
        y.push_str(&format!(
            "      nameservers:\n        addresses: [{}]\n",
            list.join(", ")
        ));
    }
    y.push_str("      parameters:\n        stp: false\n        forward-delay: 0\n");
    Ok(y)
}

/// What `netplan generate` made of a staged configuration: systemd-networkd files by name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Generated {
    pub files: Vec<(String, String)>,
}

impl Generated {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.as_str())
    }
}

/// Run the real `netplan generate --root-dir STAGE` on a copy of `root`'s etc/netplan with
/// `yaml` as vbridge's file, and check the bridge came out as meant.
pub fn validate(root: &Path, cfg: &Config, yaml: &str) -> Result<Generated> {
    let stage =
        tempfile::tempdir().map_err(|e| Error::io("cannot create a staging directory", e))?;
    let stage_etc = stage.path().join("etc/netplan");
    std::fs::create_dir_all(&stage_etc)
        .map_err(|e| Error::io("cannot create the staging directory", e))?;
    let ours = file_path(root, &cfg.bridge);
    if let Ok(rd) = std::fs::read_dir(root.join("etc/netplan")) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml") && p != ours {
                let _ = std::fs::copy(&p, stage_etc.join(e.file_name()));
            }
        }
    }
    let staged = file_path(stage.path(), &cfg.bridge);
    write_0600(&staged, yaml)?;
    let args = [
        std::ffi::OsStr::new("generate"),
        "--root-dir".as_ref(),
        stage.path().as_os_str(),
    ];
    let out = super::program_output("netplan", &args)
        .map_err(|e| e.with_hint("install netplan.io, or use --live instead of --netplan"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace(stage.path().to_str().unwrap_or(""), "");
        return Err(
            Error::invalid(format!("netplan refused the configuration: {msg}")).with_hint(
                "fix the reported file (it may be one of yours that conflicts with the bridge)",
            ),
        );
    }
    let stderr =
        String::from_utf8_lossy(&out.stderr).replace(stage.path().to_str().unwrap_or(""), "");
    let mut gen = Generated::default();
    if let Ok(rd) = std::fs::read_dir(stage.path().join("run/systemd/network")) {
        for e in rd.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            gen.files
                .push((e.file_name().to_string_lossy().into_owned(), text));
        }
    }
    gen.files.sort();
    let netdev = gen
        .get(&format!("10-netplan-{}.netdev", cfg.bridge))
        .unwrap_or("");
    let port = gen
        .get(&format!("10-netplan-{}.network", cfg.nic))
        .unwrap_or("");
    let want = [
        (netdev.contains("Kind=bridge"), "the bridge netdev"),
        (netdev.contains("STP=false"), "STP off"),
        (netdev.contains("ForwardDelaySec=0"), "forward delay 0"),
        (
            port.contains(&format!("Bridge={}", cfg.bridge)),
            "the NIC as the bridge's port",
        ),
    ];
    if let Some((_, what)) = want.iter().find(|(ok, _)| !ok) {
        return Err(Error::host(format!(
            "netplan accepted the file but did not render {what}"
        ))
        .with_hint(
            "another netplan file may override the bridge or the NIC: check `netplan get`",
        ));
    }
    // netplan merges lists across files: an address or route the user's own file gives the
    // NIC stays on the bridge port next to Bridge=, and netplan only warns about the
    // conflicting default route. A port must carry no addressing at all.
    let leftovers = port_addressing(port);
    let conflict = stderr.lines().find(|l| l.contains("Conflicting"));
    if !leftovers.is_empty() || conflict.is_some() {
        let files = files_configuring(root, &cfg.nic, &ours);
        let names = if files.is_empty() {
            "another netplan file".to_string()
        } else {
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut what: Vec<String> = leftovers.iter().map(|l| l.to_string()).collect();
        what.extend(conflict.map(|c| format!("netplan: {}", c.trim())));
        return Err(Error::conflict(format!(
            "{names} also configures {nic}, so its address or routes would stay on the bridge port {nic} ({})",
            what.join("; "),
            nic = cfg.nic,
        ))
        .with_hint(format!(
            "back up {names} (cp FILE FILE.bak), then remove {nic}'s addresses, routes, gateway4/gateway6 and dhcp4/dhcp6 there; the bridge {} gets its addressing from vbridge's file",
            cfg.bridge,
            nic = cfg.nic
        )));
    }
    Ok(gen)
}

/// The addressing lines of a rendered port .network file: a bridge port must have none.
fn port_addressing(network: &str) -> Vec<&str> {
    network
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("Address=")
                || l.starts_with("Gateway=")
                || *l == "[Route]"
                || matches!(*l, "DHCP=yes" | "DHCP=ipv4" | "DHCP=ipv6")
        })
        .collect()
}

/// The user's netplan files (not vbridge's) that name `nic` as a key.
fn files_configuring(root: &Path, nic: &str, ours: &Path) -> Vec<PathBuf> {
    let keys = [
        format!("{nic}:"),
        format!("\"{nic}\":"),
        format!("'{nic}':"),
    ];
    let mut out: Vec<PathBuf> = std::fs::read_dir(root.join("etc/netplan"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && p != ours)
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| {
                t.lines()
                    .any(|l| keys.iter().any(|k| l.trim_start().starts_with(k.as_str())))
            })
        })
        .collect();
    out.sort();
    out
}

fn write_0600(path: &Path, text: &str) -> Result<()> {
    super::write_0600(
        path,
        &path.with_extension("yaml.vbridge-tmp"),
        text.as_bytes(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    fn golden(name: &str, text: &str) {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/netplan")
            .join(name);
        crate::golden::assert_golden(&p, text);
    }

    #[test]
    fn golden_yaml() {
        golden("dhcp.yaml", &render(&dhcp()).unwrap());
        golden("static.yaml", &render(&fixed()).unwrap());
        let jumbo = Config {
            mtu: Some(9000),
            ..dhcp()
        };
        golden("jumbo.yaml", &render(&jumbo).unwrap());
    }

    #[test]
    fn quoting() {
        assert_eq!(q("a\"b\\c\n"), "\"a\\\"b\\\\c\\x0a\"");
    }

    #[test]
    fn refusals() {
        let mut c = dhcp();
        c.bridge = "br 0".into();
        assert!(render(&c).is_err());
        let mut c = dhcp();
        c.mac = "zz".into();
        assert!(render(&c).is_err());
        let mut c = fixed();
        c.dhcp = true;
        assert!(render(&c).is_err());
        let mut c = fixed();
        c.gateway = Some("2001:db8::1".parse().unwrap());
        assert!(render(&c).is_err());
    }

    fn have_netplan() -> bool {
        crate::host::run_program("netplan", &["--help"]).is_ok()
    }

    /// Whether netplan is installed; without it a test skips, except in CI, where it fails.
    pub(crate) fn netplan_or_skip() -> bool {
        if have_netplan() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "netplan.io is missing in CI"
        );
        eprintln!("SKIPPED: netplan is not installed");
        false
    }

    /// The user's own netplan file under `root`, with `text`; its path.
    pub(crate) fn user_file(root: &Path, text: &str) -> PathBuf {
        let user = root.join("etc/netplan/50-cloud-init.yaml");
        std::fs::create_dir_all(user.parent().unwrap()).unwrap();
        std::fs::write(&user, text).unwrap();
        user
    }

    #[test]
    fn real_netplan_accepts_and_renders_the_bridge() {
        if !netplan_or_skip() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let g = validate(root.path(), &dhcp(), &render(&dhcp()).unwrap()).unwrap();
        let netdev = g.get("10-netplan-br0.netdev").unwrap();
        assert!(netdev.contains("MACAddress=52:54:00:12:34:56"), "{netdev}");
        let net = g.get("10-netplan-br0.network").unwrap();
        assert!(net.contains("DHCP=ipv4"), "{net}");
        let g = validate(root.path(), &fixed(), &render(&fixed()).unwrap()).unwrap();
        let net = g.get("10-netplan-br0.network").unwrap();
        assert!(net.contains("Address=192.168.1.10/24"), "{net}");
        assert!(net.contains("Gateway=192.168.1.1"), "{net}");
        assert!(
            net.contains("DNS=192.168.1.1") && net.contains("DNS=9.9.9.9"),
            "{net}"
        );
        let jumbo = Config {
            mtu: Some(9000),
            ..dhcp()
        };
        let j = validate(root.path(), &jumbo, &render(&jumbo).unwrap()).unwrap();
        for (file, key) in [
            ("10-netplan-br0.netdev", "MTUBytes=9000"),
            ("10-netplan-enp3s0.network", "MTUBytes=9000"),
        ] {
            let text = j.get(file).unwrap();
            assert!(text.contains(key), "{file}: {text}");
        }
        let port = g.get("10-netplan-enp3s0.network").unwrap();
        assert!(port.contains("Bridge=br0"), "{port}");
        assert!(!port.contains("Address="), "{port}");
    }

    #[test]
    fn port_addressing_lines() {
        let port = "[Match]\nName=eth1\n\n[Network]\nLinkLocalAddressing=no\nAddress=10.0.0.2/24\nBridge=br0\n\n[Route]\nGateway=10.0.0.1\n";
        assert_eq!(
            port_addressing(port),
            ["Address=10.0.0.2/24", "[Route]", "Gateway=10.0.0.1"]
        );
        assert!(port_addressing("[Network]\nDHCP=no\nBridge=br0\n").is_empty());
        assert_eq!(port_addressing("DHCP=ipv4\n"), ["DHCP=ipv4"]);
    }
}
