//! Where a rewrite puts NICs: a host bridge or a libvirt network, and when a NIC is there
//! already. Shared by the rewrite, the selection and the NIC options.

use super::Nic;

/// Where rewritten NICs go: the `type` they get and the `<source>` attribute that names
/// the place. A libvirt network is a bridge behind a name, so both share every rule of the
/// rewrite (what goes, what stays, the layout); only the type and the source differ.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dest<'a> {
    pub(super) kind: &'static str,
    pub(super) attr: &'static str,
    pub(super) name: &'a str,
}

impl<'a> Dest<'a> {
    pub(super) fn bridge(name: &'a str) -> Dest<'a> {
        Dest {
            kind: "bridge",
            attr: "bridge",
            name,
        }
    }

    pub(super) fn network(name: &'a str) -> Dest<'a> {
        Dest {
            kind: "network",
            attr: "network",
            name,
        }
    }

    /// Already a virtio NIC there.
    pub(super) fn holds(&self, nic: &Nic) -> bool {
        nic.kind == self.kind
            && nic.source.get(self.attr).map(String::as_str) == Some(self.name)
            && nic.model.as_deref().is_some_and(super::is_virtio_model)
    }

    /// The place in messages: a bridge by its name (as ever), a network as "network NAME".
    pub(super) fn label(&self) -> String {
        if self.kind == "bridge" {
            self.name.to_string()
        } else {
            format!("{} {}", self.kind, self.name)
        }
    }
}
