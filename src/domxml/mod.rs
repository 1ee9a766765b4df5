//! Lossless reading and editing of libvirt domain XML (pure: no libvirt, no I/O).
//!
//! The document is scanned once with quick-xml into a light tree of byte ranges
//! ([`scan`]); reading takes values from it and editing splices new text into the original
//! string at those ranges, so everything not edited stays byte-identical.

mod dest;
mod facts;
mod options;
mod rewrite;
mod scan;
mod select;
mod wellformed;

pub use options::{
    describe_source, element_by_mac, link_of, live_link, live_move, live_move_to, live_restore,
    nic_of_element, rewrite_nics, with_options, Link, NicOptions, Target,
};

use crate::error::{Error, Result};
use crate::validate::{BridgeName, Mac};
use serde::{Deserialize, Serialize};
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
    /// `<mtu size>`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `<driver queues>`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queues: Option<u32>,
    /// Byte range of the whole element in the document it was read from.
    #[serde(skip)]
    pub span: Range<usize>,
}

impl Nic {
    /// Already what `vbridge attach` would make of it: a virtio NIC on `bridge`.
    pub fn is_on_bridge(&self, bridge: &str) -> bool {
        self.kind == "bridge"
            && self.source.get("bridge").map(String::as_str) == Some(bridge)
            && self.model.as_deref().is_some_and(is_virtio_model)
    }
}

/// A virtio NIC model: plain `virtio`, or the transitional variants chosen for the guest
/// (old guests need `virtio-transitional`), which a rewrite keeps.
pub fn is_virtio_model(model: &str) -> bool {
    matches!(
        model,
        "virtio" | "virtio-transitional" | "virtio-non-transitional"
    )
}

/// Which interfaces to rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The single interface not yet on the bridge; refuse when there are several.
    Auto,
    Mac(Mac),
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
    /// What the rewrite dropped from this NIC and why (a bridge NIC cannot carry it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
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

    /// Every NIC's notes, in document order: what a person should be told.
    pub fn notes(&self) -> Vec<String> {
        self.changes.iter().flat_map(|c| c.notes.clone()).collect()
    }
}

/// Facts about a domain the hotplug preflight and the doctor need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `<vcpu>`: the most vCPUs the VM can have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
}

impl DomainFacts {
    pub fn is_q35(&self) -> bool {
        self.machine.as_deref().is_some_and(|m| m.contains("q35"))
    }
}

/// The interfaces of the domain document.
pub fn nics(xml: &str) -> Result<Vec<Nic>> {
    let root = domain_root(xml)?;
    Ok(nics_of(&root))
}

/// The domain's interfaces, numbered from 1 in document order.
fn nics_of(root: &scan::Element) -> Vec<Nic> {
    numbered(&interfaces(root))
}

/// Interface elements as `Nic`s, numbered from 1 in the order given.
fn numbered(elements: &[&scan::Element]) -> Vec<Nic> {
    elements
        .iter()
        .enumerate()
        .map(|(i, el)| nic_from(el, i + 1))
        .collect()
}

/// The line ending `text` uses (CRLF or LF), if it has a line break at all.
fn eol_of(text: &str) -> Option<&'static str> {
    let p = text.find('\n')?;
    Some(if p > 0 && text.as_bytes()[p - 1] == b'\r' {
        "\r\n"
    } else {
        "\n"
    })
}

/// Rewrite the selected interfaces to virtio NICs on `bridge`, changing nothing else. The
/// bridge name and a selecting MAC come checked (their types), so nothing here re-checks them.
pub fn rewrite_to_bridge(
    xml: &str,
    bridge: &BridgeName,
    selection: &Selection,
) -> Result<Rewritten> {
    rewrite::rewrite_to_bridge(xml, bridge, selection)
}

/// Facts about the domain document.
pub fn facts(xml: &str) -> Result<DomainFacts> {
    facts::facts(&domain_root(xml)?, xml)
}

/// The interfaces and the facts from one parse (the doctor reads many domains).
pub fn nics_and_facts(xml: &str) -> Result<(Vec<Nic>, DomainFacts)> {
    let root = domain_root(xml)?;
    Ok((nics_of(&root), facts::facts(&root, xml)?))
}

/// Parse the document and check that it is a `<domain>`.
fn domain_root(xml: &str) -> Result<scan::Element> {
    let root = scan::parse(xml)?;
    if root.name != "domain" {
        return Err(Error::invalid(format!(
            "the document is a <{}>, not a libvirt <domain>",
            root.name
        ))
        .with_hint("pass the domain XML as `virsh dumpxml --inactive NAME` prints it"));
    }
    Ok(root)
}

