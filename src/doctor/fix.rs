//! `doctor --fix`: turn findings into a plan of safe, reversible [`Action`]s (pure), then
//! apply them through [`plan::apply`], one by one. A failed change is reported and the
//! others still run. Nothing here touches an address of a NIC.

use super::{Action, Finding, Fixed, PersistedFile};
use crate::error::{Error, Result};
use crate::host::backends::{nm, FileApplier};
use crate::host::{firewall, netlink::Netlink, sysctl};
use crate::libvirt::{Conn, Net};
use crate::plan::{self, Applier, Step};
use crate::shell::join;
use std::path::{Path, PathBuf};

/// The file `--persist` writes in the sysctl.d directory.
pub const SYSCTL_DROPIN: &str = "90-vbridge-bridge-nf.conf";
/// The drop-in `--fix --persist` writes for bridge-nf-call-ip6tables=0.
pub const SYSCTL_DROPIN6: &str = "90-vbridge-bridge-nf6.conf";

/// How to apply.
#[derive(Debug, Clone)]
pub struct FixOptions {
    pub dry_run: bool,
    pub persist: bool,
    /// Where `--persist` writes the sysctl drop-in (tests point it at a temp dir).
    pub sysctl_dir: PathBuf,
    /// Where `--persist` writes `br_netfilter.conf` when br_netfilter is a module.
    pub modules_load_dir: PathBuf,
}

impl Step for Action {
    /// The change as a command a person could type.
    fn describe(&self) -> String {
        match self {
            Action::BridgeUp { bridge } => join(["ip", "link", "set", bridge, "up"]),
            Action::StpOff { bridge } => join([
                "ip",
                "link",
                "set",
                bridge,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ]),
            Action::BridgeNfOff => format!("sysctl -w {}=0", sysctl::BRIDGE_NF_CALL_IPTABLES),
            Action::BridgeNf6Off => format!("sysctl -w {}=0", sysctl::BRIDGE_NF_CALL_IP6TABLES),
            Action::AcceptBridged { chain, bridge } => join([
                "iptables", "-I", chain, "-i", bridge, "-o", bridge, "-j", "ACCEPT",
            ]),
            Action::StartNetwork { network } => join(["virsh", "net-start", network]),
            Action::AutostartNetwork { network } => join(["virsh", "net-autostart", network]),
            Action::AttachTap { tap, bridge } => {
                join(["ip", "link", "set", tap, "master", bridge, "up"])
            }
            Action::NmUnmanageTaps { conf } => format!(
                "write {} ([keyfile] unmanaged-devices+=interface-name:vnet*;interface-name:tap*); nmcli general reload conf",
                crate::shell::quote(conf)
            ),
            Action::NmRemoveUnmanagedTaps { conf } => format!(
                "rm {}; nmcli general reload conf",
                crate::shell::quote(conf)
            ),
            Action::BridgeDown { bridge } => join(["ip", "link", "set", bridge, "down"]),
            Action::SetMtu { dev, mtu, .. } => join(["ip", "link", "set", dev, "mtu", &mtu.to_string()]),
            Action::BridgeNfOn => format!("sysctl -w {}=1", sysctl::BRIDGE_NF_CALL_IPTABLES),
            Action::BridgeNf6On => format!("sysctl -w {}=1", sysctl::BRIDGE_NF_CALL_IP6TABLES),
            Action::RemoveAcceptBridged { chain, bridge } => join([
                "iptables", "-D", chain, "-i", bridge, "-o", bridge, "-j", "ACCEPT",
            ]),
            Action::StopNetwork { network } => join(["virsh", "net-destroy", network]),
            Action::NoAutostartNetwork { network } => {
                join(["virsh", "net-autostart", "--disable", network])
            }
        }
    }

