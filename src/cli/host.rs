//! `vbridge host-bridge` and `vbridge tap`.

use super::output::Text;
use super::{CmdResult, Globals};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use vbridge::backup::StateDir;
use vbridge::error::Error;
use vbridge::host::cidr;
use vbridge::host_bridge::{self, pending, Mode};
use vbridge::tap;

#[derive(Debug, Args)]
pub struct HostBridgeArgs {
    /// The NIC to put on the bridge (e.g. enp3s0); with --remove, the NIC that gets the
    /// bridge's addresses back (default: the bridge's port)
    #[arg(required_unless_present_any = ["confirm", "revert_pending", "remove"])]
    pub nic: Option<String>,
    /// Bridge name
    #[arg(long, default_value = "br0")]
    pub bridge: String,
    /// The bridge gets its address by DHCP
    #[arg(long, conflicts_with = "address")]
    pub dhcp: bool,
    /// Static address for the bridge, e.g. 192.168.1.10/24
    #[arg(long, value_name = "CIDR")]
    pub address: Option<String>,
    /// Default gateway (with --address)
    #[arg(long, value_name = "IP", requires = "address")]
    pub gateway: Option<String>,
    /// DNS servers, comma separated
    #[arg(long, value_name = "IP,...", value_delimiter = ',')]
    pub dns: Vec<String>,
    /// The MTU of the NIC and the bridge (68-65535), live and in the persistent configuration
    #[arg(long, value_name = "N")]
    pub mtu: Option<String>,
    /// Write the bridge into the host's network configuration (survives a reboot)
    #[arg(long, conflicts_with = "live")]
    pub persist: bool,
    /// With --persist or --remove: the network stack whose files to write (auto: the one
    /// that manages the NIC)
    #[arg(long, value_name = "STACK", value_parser = ["auto", "netplan", "networkd", "ifupdown", "nm"])]
    pub backend: Option<String>,
    /// Write a netplan file: --persist --backend netplan
    #[arg(long, conflicts_with_all = ["live", "backend"])]
    pub netplan: bool,
    /// With --persist or --remove: the files are under DIR instead of /
    #[arg(long, value_name = "DIR")]
    pub root_dir: Option<std::path::PathBuf>,
    /// With --persist or --remove: the network stack reads the files now, under the
    /// rollback guard
    #[arg(long)]
    pub apply: bool,
    /// Undo the bridge: the NIC gets its addresses and routes back live (probe and
    /// rollback as --live), vbridge's files are removed and the files it edited restored.
    /// A change still pending (waiting for --confirm, or left part-way by a killed vbridge)
    /// is undone first, and checked against the state from before it
    #[arg(long, conflicts_with_all = ["live", "persist", "netplan", "dhcp", "address", "gateway", "dns"])]
    pub remove: bool,
    /// Apply now through netlink, with automatic rollback
    #[arg(long)]
    pub live: bool,
    /// Address that must answer after the change (default: the default gateway)
    #[arg(long, value_name = "IP")]
    pub probe: Option<String>,
    /// Seconds to wait for the probe before rolling back (1 to 86400)
    #[arg(long, value_name = "S", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=host_bridge::MAX_WINDOW_SECS))]
    pub rollback_after: u64,
    /// Revert by itself after S seconds unless `vbridge host-bridge --confirm` is run (1 to 86400)
    #[arg(long, value_name = "S",
          value_parser = clap::value_parser!(u64).range(1..=host_bridge::MAX_WINDOW_SECS))]
    pub confirm_within: Option<u64>,
    /// Keep a pending change made with --confirm-within
    #[arg(long, conflicts_with_all = ["live", "netplan", "persist", "remove", "confirm_within"])]
    pub confirm: bool,
    /// Internal: the detached reverter of a --confirm-within change
    #[arg(long, value_name = "ID", hide = true)]
    pub revert_pending: Option<String>,
    /// Internal: the reverter's window in milliseconds, from its start
    #[arg(long, value_name = "MS", hide = true, requires = "revert_pending")]
    pub revert_in_ms: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum TapCommand {
    /// Create a persistent TAP device on a bridge, up
    Add {
        name: String,
        #[arg(long)]
        bridge: String,
        /// User that may open the TAP
        #[arg(long)]
        owner: Option<String>,
    },
    /// Delete a TAP device (only a persistent one no process holds, unless --force)
    Del {
        name: String,
        /// Delete it even when it is not persistent or a process (e.g. QEMU) holds it
        #[arg(long)]
        force: bool,
    },
}

