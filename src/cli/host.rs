//! `vbridge host-bridge` and `vbridge tap`.

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
    /// The NIC to put on the bridge (e.g. enp3s0)
    #[arg(required_unless_present_any = ["confirm", "remove", "revert_pending"])]
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
    /// Write a netplan file (the persistent way)
    #[arg(long, conflicts_with = "live")]
    pub netplan: bool,
    /// With --netplan: write under DIR instead of /
    #[arg(long, value_name = "DIR", requires = "netplan")]
    pub root_dir: Option<std::path::PathBuf>,
    /// With --netplan: run `netplan apply` under the rollback guard
    #[arg(long, requires = "netplan")]
    pub apply: bool,
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
    #[arg(long, conflicts_with_all = ["live", "netplan", "confirm_within"])]
    pub confirm: bool,
    /// Undo the pending change now (one waiting for --confirm, or one a killed vbridge left
    /// part-way) and check the network is as it was before
    #[arg(long, conflicts_with_all = ["live", "netplan", "confirm_within", "confirm"])]
    pub remove: bool,
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

fn host_bridge_options(
    a: &HostBridgeArgs,
    g: &Globals,
    state_dir: PathBuf,
) -> Result<host_bridge::Options, Error> {
    let nic = a.nic.clone().unwrap_or_default();
    let mode = match (a.live, a.netplan) {
        (true, _) => Mode::Live,
        (_, true) => Mode::Netplan {
            root: a.root_dir.clone().unwrap_or_else(|| PathBuf::from("/")),
            apply: a.apply,
        },
        _ => {
            return Err(Error::invalid("say how to apply the bridge").with_hint(
                "add --live (now, with automatic rollback) or --netplan (persistent file)",
            ))
        }
    };
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
        mode,
        probe,
        rollback_after: Duration::from_secs(a.rollback_after),
        confirm_within: a.confirm_within.map(Duration::from_secs),
        dry_run: g.dry_run,
        reverter,
        state_dir,
    })
}

fn render_bridge(r: &host_bridge::Report, g: &Globals) -> String {
    let mut s = String::new();
    if r.rolled_back {
        let why = match &r.probe {
            Some(p) => format!("{} did not answer within {} ms", p.target, p.ms),
            None => "the probe failed".to_string(),
        };
        s.push_str(&format!(
            "rolled back: {why}; {} keeps its previous addresses, routes and links\n",
            r.nic
        ));
        return s;
    }
    let verb = match (r.changed, r.dry_run) {
        (false, _) => "no change",
        (true, true) => "would change",
        (true, false) => "changed",
    };
    s.push_str(&format!("{} on {} ({}): {verb}\n", r.nic, r.bridge, r.mode));
    if g.verbose || r.dry_run {
        for st in &r.steps {
            s.push_str(&format!("  {st}\n"));
        }
    }
    if let Some(f) = &r.netplan_file {
        s.push_str(&format!("  file: {}\n", f.display()));
    }
    if let Some(b) = &r.backup {
        s.push_str(&format!("  previous file saved as {}\n", b.display()));
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
    s
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
            |r, _| format!("reverted: {}\n", r.reverted),
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
            |r, _| format!("confirmed: {} stays on {}\n", r.nic, r.bridge),
            |_| true,
        ));
    }
    if a.remove {
        let rec = host_bridge::remove(&dir)?;
        return Ok(super::report(
            RevertReport {
                reverted: rec.reverted,
                record: Some(rec),
            },
            |r, _| match &r.record {
                Some(rec) if r.reverted => {
                    format!(
                        "removed: {} is off {} again, as before\n",
                        rec.nic, rec.bridge
                    )
                }
                Some(rec) => format!(
                    "removed, but not everything is as before: {}\n",
                    rec.problems.join("; ")
                ),
                None => "removed\n".into(),
            },
            |r| r.reverted,
        ));
    }
    let opts = host_bridge_options(a, g, dir)?;
    let rep = host_bridge::run(&opts)?;
    Ok(super::report(rep, render_bridge, |r| !r.rolled_back))
}

fn render_tap(r: &tap::TapReport, g: &Globals) -> String {
    if !r.changed {
        return format!("{}: no change\n", r.name);
    }
    let mut s = format!(
        "{}: {}\n",
        r.name,
        if g.dry_run { "would change" } else { "changed" }
    );
    for a in &r.actions {
        s.push_str(&format!("  {a}\n"));
    }
    s
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
        ];
        for line in ok {
            if let Err(e) = options(line) {
                panic!("{line}: {e}");
            }
        }
        let o = options("vbridge host-bridge eth1 --address 10.0.0.2/24 --gateway 10.0.0.1 --dns 1.1.1.1,9.9.9.9 --netplan").unwrap();
        assert_eq!(o.dns.len(), 2);
        assert_eq!(
            o.mode,
            Mode::Netplan {
                root: PathBuf::from("/"),
                apply: false
            }
        );
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
        ];
        for line in bad {
            let checked = options(line).and_then(|o| host_bridge::check_options(&o));
            assert!(checked.is_err(), "{line} was accepted");
        }
    }
}
