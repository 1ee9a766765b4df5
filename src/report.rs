//! The report of a command that changes domains (attach, hotplug, detach, undo, and the
//! plans of later commands): per domain, what changed on which NIC, its backup and notes.
//! Shared by those commands so none of them imports another.

use crate::domxml::{self, Nic};
use crate::error::Error;
use serde::Serialize;
use std::path::PathBuf;

/// One NIC in a report: how it was and how it is (or would be).
#[derive(Debug, Clone, Serialize)]
pub struct NicResult {
    pub mac: Option<String>,
    pub changed: bool,
    pub before: Option<Nic>,
    pub after: Option<Nic>,
}

impl From<domxml::NicChange> for NicResult {
    fn from(c: domxml::NicChange) -> NicResult {
        NicResult {
            mac: c.mac,
            changed: c.changed,
            before: Some(c.before),
            after: Some(c.after),
        }
    }
}

/// What became of one domain, in one word a script can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The change was made (with `--dry-run`: would be made).
    Changed,
    /// Nothing needed changing.
    Unchanged,
    /// Nothing was changed: `error` says why.
    Failed,
    /// The call that makes the change was sent and its reply lost (the connection to
    /// libvirtd broke): the change may or may not be in place. The backup is kept, so
    /// `vbridge undo` can restore the old definition either way: check, then rerun or undo.
    Unknown,
}

/// The outcome for one domain.
#[derive(Debug, Clone, Serialize)]
pub struct DomainResult {
    pub domain: String,
    pub outcome: Outcome,
    pub changed: bool,
    pub interfaces: Vec<NicResult>,
    /// Set when this domain failed; other domains in the same call still ran.
    pub error: Option<Error>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    /// Things the admin should know (a running VM needs a power-off, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// With --dry-run: the unified diff of the persistent XML.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// With `attach --live`: what happened to the running VM's NICs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveReport>,
}

/// A running NIC moved (or, dry run, to be moved) by `attach --live`.
#[derive(Debug, Clone, Serialize)]
pub struct LiveMove {
    pub mac: String,
    /// Where it was: "network default", "bridge virbr0".
    pub from: String,
    /// Where it went: "bridge br0".
    pub to: String,
}

/// The running VM's side of `attach --live`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveReport {
    /// The running NICs moved, each from where to where.
    pub moved: Vec<LiveMove>,
    /// How long each moved NIC's link was held down (0: no flap).
    pub flap_ms: u64,
    /// The LAN address that answered on each moved NIC, when verified.
    pub verified: Vec<VerifiedNic>,
    /// Nothing answered in time, so the moves and the definition were put back.
    pub reverted: bool,
    /// Seconds from the first change to the verdict (the move, flap and verification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// A moved NIC and the LAN address that answered on it.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedNic {
    pub mac: String,
    pub ip: String,
}

impl DomainResult {
    /// A domain that did (or would) change as `interfaces` say; no backup, notes or diff yet.
    pub fn new(domain: &str, changed: bool, interfaces: Vec<NicResult>) -> DomainResult {
        DomainResult {
            domain: domain.to_string(),
            outcome: if changed {
                Outcome::Changed
            } else {
                Outcome::Unchanged
            },
            changed,
            interfaces,
            error: None,
            backup: None,
            notes: Vec::new(),
            diff: None,
            live: None,
        }
    }

    /// A domain that failed; other domains in the same call still ran.
    pub fn failed(domain: &str, error: Error) -> DomainResult {
        DomainResult {
            outcome: Outcome::Failed,
            error: Some(error),
            ..DomainResult::new(domain, false, Vec::new())
        }
    }

    /// A domain whose change was sent but whose reply was lost: `backup` (kept) holds the
    /// definition it replaced, if it replaced one.
    pub fn unknown(domain: &str, error: Error, backup: Option<PathBuf>) -> DomainResult {
        DomainResult {
            outcome: Outcome::Unknown,
            error: Some(error),
            backup,
            ..DomainResult::new(domain, false, Vec::new())
        }
    }
}

/// The outcome of one `attach`, `detach` or `undo` call over one or more domains.
#[derive(Debug, Clone, Serialize)]
pub struct AttachReport {
    pub dry_run: bool,
    pub domains: Vec<DomainResult>,
}

impl AttachReport {
    pub fn ok(&self) -> bool {
        self.domains.iter().all(|d| d.error.is_none())
    }
}