/// Which way: --live, --persist [--backend] (--netplan is --persist --backend netplan), or
/// --remove; the options that only make sense with some of them are checked here.
fn mode_of(a: &HostBridgeArgs) -> Result<Mode, Error> {
    let backend = match a.backend.as_deref() {
        None | Some("auto") => None,
        Some(b) => Some(b.parse()?),
    };
    let root = a.root_dir.clone().unwrap_or_else(|| PathBuf::from("/"));
    let persist = a.persist || a.netplan;
    if !persist && !a.remove {
        for (given, flag) in [
            (a.backend.is_some(), "--backend"),
            (a.root_dir.is_some(), "--root-dir"),
        ] {
            if given {
                return Err(Error::invalid(format!(
                    "{flag} goes with --persist or --remove"
                )));
            }
        }
    }
    if a.apply && !persist && !a.remove {
        return Err(Error::invalid(
            "--apply goes with --persist (or --netplan) or --remove",
        ));
    }
    Ok(match (a.live, persist, a.remove) {
        (true, _, _) => Mode::Live,
        (_, true, _) if a.netplan => Mode::netplan(root, a.apply),
        (_, true, _) => Mode::Persist {
            backend,
            root,
            apply: a.apply,
        },
        (_, _, true) => Mode::Remove {
            backend,
            root,
            apply: a.apply,
        },
        _ => {
            return Err(Error::invalid("say how to apply the bridge").with_hint(
                "add --live (now, with automatic rollback) or --persist [--backend STACK] (the network configuration's files; --netplan for netplan)",
            ))
        }
    })
}

fn host_bridge_options(
    a: &HostBridgeArgs,
    g: &Globals,
    state_dir: PathBuf,
) -> Result<host_bridge::Options, Error> {
    let nic = a.nic.clone().unwrap_or_default();
    let mode = mode_of(a)?;
    let address = a.address.as_deref().map(cidr::parse_cidr).transpose()?;
    let gateway = a
        .gateway
        .as_deref()
        .map(|s| cidr::parse_ip("gateway", s))
        .transpose()?;
    let dns = a
        .dns
        .iter()
        .map(|s| cidr::parse_ip("DNS server", s))
        .collect::<Result<Vec<_>, _>>()?;
    let probe = a
        .probe
        .as_deref()
        .map(|s| cidr::parse_ip("probe", s))
        .transpose()?;
    let reverter = std::env::current_exe()
        .map_err(|e| Error::io("cannot find the vbridge binary to re-execute", e))?;
    Ok(host_bridge::Options {
        nic,
        bridge: a.bridge.clone(),
        dhcp: a.dhcp,
        address,
        gateway,
        dns,
        mtu: a
            .mtu
            .as_deref()
            .map(|m| vbridge::validate::Mtu::parse(m).map(|m| m.get()))
            .transpose()?,
        mode,
        probe,
        rollback_after: Duration::from_secs(a.rollback_after),
        confirm_within: a.confirm_within.map(Duration::from_secs),
        dry_run: g.dry_run,
        reverter,
        state_dir,
    })
}

/// A rollback is the command failing: it goes to stderr, the report of a change to stdout.
fn render_bridge(r: &host_bridge::Report, g: &Globals, t: &mut Text) {
    if r.rolled_back {
        let why = match &r.probe {
            Some(p) => format!("{} did not answer within {} ms", p.target, p.ms),
            None => "the probe failed".to_string(),
        };
        t.err.push_str(&format!(
            "rolled back: {why}; {} keeps its previous addresses, routes and links\n",
            r.nic
        ));
        return;
    }
    let s = &mut t.out;
    let verb = match (r.changed, r.dry_run) {
        (false, _) => "no change",
        (true, true) => "would change",
        (true, false) => "changed",
    };
    // --remove of a bridge that no longer exists knows no NIC: name the bridge alone.
    if r.nic.is_empty() {
        s.push_str(&format!("{} ({}): {verb}\n", r.bridge, r.mode));
    } else {
        s.push_str(&format!("{} on {} ({}): {verb}\n", r.nic, r.bridge, r.mode));
    }
    if g.verbose || r.dry_run {
        for st in &r.steps {
            s.push_str(&format!("  {st}\n"));
        }
    }
    if let Some(f) = &r.netplan_file {
        s.push_str(&format!("  file: {}\n", f.display()));
    } else {
        for f in &r.files {
            s.push_str(&format!("  file: {}\n", f.display()));
        }
    }
    let saved = if r.dry_run { "would be saved" } else { "saved" };
    for b in &r.backups {
        s.push_str(&format!("  previous file {saved} as {}\n", b.display()));
    }
    if let Some(d) = &r.diff {
        s.push_str(d);
    }
    for n in &r.notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    for a in &r.addresses {
        s.push_str(&format!("  address {a}\n"));
    }
    for rt in &r.routes {
        s.push_str(&format!("  route {rt}\n"));
    }
    if let Some(p) = &r.probe {
        s.push_str(&format!("  {} answered after {} ms\n", p.target, p.ms));
    }
    if r.pending {
        s.push_str(&format!(
            "PENDING: this reverts by itself in {} s. From a NEW ssh connection run `vbridge host-bridge --confirm` to keep it.\n",
            r.confirm_within.unwrap_or(0)
        ));
    }
}