/// The `<interface>` elements directly under `/domain/devices`, in document order. An
/// element that redeclares the default namespace belongs to someone else, not libvirt.
fn interfaces(root: &scan::Element) -> Vec<&scan::Element> {
    let foreign = |el: &scan::Element| el.attr("xmlns").is_some();
    if foreign(root) {
        return Vec::new();
    }
    root.children_named("devices")
        .filter(|d| !foreign(d))
        .flat_map(|d| d.children_named("interface"))
        .filter(|el| !foreign(el))
        .collect()
}

fn nic_from(el: &scan::Element, index: usize) -> Nic {
    let child_attr = |child: &str, attr: &str| {
        el.child(child)
            .and_then(|c| c.attr(attr))
            .map(str::to_string)
    };
    Nic {
        index,
        kind: el.attr("type").unwrap_or_default().to_string(),
        mac: child_attr("mac", "address").map(|m| m.to_ascii_lowercase()),
        source: el
            .child("source")
            .map(|s| {
                s.attrs
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        model: child_attr("model", "type"),
        target_dev: child_attr("target", "dev"),
        mtu: child_attr("mtu", "size").and_then(|v| v.trim().parse().ok()),
        queues: child_attr("driver", "queues").and_then(|v| v.trim().parse().ok()),
        span: el.span.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "<domain type='kvm'>\n  <name>web</name>\n  <metadata>\n    <interface type='network'/>\n  </metadata>\n  <devices>\n    <interface type='network'>\n      <mac address='52:54:00:AA:bb:01'/>\n      <source network='default' portgroup='lan'/>\n      <model type='e1000'/>\n      <target dev='vnet3'/>\n    </interface>\n    <x:interface xmlns:x='urn:x' type='user'/>\n    <interface type=\"user\"/>\n  </devices>\n</domain>\n";

    #[test]
    fn nics_reads_devices_interfaces_only() {
        let nics = nics(TWO).unwrap();
        assert_eq!(nics.len(), 2);
        let n = &nics[0];
        assert_eq!(n.index, 1);
        assert_eq!(n.kind, "network");
        assert_eq!(n.mac.as_deref(), Some("52:54:00:aa:bb:01"));
        assert_eq!(n.source.get("network").map(String::as_str), Some("default"));
        assert_eq!(n.source.get("portgroup").map(String::as_str), Some("lan"));
        assert_eq!(n.model.as_deref(), Some("e1000"));
        assert_eq!(n.target_dev.as_deref(), Some("vnet3"));
        assert!(TWO[n.span.clone()].starts_with("<interface type='network'>"));
        assert!(TWO[n.span.clone()].ends_with("</interface>"));
        assert_eq!(&TWO[nics[1].span.clone()], "<interface type=\"user\"/>");
        assert_eq!(nics[1].index, 2);
        assert_eq!(nics[1].mac, None);
    }

    #[test]
    fn nics_refuses_non_domains_and_malformed_xml() {
        let err = nics("<network><name>x</name></network>").unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::InvalidInput);
        assert!(err.message.contains("<network>"), "{}", err.message);
        let err = nics("<domain>\n<devices>\n</domain>").unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::InvalidInput);
        assert!(err.message.contains("line 3"), "{}", err.message);
    }

    #[test]
    fn nics_and_facts_from_one_parse() {
        let (n, f) = nics_and_facts(TWO).unwrap();
        assert_eq!(n, nics(TWO).unwrap());
        assert_eq!(f, facts(TWO).unwrap());
        assert_eq!(n.len(), 2);
    }

    #[test]
    fn line_endings() {
        assert_eq!(eol_of("\n<a/>"), Some("\n"));
        assert_eq!(eol_of("<a/>\r\n"), Some("\r\n"));
        assert_eq!(eol_of("\r\n"), Some("\r\n"));
        assert_eq!(eol_of("<a/>"), None);
    }

    #[test]
    fn on_bridge() {
        let mut n = nics(TWO).unwrap().remove(0);
        assert!(!n.is_on_bridge("br0"));
        n.kind = "bridge".into();
        n.source = [("bridge".to_string(), "br0".to_string())].into();
        n.model = Some("virtio".into());
        assert!(n.is_on_bridge("br0"));
        assert!(!n.is_on_bridge("br1"));
    }
}