    /// StpOff and AttachTap have none: the STP settings and the tap's master before the fix
    /// are not in the step.
    fn inverse(&self) -> Option<Action> {
        Some(match self {
            Action::BridgeUp { bridge } => Action::BridgeDown {
                bridge: bridge.clone(),
            },
            Action::BridgeDown { bridge } => Action::BridgeUp {
                bridge: bridge.clone(),
            },
            Action::BridgeNfOff => Action::BridgeNfOn,
            Action::BridgeNfOn => Action::BridgeNfOff,
            Action::BridgeNf6Off => Action::BridgeNf6On,
            Action::BridgeNf6On => Action::BridgeNf6Off,
            Action::AcceptBridged { chain, bridge } => Action::RemoveAcceptBridged {
                chain: chain.clone(),
                bridge: bridge.clone(),
            },
            Action::RemoveAcceptBridged { chain, bridge } => Action::AcceptBridged {
                chain: chain.clone(),
                bridge: bridge.clone(),
            },
            Action::StartNetwork { network } => Action::StopNetwork {
                network: network.clone(),
            },
            Action::StopNetwork { network } => Action::StartNetwork {
                network: network.clone(),
            },
            Action::AutostartNetwork { network } => Action::NoAutostartNetwork {
                network: network.clone(),
            },
            Action::NoAutostartNetwork { network } => Action::AutostartNetwork {
                network: network.clone(),
            },
            Action::NmUnmanageTaps { conf } => Action::NmRemoveUnmanagedTaps { conf: conf.clone() },
            Action::NmRemoveUnmanagedTaps { conf } => Action::NmUnmanageTaps { conf: conf.clone() },
            Action::SetMtu { dev, mtu, was } => Action::SetMtu {
                dev: dev.clone(),
                mtu: *was,
                was: *mtu,
            },
            Action::StpOff { .. } | Action::AttachTap { .. } => return None,
        })
    }
}

impl Action {
    fn subject(&self) -> String {
        match self {
            Action::BridgeUp { bridge }
            | Action::BridgeDown { bridge }
            | Action::StpOff { bridge } => bridge.clone(),
            Action::BridgeNfOff | Action::BridgeNfOn => sysctl::BRIDGE_NF_CALL_IPTABLES.to_string(),
            Action::BridgeNf6Off | Action::BridgeNf6On => {
                sysctl::BRIDGE_NF_CALL_IP6TABLES.to_string()
            }
            Action::AcceptBridged { chain, .. } | Action::RemoveAcceptBridged { chain, .. } => {
                chain.clone()
            }
            Action::StartNetwork { network }
            | Action::AutostartNetwork { network }
            | Action::StopNetwork { network }
            | Action::NoAutostartNetwork { network } => network.clone(),
            Action::AttachTap { tap, .. } => tap.clone(),
            Action::NmUnmanageTaps { .. } | Action::NmRemoveUnmanagedTaps { .. } => {
                "NetworkManager".into()
            }
            Action::SetMtu { dev, .. } => dev.clone(),
        }
    }
}

/// The changes that answer the findings, each once, in a safe order: bridges first, then the
/// firewall, networks, and taps last (onto a bridge that is up). Pure.
pub fn plan(findings: &[Finding]) -> Vec<Fixed> {
    let mut out: Vec<Fixed> = Vec::new();
    for f in findings {
        let Some(a) = &f.action else { continue };
        if let Some(p) = out.iter_mut().find(|p| &p.action == a) {
            if !p.ids.contains(&f.id) {
                p.ids.push(f.id);
            }
            continue;
        }
        out.push(Fixed {
            ids: vec![f.id],
            subject: a.subject(),
            change: a.describe(),
            action: a.clone(),
            done: false,
            error: None,
            persisted: Vec::new(),
            persist_hint: None,
        });
    }
    out.sort_by(|a, b| a.action.cmp(&b.action));
    out
}

/// Apply a plan. With `dry_run` nothing changes and every entry says what would be done.
pub fn apply(conn: &Conn, changes: Vec<Fixed>, opts: &FixOptions) -> Vec<Fixed> {
    let mut changes = changes;
    for f in &mut changes {
        f.persist_hint = persist_hint(&f.action, opts);
    }
    if opts.dry_run {
        return changes;
    }
    let steps: Vec<Action> = changes.iter().map(|f| f.action.clone()).collect();
    let mut by = Fixer {
        conn,
        opts,
        nl: None,
        results: Vec::new(),
    };
    let stopped = plan::apply(&steps, &mut by);
    debug_assert!(
        stopped.is_ok(),
        "the fixer records failures, it never stops"
    );
    for (f, result) in changes.iter_mut().zip(by.results) {
        match result {
            Ok(persisted) => {
                f.done = true;
                f.persisted = persisted;
            }
            Err(e) => f.error = Some(e),
        }
    }
    changes
}

/// Carries `--fix`'s steps out. A step that fails is recorded with its error and the plan
/// goes on: the fixes answer separate findings, so one that cannot be made must not keep
/// the others from being made.
struct Fixer<'a> {
    conn: &'a Conn,
    opts: &'a FixOptions,
    /// Opened at the first step that needs it.
    nl: Option<Netlink>,
    /// Per step, in order: the files `--persist` wrote, or why the step failed.
    results: Vec<Result<Vec<PersistedFile>>>,
}

