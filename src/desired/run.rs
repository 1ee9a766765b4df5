//! `plan` and `apply` over every host of a desired-state file: hosts in parallel (bounded),
//! one connection each; a host that cannot be reached fails alone and the others go on.

use super::diff::{self, HostPlan};

use super::{apply, observe, Desired, Host};
use crate::backup::StateDir;
use crate::error::{Error, Result};
use crate::fanout;
use crate::libvirt::Conn;
use crate::progress::Sink;
use serde::Serialize;

/// One host's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// The URI from the file (or `-c`), `null` for libvirt's default.
    pub uri: Option<String>,
    /// Changes pending (plan) or made (apply).
    pub changes: usize,
    pub ok: bool,
    /// Why nothing could be done on this host (unreachable, unreadable).
    pub error: Option<Error>,
    #[serde(flatten)]
    pub plan: Option<HostPlan>,
}

/// The outcome of `plan` or `apply` over the file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `plan` or `apply`.
    pub command: &'static str,
    /// Changes pending (plan) or made (apply), over all hosts.
    pub changes: usize,
    pub ok: bool,
    pub hosts: Vec<HostReport>,
}

impl Report {
    fn new(command: &'static str, hosts: Vec<HostReport>) -> Report {
        Report {
            command,
            changes: hosts.iter().map(|h| h.changes).sum(),
            ok: hosts.iter().all(|h| h.ok),
            hosts,
        }
    }
}

/// Observe one host and compute its plan. Changes nothing.
pub fn plan_host(conn: &Conn, want: &Host) -> Result<HostPlan> {
    let seen = observe::observe(conn, want)?;
    Ok(diff::diff(want, &seen, &apply::derived_mac))
}

/// Plan, then carry the plan out on one host; returns what was done.
pub fn apply_host(conn: &Conn, want: &Host, state: &StateDir) -> Result<HostPlan> {
    apply_host_told(conn, want, state, &Sink::default())
}

/// [`apply_host`], telling `progress` as each VM is finished.
fn apply_host_told(
    conn: &Conn,
    want: &Host,
    state: &StateDir,
    progress: &Sink,
) -> Result<HostPlan> {
    let mut plan = plan_host(conn, want)?;
    apply::apply(conn, &mut plan, state, progress);
    // Only what was carried out counts as changed.
    for n in &mut plan.networks {
        if n.error.is_some() {
            n.actions.clear();
        }
    }
    Ok(plan)
}

fn host_report(uri: Option<String>, r: Result<HostPlan>) -> HostReport {
    match r {
        Ok(plan) => HostReport {
            uri,
            changes: plan.changes(),
            ok: plan.ok(),
            error: None,
            plan: Some(plan),
        },
        Err(e) => HostReport {
            uri,
            changes: 0,
            ok: false,
            error: Some(e),
            plan: None,
        },
    }
}

/// `f` on each host; a host that fails as a whole counts its VMs as finished for `progress`.
fn each_host(
    desired: &Desired,
    default_uri: Option<&str>,
    progress: &Sink,
    f: impl Fn(&Conn, &Host) -> Result<HostPlan> + Sync,
) -> Vec<HostReport> {
    fanout::parallel(fanout::HOSTS_AT_ONCE, desired.hosts.iter().collect(), |h| {
        let uri = h.uri.clone().or_else(|| default_uri.map(str::to_string));
        let r = Conn::open(uri.as_deref()).and_then(|c| f(&c, h));
        if r.is_err() {
            h.vms.keys().for_each(|vm| progress.done(vm));
        }
        host_report(uri, r)
    })
}

/// `vbridge plan FILE`: what apply would change, per host and VM.
pub fn plan(desired: &Desired, default_uri: Option<&str>) -> Report {
    Report::new(
        "plan",
        each_host(desired, default_uri, &Sink::default(), plan_host),
    )
}

/// `vbridge apply FILE`: carry the plan out, per host and VM; `progress` counts the VMs of
/// every host as they are finished.
pub fn apply(
    desired: &Desired,
    default_uri: Option<&str>,
    state: &StateDir,
    progress: &Sink,
) -> Report {
    progress.begin("applying", desired.hosts.iter().map(|h| h.vms.len()).sum());
    Report::new(
        "apply",
        each_host(desired, default_uri, progress, |c, h| {
            apply_host_told(c, h, state, progress)
        }),
    )
}
