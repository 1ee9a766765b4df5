//! The `host-bridge` command as one library call: validate, then the live way ([`live`]:
//! netlink, probe, rollback), the persistent way ([`persist`]: the files of the host's
//! network stack as a file plan, optionally applied by the stack under the same guard), or
//! the way back ([`remove`]: the NIC gets the bridge's addresses again, vbridge's files go);
//! each one optionally left pending under a confirm window ([`pending`]).

pub mod live;
pub mod pending;
pub mod persist;
pub mod remove;

pub use live::{run_live, ProbeResult};
pub use persist::run_persist;
pub use remove::run_remove;

use crate::error::{Error, Result};
use crate::host::backends::Backend;
use crate::host::bridge::{self, LiveRequest, NetlinkNet};
use pending::Pending;
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Now, through netlink.
    Live,
    /// Write the bridge into the network stack's files under `root` ("/" for the real
    /// system): `backend` None detects the stack. `apply` makes the running stack read them
    /// (`netplan apply`, `networkctl reload`, ...) under the probe/rollback guard.
    Persist {
        backend: Option<Backend>,
        root: PathBuf,
        apply: bool,
    },
    /// Take the NIC off the bridge live (the bridge's addresses and routes back on the NIC,
    /// probe, rollback) and remove vbridge's files under `root` (of `backend`, or of every
    /// stack), putting back the user's files vbridge edited. `apply` first has the running
    /// stack read its files again (it takes down what it made), under the same guard.
    Remove {
        backend: Option<Backend>,
        root: PathBuf,
        apply: bool,
    },
}

impl Mode {
    /// `--netplan`'s mode: the netplan backend.
    pub fn netplan(root: PathBuf, apply: bool) -> Mode {
        Mode::Persist {
            backend: Some(Backend::Netplan),
            root,
            apply,
        }
    }
}

/// Everything `vbridge host-bridge` was asked, parsed and typed.
#[derive(Debug, Clone)]
pub struct Options {
    pub nic: String,
    pub bridge: String,
    pub dhcp: bool,
    pub address: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    /// The MTU the NIC and the bridge get (`--mtu`), live and in every stack's files.
    pub mtu: Option<u32>,
    pub mode: Mode,
    /// The address that must answer after the change (default: the default gateway).
    pub probe: Option<IpAddr>,
    pub rollback_after: Duration,
    /// Leave the change pending and revert it after this long unless confirmed.
    pub confirm_within: Option<Duration>,
    pub dry_run: bool,
    /// The program re-executed as the detached reverter (the vbridge binary).
    pub reverter: PathBuf,
    pub state_dir: PathBuf,
}

impl Options {
    /// The part of the options both ways check against the live host.
    pub(crate) fn request(&self) -> LiveRequest {
        LiveRequest {
            nic: self.nic.clone(),
            bridge: self.bridge.clone(),
            address: self.address,
            gateway: self.gateway,
            mtu: self.mtu,
        }
    }
}

/// The report: `{"bridge","nic","changed","mode","addresses","routes","pending","rolled_back",...}`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bridge: String,
    pub nic: String,
    pub changed: bool,
    pub mode: String,
    pub addresses: Vec<String>,
    pub routes: Vec<String>,
    pub pending: bool,
    pub rolled_back: bool,
    pub steps: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netplan_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    /// The network stacks whose files were written or removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// The files written, edited or removed (or that would be, with `--dry-run`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<PathBuf>,
    /// Where each user file vbridge edited was saved first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<PathBuf>,
    /// With `--dry-run`: the file changes as unified diffs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The detached reverter's pid, when a confirm window is open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverter_pid: Option<u32>,
    /// The systemd unit running the reverter, when systemd started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverter_unit: Option<String>,
    /// Seconds left to confirm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_within: Option<u64>,
    pub apply_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_ms: Option<u64>,
    pub dry_run: bool,
    /// Things the admin should know (what the live way cannot do).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(o: &Options, mode: &str) -> Report {
        Report {
            bridge: o.bridge.clone(),
            nic: o.nic.clone(),
            changed: false,
            mode: mode.into(),
            addresses: vec![],
            routes: vec![],
            pending: false,
            rolled_back: false,
            steps: vec![],
            probe: None,
            netplan_file: None,
            backup: None,
            backends: vec![],
            files: vec![],
            backups: vec![],
            diff: None,
            reverter_pid: None,
            reverter_unit: None,
            confirm_within: None,
            apply_ms: 0,
            rollback_ms: None,
            dry_run: o.dry_run,
            notes: vec![],
        }
    }
}

/// The longest probe wait and confirm window: a day. Longer is a typo, and far longer would
/// overflow the clock arithmetic after the change is made.
pub const MAX_WINDOW_SECS: u64 = 86_400;

