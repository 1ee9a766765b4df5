//! Lossless reading and editing of libvirt domain XML (pure: no libvirt, no I/O).
//!
//! CONTRACT (the rest of the crate relies on these names; the bodies are being written).

use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::Range;

/// One `<interface>` of `/domain/devices`, as read from the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// 1-based position among the domain's interfaces, in document order.
    pub index: usize,
    /// The `type` attribute (`network`, `bridge`, `user`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// `<mac address>`, lower-cased.
    pub mac: Option<String>,
    /// The attributes of `<source>` (`bridge`, `network`, `dev`, `mode`, `portgroup`, ...).
    pub source: BTreeMap<String, String>,
    /// `<model type>`.
    pub model: Option<String>,
    /// `<target dev>`.
    pub target_dev: Option<String>,
    /// Byte range of the whole element in the document it was read from.
    #[serde(skip)]
    pub span: Range<usize>,
}

impl Nic {
    /// Already what `vbridge attach` would make of it: a virtio NIC on `bridge`.
    pub fn is_on_bridge(&self, bridge: &str) -> bool {
        self.kind == "bridge"
            && self.source.get("bridge").map(String::as_str) == Some(bridge)
            && self.model.as_deref() == Some("virtio")
    }
}

/// Which interfaces to rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The single interface not yet on the bridge; refuse when there are several.
    Auto,
    Mac(String),
    /// 1-based.
    Index(usize),
    All,
}

/// What happened to one selected interface.
#[derive(Debug, Clone, Serialize)]
pub struct NicChange {
    pub index: usize,
    pub mac: Option<String>,
    pub changed: bool,
    pub before: Nic,
    pub after: Nic,
}

/// A rewritten document and what changed in it.
#[derive(Debug, Clone)]
pub struct Rewritten {
    pub xml: String,
    pub changes: Vec<NicChange>,
}

impl Rewritten {
    pub fn changed(&self) -> bool {
        self.changes.iter().any(|c| c.changed)
    }
}

/// Facts about a domain the hotplug preflight and the doctor need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DomainFacts {
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// `<domain type>` (kvm, qemu, test, ...).
    pub hypervisor: Option<String>,
    /// `<os><type machine>` as written (pc, pc-i440fx-7.2, q35, pc-q35-7.2, ...).
    pub machine: Option<String>,
    pub arch: Option<String>,
    /// `<features><acpi/>` present.
    pub acpi: bool,
    /// Number of `<controller type='pci' model='pcie-root-port'>`.
    pub pcie_root_ports: usize,
    /// Root ports no device address uses as its bus.
    pub free_pcie_root_ports: usize,
}

impl DomainFacts {
    pub fn is_q35(&self) -> bool {
        self.machine.as_deref().is_some_and(|m| m.contains("q35"))
    }
}

/// The interfaces of the domain document.
pub fn nics(_xml: &str) -> Result<Vec<Nic>> {
    Err(Error::unsupported("domxml::nics is not written yet"))
}

/// Rewrite the selected interfaces to virtio NICs on `bridge`, changing nothing else.
pub fn rewrite_to_bridge(_xml: &str, _bridge: &str, _selection: &Selection) -> Result<Rewritten> {
    Err(Error::unsupported(
        "domxml::rewrite_to_bridge is not written yet",
    ))
}

/// Facts about the domain document.
pub fn facts(_xml: &str) -> Result<DomainFacts> {
    Err(Error::unsupported("domxml::facts is not written yet"))
}
