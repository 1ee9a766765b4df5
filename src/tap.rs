//! The `tap` command: persistent TAP devices on a bridge, what `ip tuntap add NAME mode
//! tap; ip link set NAME master BR up` does. Observe the TAP and the bridge, plan typed
//! [`TapStep`]s from that (pure), apply them through the TUN ioctls and rtnetlink.
//! Idempotent both ways.

use crate::error::{Error, Result};
use crate::host::netlink::{Netlink, NlError};
use crate::host::sysfs;
use crate::host::tun::{self, IFF_PERSIST, IFF_TAP};
use crate::plan::{Applier, Plan};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TapReport {
    pub name: String,
    pub bridge: Option<String>,
    pub owner: Option<u32>,
    pub changed: bool,
    /// What was done, in words.
    pub actions: Vec<String>,
}

/// One change to a TAP device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapStep {
    /// Create the TAP, persistent.
    Create {
        name: String,
    },
    /// Let `uid` open it.
    SetOwner {
        name: String,
        uid: u32,
    },
    SetMaster {
        name: String,
        bridge: String,
    },
    SetUp {
        name: String,
    },
    Delete {
        name: String,
    },
}

impl crate::plan::Step for TapStep {
    fn describe(&self) -> String {
        match self {
            TapStep::Create { name } => format!("create persistent TAP {name}"),
            TapStep::SetOwner { name, uid } => format!("set owner of {name} to uid {uid}"),
            TapStep::SetMaster { name, bridge } => format!("set {name} master {bridge}"),
            TapStep::SetUp { name } => format!("set {name} up"),
            TapStep::Delete { name } => format!("delete TAP {name}"),
        }
    }

    /// Deleting a created TAP undoes everything done to it after. The other steps do not
    /// record what they replaced (owner, master, state), and a deleted TAP cannot come back
    /// as it was, so they have none.
    fn inverse(&self) -> Option<TapStep> {
        match self {
            TapStep::Create { name } => Some(TapStep::Delete { name: name.clone() }),
            _ => None,
        }
    }
}

/// What was observed of one interface name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapState {
    pub exists: bool,
    /// tun_flags from sysfs: Some only for a TUN/TAP device.
    pub tun_flags: Option<u32>,
    pub owner: Option<u32>,
    pub master: Option<String>,
    pub up: bool,
    /// Pids holding it open (read only when it matters: deleting without --force).
    pub holders: Vec<u32>,
}

impl TapState {
    fn is_tap(&self) -> bool {
        self.tun_flags.is_some_and(|f| f & IFF_TAP as u32 != 0)
    }
}

/// Read what the TAP `name` looks like now.
pub fn observe(name: &str) -> TapState {
    TapState {
        exists: sysfs::exists(name),
        tun_flags: sysfs::tun_flags(name),
        owner: sysfs::tun_owner(name),
        master: sysfs::master(name),
        up: sysfs::is_up(name),
        holders: Vec::new(),
    }
}

/// What was observed of the bridge a TAP goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeState {
    pub exists: bool,
    pub is_bridge: bool,
}

fn refuse_non_tap(name: &str, tap: &TapState) -> Result<()> {
    if tap.exists && !tap.is_tap() {
        return Err(
            Error::conflict(format!("{name} exists and is not a TAP device"))
                .with_hint("choose another name for the TAP"),
        );
    }
    Ok(())
}

/// The refusals of `tap add` that need no owner: a name that is not a TAP, a missing bridge.
pub fn check_add(name: &str, bridge: &str, tap: &TapState, br: BridgeState) -> Result<()> {
    refuse_non_tap(name, tap)?;
    if !br.is_bridge {
        let what = if br.exists {
            "is not a bridge"
        } else {
            "does not exist"
        };
        return Err(Error::not_found(format!("{bridge} {what}"))
            .with_hint("create the bridge first, see `vbridge host-bridge`"));
    }
    Ok(())
}