impl Applier<Action> for Fixer<'_> {
    fn apply_step(&mut self, step: &Action) -> Result<()> {
        let result = apply_one(self.conn, &mut self.nl, step, self.opts);
        self.results.push(result);
        Ok(())
    }
}

fn persist_hint(a: &Action, opts: &FixOptions) -> Option<String> {
    match a {
        Action::BridgeNfOff if !opts.persist => Some(format!(
            "lost at reboot: add --persist to write {} (and {} when br_netfilter is a module)",
            opts.sysctl_dir.join(SYSCTL_DROPIN).display(),
            opts.modules_load_dir
                .join(sysctl::MODULES_LOAD_FILE)
                .display()
        )),
        Action::BridgeNf6Off if !opts.persist => Some(format!(
            "lost at reboot: add --persist to write {}",
            opts.sysctl_dir.join(SYSCTL_DROPIN6).display()
        )),
        Action::BridgeNfOff | Action::BridgeNf6Off => None,
        Action::AcceptBridged { .. } => Some(
            "lost at reboot: save it with your firewall's tool (`iptables-save > /etc/iptables/rules.v4` with iptables-persistent, or a firewalld direct rule)".into(),
        ),
        Action::StpOff { .. } | Action::BridgeUp { .. } => Some(
            "lost when the bridge is recreated: set it in the bridge's config (netplan `parameters: {stp: false, forward-delay: 0}`)".into(),
        ),
        Action::AttachTap { .. } => {
            Some("libvirt attaches the tap itself at the next VM start".into())
        }
        Action::SetMtu { .. } => Some(
            "lost when the device is recreated: a tap takes the NIC's <mtu> at the next VM start; set a bridge's MTU in its config (netplan `mtu:`, or `vbridge host-bridge --mtu`)".into(),
        ),
        Action::BridgeDown { .. } => None,
        // The conf.d file is the persistent form itself.
        Action::NmUnmanageTaps { .. } | Action::NmRemoveUnmanagedTaps { .. } => None,
        Action::StartNetwork { .. } | Action::AutostartNetwork { .. } => None,
        // Undoing a fix leaves the host as it was before doctor: nothing to persist.
        Action::BridgeNfOn
        | Action::BridgeNf6On
        | Action::RemoveAcceptBridged { .. }
        | Action::StopNetwork { .. }
        | Action::NoAutostartNetwork { .. } => None,
    }
}

fn netlink(nl: &mut Option<Netlink>) -> Result<&mut Netlink> {
    if nl.is_none() {
        *nl = Some(Netlink::open()?);
    }
    Ok(nl.as_mut().expect("just opened"))
}

fn write_file(dir: &Path, name: &str, text: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&path, text))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(path.display().to_string())
}

/// `--persist` for `bridge-nf-call-iptables=0`: the sysctl.d drop-in and, when br_netfilter
/// is a module (`is_module`), a modules-load.d file that loads it at boot. Without that, on
/// stock Debian/Ubuntu kernels the module arrives late (Docker loads it), after
/// systemd-sysctl ran, and the drop-in has no key to set; systemd-modules-load runs before
/// systemd-sysctl, so with the module loaded there the key exists when the drop-in applies.
pub fn persist_bridge_nf_off(
    sysctl_dir: &Path,
    modules_load_dir: &Path,
    is_module: bool,
) -> Result<Vec<PersistedFile>> {
    let key = sysctl::BRIDGE_NF_CALL_IPTABLES;
    let mut out = Vec::new();
    if is_module {
        let why = format!("loads br_netfilter at boot before systemd-sysctl runs, so {SYSCTL_DROPIN} finds {key} to set (br_netfilter is a module here, otherwise loaded late, e.g. by Docker, and the setting would not apply)");
        let path = write_file(
            modules_load_dir,
            sysctl::MODULES_LOAD_FILE,
            &sysctl::modules_load("br_netfilter", &why),
        )?;
        out.insert(0, PersistedFile { path, why });
    }
    let why = format!("sets {key}=0 at boot: bridged VM frames skip iptables, so a FORWARD policy of DROP cannot cut VMs off");
    let path = write_file(sysctl_dir, SYSCTL_DROPIN, &sysctl::dropin(key, "0", &why))?;
    out.insert(0, PersistedFile { path, why });
    Ok(out)
}