#[derive(Serialize)]
struct ConfirmReport {
    confirmed: bool,
    bridge: String,
    nic: String,
    mode: String,
}

#[derive(Serialize)]
struct RevertReport {
    reverted: bool,
    record: Option<pending::RevertRecord>,
}

pub fn host_bridge(a: &HostBridgeArgs, g: &Globals) -> CmdResult {
    // Resolved once, the same way as the domain backups' (an empty variable means unset).
    let dir = StateDir::from_env().root;
    if let Some(id) = &a.revert_pending {
        let window = a.revert_in_ms.map(Duration::from_millis);
        let rec = host_bridge::revert_pending(&dir, id, window)?;
        return Ok(super::report(
            RevertReport {
                reverted: rec.as_ref().is_some_and(|r| r.reverted),
                record: rec,
            },
            |r, _, t| t.out.push_str(&format!("reverted: {}\n", r.reverted)),
            |_| true,
        ));
    }
    if a.confirm {
        let p = host_bridge::confirm(&dir)?;
        return Ok(super::report(
            ConfirmReport {
                confirmed: true,
                bridge: p.bridge,
                nic: p.nic,
                mode: p.mode,
            },
            |r, _, t| {
                t.out
                    .push_str(&format!("confirmed: {} stays on {}\n", r.nic, r.bridge))
            },
            |_| true,
        ));
    }
    // A change still pending is what --remove undoes first: back to the state before it.
    if a.remove && pending::read(&dir)?.is_some() {
        let rec = host_bridge::remove(&dir)?;
        return Ok(super::report(
            RevertReport {
                reverted: rec.reverted,
                record: Some(rec),
            },
            |r, _, t| match &r.record {
                Some(rec) if r.reverted => t.out.push_str(&format!(
                    "removed: {} is off {} again, as before\n",
                    rec.nic, rec.bridge
                )),
                Some(rec) => t.err.push_str(&format!(
                    "removed, but not everything is as before: {}\n",
                    rec.problems.join("; ")
                )),
                None => t.out.push_str("removed\n"),
            },
            |r| r.reverted,
        ));
    }
    let opts = host_bridge_options(a, g, dir)?;
    let rep = host_bridge::run(&opts)?;
    Ok(super::report(rep, render_bridge, |r| !r.rolled_back))
}

fn render_tap(r: &tap::TapReport, g: &Globals, t: &mut Text) {
    let s = &mut t.out;
    if !r.changed {
        s.push_str(&format!("{}: no change\n", r.name));
        return;
    }
    s.push_str(&format!(
        "{}: {}\n",
        r.name,
        if g.dry_run { "would change" } else { "changed" }
    ));
    for a in &r.actions {
        s.push_str(&format!("  {a}\n"));
    }
}