/// The steps that bring `name` to: a persistent TAP owned by `uid` (when given), a port of
/// `bridge`, up. Empty when it is so already.
pub fn plan_add(
    name: &str,
    bridge: &str,
    uid: Option<u32>,
    tap: &TapState,
    br: BridgeState,
) -> Result<Plan<TapStep>> {
    check_add(name, bridge, tap, br)?;
    let mut steps = Vec::new();
    if !tap.exists {
        steps.push(TapStep::Create { name: name.into() });
    }
    if let Some(u) = uid {
        if !tap.exists || tap.owner != Some(u) {
            steps.push(TapStep::SetOwner {
                name: name.into(),
                uid: u,
            });
        }
    }
    if tap.master.as_deref() != Some(bridge) {
        steps.push(TapStep::SetMaster {
            name: name.into(),
            bridge: bridge.into(),
        });
    }
    if !tap.exists || !tap.up {
        steps.push(TapStep::SetUp { name: name.into() });
    }
    Ok(Plan::new(steps))
}

/// The steps that delete `name`: none when it is gone. Refuses, unless `force`, a TAP that
/// is not persistent or that a process holds: that is a running VM's (libvirt's vnetX) and
/// deleting it cuts the guest off.
pub fn plan_del(name: &str, force: bool, tap: &TapState) -> Result<Plan<TapStep>> {
    refuse_non_tap(name, tap)?;
    if !tap.exists {
        return Ok(Plan::default());
    }
    if !force {
        let persistent = tap.tun_flags.is_some_and(|f| f & IFF_PERSIST != 0);
        let pids = &tap.holders;
        if !persistent || !pids.is_empty() {
            let why = if pids.is_empty() {
                "it is not persistent: a process created it and owns it".to_string()
            } else {
                format!(
                    "process {} holds it open",
                    pids.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(Error::conflict(format!(
                "{name} is in use, {why} (a running VM's TAP looks like this)"
            ))
            .with_hint(format!(
                "stop the VM or process first; `{}` deletes it anyway and cuts that process off",
                crate::shell::join(["vbridge", "tap", "del", name, "--force"])
            )));
        }
    }
    Ok(Plan::new(vec![TapStep::Delete { name: name.into() }]))
}

/// Carries TAP steps out: TUN ioctls for creating and owning, rtnetlink for the rest
/// (opened on first use).
#[derive(Default)]
struct TapApplier {
    nl: Option<Netlink>,
}

impl TapApplier {
    fn nl(&mut self) -> Result<&mut Netlink> {
        if self.nl.is_none() {
            self.nl = Some(Netlink::open()?);
        }
        Ok(self.nl.as_mut().expect("opened above"))
    }
}

impl Applier<TapStep> for TapApplier {
    fn apply_step(&mut self, step: &TapStep) -> Result<()> {
        match step {
            TapStep::Create { name } => tun::tun_setup(name, None, true),
            TapStep::SetOwner { name, uid } => tun::tun_setup(name, Some(*uid), true),
            TapStep::SetMaster { name, bridge } => {
                let vanished = |e: NlError| match e.errno {
                    libc::ENODEV => {
                        Error::host(format!("{name} or {bridge} vanished while being set up"))
                    }
                    _ => e.error,
                };
                let nl = self.nl()?;
                let t = nl.index_of(name).map_err(vanished)?;
                let b = nl.index_of(bridge).map_err(vanished)?;
                Ok(nl.set_master(t, b, name)?)
            }
            TapStep::SetUp { name } => {
                let nl = self.nl()?;
                let t = nl.index_of(name).map_err(|e| match e.errno {
                    libc::ENODEV => Error::host(format!("{name} vanished while being set up")),
                    _ => e.error,
                })?;
                Ok(nl.set_up(t, true, name)?)
            }
            TapStep::Delete { name } => {
                let nl = self.nl()?;
                match nl.index_of(name) {
                    Ok(i) => Ok(nl.delete_link(i, name)?),
                    // Gone meanwhile: nothing left to delete.
                    Err(e) if e.errno == libc::ENODEV => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

fn run(plan: &Plan<TapStep>, dry_run: bool) -> Result<()> {
    if dry_run {
        return Ok(());
    }
    crate::plan::apply(&plan.steps, &mut TapApplier::default()).map_err(|s| s.error)
}

/// Create a persistent TAP on `bridge`, up. Existing TAPs are brought to that state.
pub fn add(name: &str, bridge: &str, owner: Option<&str>, dry_run: bool) -> Result<TapReport> {
    crate::validate::interface_name(name)?;
    crate::validate::interface_name(bridge)?;
    let tap = observe(name);
    let br = BridgeState {
        exists: sysfs::exists(bridge),
        is_bridge: sysfs::is_bridge(bridge),
    };
    // Refused before the owner is looked up, so a missing bridge is named first.
    check_add(name, bridge, &tap, br)?;
    let uid = owner.map(tun::resolve_user).transpose()?;
    let plan = plan_add(name, bridge, uid, &tap, br)?;
    run(&plan, dry_run)?;
    Ok(TapReport {
        name: name.into(),
        bridge: Some(bridge.into()),
        owner: uid.or_else(|| sysfs::tun_owner(name)),
        changed: !plan.is_empty(),
        actions: plan.describe(),
    })
}

/// Delete a TAP; a missing one is success with no change (see [`plan_del`] for refusals).
pub fn del(name: &str, force: bool, dry_run: bool) -> Result<TapReport> {
    crate::validate::interface_name(name)?;
    let mut tap = observe(name);
    if tap.exists && !force {
        tap.holders = tun::holders(name);
    }
    let plan = plan_del(name, force, &tap)?;
    run(&plan, dry_run)?;
    Ok(TapReport {
        name: name.into(),
        bridge: None,
        owner: None,
        changed: !plan.is_empty(),
        actions: plan.describe(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(flags: u32, owner: Option<u32>, master: Option<&str>, up: bool) -> TapState {
        TapState {
            exists: true,
            tun_flags: Some(flags),
            owner,
            master: master.map(String::from),
            up,
            holders: vec![],
        }
    }

    const BR: BridgeState = BridgeState {
        exists: true,
        is_bridge: true,
    };
    const PERSISTENT_TAP: u32 = 0x1802;

    #[test]
    fn add_plans_only_what_is_missing() {
        let p = plan_add("tp0", "br0", Some(7), &TapState::default(), BR).unwrap();
        assert_eq!(
            p.describe(),
            [
                "create persistent TAP tp0",
                "set owner of tp0 to uid 7",
                "set tp0 master br0",
                "set tp0 up"
            ]
        );
        assert_eq!(p.undo(), [TapStep::Delete { name: "tp0".into() }]);
        let done = tap(PERSISTENT_TAP, Some(7), Some("br0"), true);
        assert!(plan_add("tp0", "br0", Some(7), &done, BR)
            .unwrap()
            .is_empty());
        assert!(plan_add("tp0", "br0", None, &done, BR).unwrap().is_empty());
        let off = tap(PERSISTENT_TAP, Some(7), None, true);
        assert_eq!(
            plan_add("tp0", "br0", None, &off, BR).unwrap().describe(),
            ["set tp0 master br0"]
        );
    }

    #[test]
    fn add_refuses_non_taps_and_missing_bridges() {
        let veth = TapState {
            exists: true,
            ..TapState::default()
        };
        let e = plan_add("x", "br0", None, &veth, BR).unwrap_err();
        assert!(e.message.contains("not a TAP"), "{}", e.message);
        let e = plan_add(
            "tp0",
            "nobr",
            None,
            &TapState::default(),
            BridgeState::default(),
        )
        .unwrap_err();
        assert_eq!(e.message, "nobr does not exist");
    }

    #[test]
    fn del_refuses_a_held_or_non_persistent_tap_unless_forced() {
        assert!(plan_del("tp0", false, &TapState::default())
            .unwrap()
            .is_empty());
        let ours = tap(PERSISTENT_TAP, None, None, true);
        assert_eq!(
            plan_del("tp0", false, &ours).unwrap().describe(),
            ["delete TAP tp0"]
        );
        let mut held = ours.clone();
        held.holders = vec![42];
        let e = plan_del("tp0", false, &held).unwrap_err();
        assert!(e.message.contains("process 42 holds it"), "{}", e.message);
        let vm = tap(0x1002, None, None, true);
        let e = plan_del("vnet0", false, &vm).unwrap_err();
        assert!(e.message.contains("not persistent"), "{}", e.message);
        assert!(!plan_del("vnet0", true, &vm).unwrap().is_empty());
    }
}