/// Checks that need no state: names, windows and the address combination.
pub fn check_options(o: &Options) -> Result<()> {
    for (flag, d) in [
        ("--rollback-after", Some(o.rollback_after)),
        ("--confirm-within", o.confirm_within),
    ] {
        if let Some(d) = d {
            if d.is_zero() || d.as_secs() > MAX_WINDOW_SECS {
                return Err(Error::invalid(format!(
                    "{flag} must be between 1 and {MAX_WINDOW_SECS} seconds"
                )));
            }
        }
    }
    if o.dhcp && o.mode == Mode::Live {
        return Err(Error::invalid(
            "--dhcp cannot be honoured with --live: vbridge runs no DHCP client, so nothing would renew a lease on the bridge",
        )
        .with_hint(
            "use --persist --dhcp --apply (--netplan --dhcp --apply on a netplan host: the network service runs DHCP on the bridge, under the same rollback and --confirm-within guard), or --live without --dhcp to move the current addresses as they are",
        ));
    }
    if let Mode::Remove { root, apply, .. } = &o.mode {
        if o.dhcp || o.address.is_some() || o.gateway.is_some() || !o.dns.is_empty() {
            return Err(Error::invalid(
                "--remove takes no addressing: the NIC gets back what the bridge has",
            ));
        }
        if *apply && root != &PathBuf::from("/") {
            return Err(Error::invalid(
                "--apply works on the running system only, not with --root-dir",
            ));
        }
        crate::validate::interface_name(&o.bridge)?;
        if !o.nic.is_empty() {
            bridge::check_names(&o.nic, &o.bridge)?;
        }
        return Ok(());
    }
    bridge::check_names(&o.nic, &o.bridge)?;
    if o.dhcp && o.address.is_some() {
        return Err(Error::invalid("--dhcp and --address exclude each other"));
    }
    if let Mode::Persist {
        backend,
        root,
        apply,
    } = &o.mode
    {
        if !o.dhcp && o.address.is_none() {
            let who = backend.map_or("the persistent configuration", Backend::name);
            return Err(Error::invalid(format!(
                "{who} needs to know how the bridge gets its address"
            ))
            .with_hint("add --dhcp, or --address CIDR [--gateway IP] [--dns IP,...]"));
        }
        if *apply && root != &PathBuf::from("/") {
            return Err(Error::invalid(
                "--apply works on the running system only, not with --root-dir",
            )
            .with_hint("drop --root-dir to apply, or drop --apply to stage files"));
        }
        if o.confirm_within.is_some() && !apply {
            return Err(
                Error::invalid("--confirm-within needs a change that takes effect now")
                    .with_hint("add --apply, or use --live"),
            );
        }
    }
    crate::validate::same_ip_version(o.gateway, o.address)
}

/// Run `host-bridge`.
pub fn run(o: &Options) -> Result<Report> {
    check_options(o)?;
    match &o.mode {
        Mode::Live => run_live(o, &mut NetlinkNet::open()?),
        Mode::Persist { .. } => run_persist(o, &mut NetlinkNet::open()?),
        Mode::Remove { .. } => run_remove(o, &mut NetlinkNet::open()?),
    }
}

/// The wall-clock time a window ends, for the pending file (the reverter itself sleeps on a
/// monotonic clock).
pub(crate) fn revert_at(window: Duration) -> Result<u64> {
    u64::try_from(window.as_millis())
        .ok()
        .and_then(|w| crate::host::now_ms().checked_add(w))
        .ok_or_else(|| Error::invalid("the confirm window is too long"))
}

/// Write the pending file and start the reverter; undo at once if either fails.
pub(crate) fn leave_pending(
    o: &Options,
    p: &Pending,
    rep: &mut Report,
    window: Duration,
    undo_now: impl FnOnce(&Pending) -> Vec<String>,
) -> Result<()> {
    let started = pending::write(&o.state_dir, p)
        .and_then(|_| pending::spawn_reverter(&o.reverter, &o.state_dir, &p.id, window));
    match started {
        Ok(r) => {
            // Record who reverts, so a later run can tell a stale pending file.
            let mut p = p.clone();
            p.reverter_pid = r.pid;
            p.reverter_unit = r.unit.clone();
            let _ = pending::rewrite(&o.state_dir, &p);
            rep.pending = true;
            rep.reverter_pid = r.pid;
            rep.reverter_unit = r.unit;
            rep.confirm_within = Some(window.as_secs());
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(o.state_dir.join(pending::PENDING_FILE));
            let problems = undo_now(p);
            Err(e
                .context("cannot arm the confirm window")
                .with_hint(if problems.is_empty() {
                    "the change was undone; fix the state directory ($VBRIDGE_STATE_DIR) and retry"
                } else {
                    "undoing the change also failed: check `ip addr` and `ip route` now"
                }))
        }
    }
}

/// `host-bridge --confirm`: keep the pending change. One that stopped part-way is not kept:
/// it is undone now, and that is the error.
pub fn confirm(state_dir: &std::path::Path) -> Result<Pending> {
    if let Some(p) = pending::read(state_dir)?.filter(|p| !p.complete) {
        let rec = pending::claim_and_revert(state_dir, &p.id, &mut NetlinkNet::open()?)?;
        let hint = match rec {
            Some(r) if r.reverted => {
                "the links, addresses and routes are as they were before it: run the command again"
                    .to_string()
            }
            Some(r) => format!(
                "undoing it did not restore everything ({}): check `ip addr` and `ip route`",
                r.problems.join("; ")
            ),
            None => "it was reverted meanwhile by its reverter".to_string(),
        };
        return Err(Error::conflict(format!(
            "the host-bridge change ({} on {}) stopped part-way (the vbridge making it was killed), so it cannot be kept: it was undone",
            p.nic, p.bridge
        ))
        .with_hint(hint));
    }
    pending::confirm(state_dir)
}

/// `host-bridge --remove`: undo the pending change now (one left pending by a confirm window,
/// or one that stopped part-way) and check the network is as it was before.
pub fn remove(state_dir: &std::path::Path) -> Result<pending::RevertRecord> {
    pending::remove(state_dir, &mut NetlinkNet::open()?)
}

/// The detached reverter's body (`host-bridge --revert-pending ID`).
/// `window` is the time left, measured from the reverter's start on the monotonic clock.
pub fn revert_pending(
    state_dir: &std::path::Path,
    id: &str,
    window: Option<Duration>,
) -> Result<Option<pending::RevertRecord>> {
    pending::run_reverter(state_dir, id, window, &mut NetlinkNet::open()?)
}
