//! `vbridge verify`.

use super::{CmdResult, Globals};
use crate::error::Error;
use clap::Args;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The running VM
    pub domain: String,
    /// Seconds to wait for an address
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Only this NIC
    #[arg(long)]
    pub mac: Option<String>,
}

pub fn run(_args: &VerifyArgs, _g: &Globals) -> CmdResult {
    Err(Error::unsupported(
        "verify is not available in this build yet",
    ))
}
