//! `vbridge doctor`.

use super::{CmdResult, Globals};
use crate::error::Error;
use clap::Args;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// VMs to check (default: all)
    pub domains: Vec<String>,
    /// Apply the safe, reversible fixes
    #[arg(long)]
    pub fix: bool,
    /// With --fix: also make the fixes survive a reboot
    #[arg(long, requires = "fix")]
    pub persist: bool,
}

pub fn run(_args: &DoctorArgs, _g: &Globals) -> CmdResult {
    Err(Error::unsupported(
        "doctor is not available in this build yet",
    ))
}