/// Write (or remove) vbridge's NetworkManager conf.d file at `conf`
/// (CONF_DIR/conf.d/NAME) through the file plan, then have NetworkManager read its
/// configuration again. The file written is reported as persisted.
pub fn nm_unmanage_taps(conf: &Path, add: bool) -> Result<Vec<PersistedFile>> {
    let conf_dir = conf.parent().and_then(Path::parent).ok_or_else(|| {
        Error::invalid(format!("{} is not in a conf.d directory", conf.display()))
    })?;
    let files = if add {
        nm::unmanaged_taps_plan_in(conf_dir)?
    } else {
        nm::unmanaged_taps_removal(conf_dir)?
    };
    plan::apply_or_roll_back(&files, &mut FileApplier)?;
    crate::host::run_program("nmcli", &["general", "reload", "conf"]).map_err(|e| {
        e.context(format!(
            "{} is written; NetworkManager reads it at its next start",
            conf.display()
        ))
    })?;
    Ok(if add {
        vec![PersistedFile {
            path: conf.display().to_string(),
            why: "NetworkManager leaves libvirt's TAP devices (vnet*, tap*) unmanaged, so it cannot take a VM's tap off its bridge".into(),
        }]
    } else {
        Vec::new()
    })
}

fn network(conn: &Conn, name: &str) -> Result<Net> {
    conn.network(name)?
        .ok_or_else(|| Error::not_found(format!("no network named {name:?}")))
}