pub fn tap(cmd: &TapCommand, g: &Globals) -> CmdResult {
    let rep = match cmd {
        TapCommand::Add {
            name,
            bridge,
            owner,
        } => tap::add(name, bridge, owner.as_deref(), g.dry_run)?,
        TapCommand::Del { name, force } => tap::del(name, *force, g.dry_run)?,
    };
    Ok(super::report(rep, render_tap, |_| true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn options(line: &str) -> Result<host_bridge::Options, Error> {
        let cli = super::super::Cli::try_parse_from(line.split_whitespace())
            .map_err(|e| Error::invalid(e.to_string()))?;
        match &cli.command {
            super::super::Command::HostBridge(a) => {
                host_bridge_options(a, &cli.globals, PathBuf::from("/nonexistent"))
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn host_bridge_command_lines() {
        let ok = [
            "vbridge host-bridge eth1 --live",
            "vbridge host-bridge eth1 --live --probe 10.0.0.9 --rollback-after 2",
            "vbridge host-bridge eth1 --live --confirm-within 60",
            "vbridge host-bridge eth1 --live --confirm-within 86400 --rollback-after 86400",
            "vbridge host-bridge eth1 --dhcp --netplan --apply --confirm-within 60",
            "vbridge host-bridge eth1 --address 10.0.0.2/24 --gateway 10.0.0.1 --dns 1.1.1.1,9.9.9.9 --netplan",
            "vbridge host-bridge eth1 --bridge br1 --dhcp --netplan --root-dir /tmp/x",
            "vbridge host-bridge eth1 --dhcp --persist",
            "vbridge host-bridge eth1 --dhcp --persist --backend networkd --apply --confirm-within 30",
            "vbridge host-bridge eth1 --address 10.0.0.2/24 --persist --backend ifupdown --root-dir /tmp/x",
            "vbridge host-bridge eth1 --dhcp --persist --backend nm",
            "vbridge host-bridge eth1 --dhcp --persist --backend auto",
            "vbridge host-bridge --remove",
            "vbridge host-bridge --remove --bridge br1 --backend networkd --root-dir /tmp/x",
            "vbridge host-bridge eth1 --remove --confirm-within 60",
            "vbridge host-bridge --remove --apply --backend nm",
        ];
        for line in ok {
            if let Err(e) = options(line) {
                panic!("{line}: {e}");
            }
        }
        let o = options("vbridge host-bridge eth1 --address 10.0.0.2/24 --gateway 10.0.0.1 --dns 1.1.1.1,9.9.9.9 --netplan").unwrap();
        assert_eq!(o.dns.len(), 2);
        assert_eq!(o.mode, Mode::netplan(PathBuf::from("/"), false));
        let bad = [
            "vbridge host-bridge eth1",
            "vbridge host-bridge eth1 --live --netplan",
            "vbridge host-bridge eth1 --dhcp --address 10.0.0.2/24 --netplan",
            "vbridge host-bridge eth1 --gateway 10.0.0.1 --netplan",
            "vbridge host-bridge eth1 --address 10.0.0.2 --netplan",
            "vbridge host-bridge eth1 --address 10.0.0.2/24 --gateway 10.0.0.1.5 --netplan",
            "vbridge host-bridge eth1 --dhcp --dns 1.1.1.1,x --netplan",
            "vbridge host-bridge eth1 --live --probe nope",
            "vbridge host-bridge eth1 --live --rollback-after 0",
            "vbridge host-bridge eth1 --live --confirm-within 0",
            "vbridge host-bridge eth1 --live --rollback-after 86401",
            "vbridge host-bridge eth1 --live --rollback-after 18446744073709551615",
            "vbridge host-bridge eth1 --live --confirm-within 18446744073709551615",
            "vbridge host-bridge eth1 --live --dhcp",
            "vbridge host-bridge eth1 --dhcp --root-dir /x",
            "vbridge host-bridge --confirm --live",
            "vbridge host-bridge br0 --live",
            "vbridge host-bridge eth1 --dhcp --persist --backend bsd",
            "vbridge host-bridge eth1 --dhcp --netplan --backend networkd",
            "vbridge host-bridge eth1 --persist",
            "vbridge host-bridge eth1 --dhcp --persist --apply --root-dir /x",
            "vbridge host-bridge eth1 --dhcp --persist --confirm-within 5",
            "vbridge host-bridge eth1 --live --backend networkd",
            "vbridge host-bridge eth1 --live --apply",
            "vbridge host-bridge --remove --dhcp",
            "vbridge host-bridge --remove --live",
            "vbridge host-bridge --remove --address 10.0.0.2/24",
            "vbridge host-bridge --remove --bridge br/0",
            "vbridge host-bridge br0 --remove",
            "vbridge host-bridge --remove --apply --root-dir /x",
        ];
        for line in bad {
            let checked = options(line).and_then(|o| host_bridge::check_options(&o));
            assert!(checked.is_err(), "{line} was accepted");
        }
    }
}
