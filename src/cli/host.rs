//! `vbridge host-bridge` and `vbridge tap`.

use super::{CmdResult, Globals};
use crate::error::Error;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct HostBridgeArgs {
    /// The NIC to put on the bridge (e.g. enp3s0)
    #[arg(required_unless_present = "confirm")]
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
    /// Seconds to wait for the probe before rolling back
    #[arg(long, value_name = "S", default_value_t = 5)]
    pub rollback_after: u64,
    /// Revert by itself after S seconds unless `vbridge host-bridge --confirm` is run
    #[arg(long, value_name = "S")]
    pub confirm_within: Option<u64>,
    /// Keep a pending change made with --confirm-within
    #[arg(long)]
    pub confirm: bool,
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
    /// Delete a TAP device
    Del { name: String },
}

pub fn host_bridge(_args: &HostBridgeArgs, _g: &Globals) -> CmdResult {
    Err(Error::unsupported(
        "host-bridge is not available in this build yet",
    ))
}

pub fn tap(_cmd: &TapCommand, _g: &Globals) -> CmdResult {
    Err(Error::unsupported("tap is not available in this build yet"))
}