fn apply_one(
    conn: &Conn,
    nl: &mut Option<Netlink>,
    a: &Action,
    opts: &FixOptions,
) -> Result<Vec<PersistedFile>> {
    match a {
        Action::BridgeUp { bridge } | Action::BridgeDown { bridge } => {
            let nl = netlink(nl)?;
            let i = nl.index_of(bridge)?;
            nl.set_up(i, matches!(a, Action::BridgeUp { .. }), bridge)?;
        }
        Action::StpOff { bridge } => {
            sysctl::write_bridge_attr(bridge, "stp_state", "0")?;
            sysctl::write_bridge_attr(bridge, "forward_delay", "0")?;
        }
        Action::BridgeNfOff => {
            let key = sysctl::BRIDGE_NF_CALL_IPTABLES;
            sysctl::write(key, "0")?;
            if opts.persist {
                let is_module =
                    sysctl::br_netfilter_is_module(Path::new("/"), &sysctl::kernel_release());
                return persist_bridge_nf_off(&opts.sysctl_dir, &opts.modules_load_dir, is_module);
            }
        }
        Action::BridgeNfOn => sysctl::write(sysctl::BRIDGE_NF_CALL_IPTABLES, "1")?,
        Action::BridgeNf6Off => {
            let key = sysctl::BRIDGE_NF_CALL_IP6TABLES;
            sysctl::write(key, "0")?;
            if opts.persist {
                // The IPv4 fix's modules-load file, when written, loads br_netfilter for both.
                let why = format!("sets {key}=0 at boot: bridged VM frames skip ip6tables, so a FORWARD policy of DROP cannot cut off the VMs' IPv6");
                let path = write_file(
                    &opts.sysctl_dir,
                    SYSCTL_DROPIN6,
                    &sysctl::dropin(key, "0", &why),
                )?;
                return Ok(vec![PersistedFile { path, why }]);
            }
        }
        Action::BridgeNf6On => sysctl::write(sysctl::BRIDGE_NF_CALL_IP6TABLES, "1")?,
        Action::AcceptBridged { chain, bridge } => {
            crate::validate::interface_name(bridge)?;
            firewall::run(&firewall::accept_rule_args("-I", chain, bridge))?;
        }
        Action::RemoveAcceptBridged { chain, bridge } => {
            crate::validate::interface_name(bridge)?;
            firewall::run(&firewall::accept_rule_args("-D", chain, bridge))?;
        }
        Action::StartNetwork { network: n } => network(conn, n)?.start()?,
        Action::StopNetwork { network: n } => network(conn, n)?.stop()?,
        Action::AutostartNetwork { network: n } => network(conn, n)?.set_autostart(true)?,
        Action::NoAutostartNetwork { network: n } => network(conn, n)?.set_autostart(false)?,
        Action::NmUnmanageTaps { conf } | Action::NmRemoveUnmanagedTaps { conf } => {
            let add = matches!(a, Action::NmUnmanageTaps { .. });
            return nm_unmanage_taps(Path::new(conf), add);
        }
        Action::AttachTap { tap, bridge } => {
            let nl = netlink(nl)?;
            let t = nl.index_of(tap)?;
            let b = nl.index_of(bridge)?;
            nl.set_master(t, b, tap)?;
            nl.set_up(t, true, tap)?;
        }
        Action::SetMtu { dev, mtu, .. } => {
            let nl = netlink(nl)?;
            let i = nl.index_of(dev)?;
            nl.set_mtu(i, *mtu, dev)?;
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    #[test]
    fn persist_writes_modules_load_only_for_a_module() {
        let sysctl_dir = tempfile::tempdir().unwrap();
        let modules_dir = tempfile::tempdir().unwrap();
        let modules_load = modules_dir.path().join("sub/dir");
        // br_netfilter a module: both files, the sysctl drop-in first.
        let files = persist_bridge_nf_off(sysctl_dir.path(), &modules_load, true).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
        let dropin = sysctl_dir.path().join(SYSCTL_DROPIN);
        let conf = modules_load.join("br_netfilter.conf");
        assert_eq!(
            paths,
            [dropin.display().to_string(), conf.display().to_string()]
        );
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.ends_with("\nbr_netfilter\n"), "{text}");
        assert!(
            files[1].why.contains("before systemd-sysctl"),
            "{}",
            files[1].why
        );
        let text = std::fs::read_to_string(&dropin).unwrap();
        assert!(
            text.ends_with("net.bridge.bridge-nf-call-iptables = 0\n"),
            "{text}"
        );

        // Built in: the key exists from boot; only the drop-in.
        let sysctl_dir = tempfile::tempdir().unwrap();
        let modules_dir = tempfile::tempdir().unwrap();
        let files = persist_bridge_nf_off(sysctl_dir.path(), modules_dir.path(), false).unwrap();
        assert_eq!(files.len(), 1);
        assert!(modules_dir.path().read_dir().unwrap().next().is_none());
    }

    #[test]
    fn fixes_undo_as_the_commands_a_person_would_type() {
        let p = Plan::new(vec![
            Action::BridgeUp {
                bridge: "br0".into(),
            },
            Action::StpOff {
                bridge: "br0".into(),
            },
            Action::BridgeNfOff,
            Action::AcceptBridged {
                chain: "DOCKER-USER".into(),
                bridge: "br0".into(),
            },
            Action::StartNetwork {
                network: "n".into(),
            },
            Action::AutostartNetwork {
                network: "n".into(),
            },
        ]);
        let undo: Vec<String> = p.undo().iter().map(Step::describe).collect();
        assert_eq!(
            undo,
            [
                "virsh net-autostart --disable n",
                "virsh net-destroy n",
                "iptables -D DOCKER-USER -i br0 -o br0 -j ACCEPT",
                "sysctl -w net.bridge.bridge-nf-call-iptables=1",
                "ip link set br0 down",
            ]
        );
        for s in &p.steps {
            if let Some(i) = s.inverse() {
                assert_eq!(i.inverse().as_ref(), Some(s));
            }
        }
    }

    #[test]
    fn nm_fix_writes_the_conf_d_file_and_its_inverse_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let conf_dir = dir.path().join("NetworkManager");
        let conf = nm::unmanaged_taps_file(&conf_dir);
        let a = Action::NmUnmanageTaps {
            conf: conf.display().to_string(),
        };
        assert!(!nm::nm_leaves_taps_unmanaged(&conf_dir));
        // NetworkManager does not run here: the file is written, the reload is the error.
        let r = nm_unmanage_taps(&conf, true);
        assert!(conf.exists());
        if let Err(e) = &r {
            assert!(e.message.contains("is written"), "{}", e.message);
        }
        assert!(nm::nm_leaves_taps_unmanaged(&conf_dir));
        // Again: nothing to write. The inverse removes exactly that file.
        assert!(nm::unmanaged_taps_plan_in(&conf_dir).unwrap().is_empty());
        let undo = a.inverse().unwrap();
        assert_eq!(undo.inverse().as_ref(), Some(&a));
        assert!(undo.describe().starts_with("rm "), "{}", undo.describe());
        let _ = nm_unmanage_taps(&conf, false);
        assert!(!conf.exists());
        assert!(std::fs::read_dir(conf_dir.join("conf.d"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn persist_hint_names_both_files() {
        let opts = FixOptions {
            dry_run: true,
            persist: false,
            sysctl_dir: "/etc/sysctl.d".into(),
            modules_load_dir: "/etc/modules-load.d".into(),
        };
        let h = persist_hint(&Action::BridgeNfOff, &opts).unwrap();
        assert!(
            h.contains("/etc/sysctl.d/90-vbridge-bridge-nf.conf")
                && h.contains("/etc/modules-load.d/br_netfilter.conf"),
            "{h}"
        );
    }
}
