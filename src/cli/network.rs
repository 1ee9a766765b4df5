//! `vbridge net-define` and `vbridge net-undefine`.

use super::{CmdResult, Globals};
use crate::error::Error;
use clap::Args;

#[derive(Debug, Args)]
pub struct NetDefineArgs {
    /// Name of the libvirt network
    #[arg(long, default_value = "br0-network")]
    pub name: String,
    /// Host bridge the network uses
    #[arg(long, default_value = "br0")]
    pub bridge: String,
    /// Do not start the network
    #[arg(long)]
    pub no_start: bool,
    /// Do not mark the network autostart
    #[arg(long)]
    pub no_autostart: bool,
    /// Redefine a network of that name that differs
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct NetUndefineArgs {
    /// Name of the libvirt network
    #[arg(long, default_value = "br0-network")]
    pub name: String,
}

pub fn define(_a: &NetDefineArgs, _g: &Globals) -> CmdResult {
    Err(Error::unsupported("not yet"))
}

pub fn undefine(_a: &NetUndefineArgs, _g: &Globals) -> CmdResult {
    Err(Error::unsupported("not yet"))
}
