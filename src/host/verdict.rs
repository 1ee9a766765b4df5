//! What a firewall chain does to the frames crossing a bridge: the verdict model the iptables
//! reader (`firewall.rs`) and the nftables reader (`nft.rs`) share, so neither imports the
//! other's rules.

/// What happens to a frame crossing a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Drop,
    /// The chain could not be read.
    Unknown,
}

/// The verdict of one chain (FORWARD with what it jumps to, or one nft base chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// What decided it: `policy DROP`, or the rule (`-A FORWARD -j DROP`).
    pub by: String,
    /// Rules before it whose effect on the frames could not be decided (conditional
    /// matches, chains not followed, queues): for a drop, ones that may accept some of the
    /// frames; for an accept, ones that may drop some.
    pub doubts: Vec<String>,
}

/// Whether `dev` (an iptables interface match, `+` a wildcard suffix) names `bridge`.
pub(crate) fn iface_matches(dev: &str, bridge: &str, wildcard: char) -> bool {
    dev == bridge
        || dev
            .strip_suffix(wildcard)
            .is_some_and(|p| bridge.starts_with(p))
}

/// Whether a rule matches the frames crossing a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applies {
    All,
    None,
    /// Some of them perhaps: the first match that was not evaluated.
    Some,
}
