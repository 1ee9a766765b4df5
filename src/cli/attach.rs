//! `vbridge attach`, `vbridge detach`, `vbridge undo`.

use super::{CmdResult, Globals};
use crate::error::Error;
use clap::{ArgGroup, Args};
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("select").args(["mac", "index", "all"])))]
pub struct AttachArgs {
    /// The VMs (names or UUIDs)
    #[arg(required_unless_present = "xml", conflicts_with = "xml")]
    pub domains: Vec<String>,
    /// Host bridge
    #[arg(long, default_value = "br0")]
    pub bridge: String,
    /// Select the NIC by MAC (with --hotplug: the new NIC's MAC)
    #[arg(long)]
    pub mac: Option<String>,
    /// Select the NIC by position, 1-based
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub index: Option<u32>,
    /// Rewrite every NIC
    #[arg(long)]
    pub all: bool,
    /// Add a new virtio NIC on the bridge to the running VM and its config
    #[arg(long, conflicts_with_all = ["index", "all", "xml"])]
    pub hotplug: bool,
    /// Rewrite this domain XML document (or - for stdin) and print it; no libvirt needed
    #[arg(long, value_name = "FILE")]
    pub xml: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// The VM
    pub domain: String,
    /// MAC of the NIC to remove
    #[arg(long)]
    pub mac: String,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The VM
    pub domain: String,
}

pub fn attach(_a: &AttachArgs, _g: &Globals) -> CmdResult {
    Err(Error::unsupported("not yet"))
}

pub fn detach(_a: &DetachArgs, _g: &Globals) -> CmdResult {
    Err(Error::unsupported("not yet"))
}

pub fn undo(_a: &UndoArgs, _g: &Globals) -> CmdResult {
    Err(Error::unsupported("not yet"))
}
