//! Facts about a domain that the hotplug preflight and the doctor need (machine, ACPI,
//! free PCIe root ports).

use super::scan::Element;
use super::DomainFacts;
use crate::error::{Error, Result};
use std::collections::BTreeSet;

pub(super) fn facts(root: &Element, doc: &str) -> Result<DomainFacts> {
    let os_type = root.child("os").and_then(|os| os.child("type"));
    let mut facts = DomainFacts {
        name: root.child("name").map(|e| e.text(doc)),
        uuid: root.child("uuid").map(|e| e.text(doc)),
        hypervisor: root.attr("type").map(str::to_string),
        machine: os_type.and_then(|t| t.attr("machine")).map(str::to_string),
        arch: os_type.and_then(|t| t.attr("arch")).map(str::to_string),
        acpi: root
            .child("features")
            .is_some_and(|f| f.child("acpi").is_some()),
        vcpus: root.child("vcpu").and_then(|v| v.text(doc).parse().ok()),
        ..DomainFacts::default()
    };

    // A root port is taken when any PCI address (of a device or of another controller,
    // such as a switch's upstream port) names the port's index as its bus.
    let mut ports = Vec::new();
    let mut used_buses = BTreeSet::new();
    for devices in root.children_named("devices") {
        for dev in &devices.children {
            if dev.name == "controller"
                && dev.attr("type") == Some("pci")
                && dev.attr("model") == Some("pcie-root-port")
            {
                ports.push(dev.attr("index").and_then(parse_number));
            }
        }
        devices.walk(&mut |el| {
            if el.name == "address" && el.attr("type") == Some("pci") {
                if let Some(bus) = el.attr("bus").and_then(parse_number) {
                    used_buses.insert(bus);
                }
            }
        });
    }
    facts.pcie_root_ports = ports.len();
    facts.free_pcie_root_ports = ports
        .iter()
        .filter(|index| index.is_some_and(|i| !used_buses.contains(&i)))
        .count();
    Ok(facts)
}

/// libvirt writes bus and index numbers in hex (`0x01`) or decimal (`1`).
fn parse_number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl DomainFacts {
    /// Why a running VM cannot take a hot-plugged PCI NIC, if it cannot. Pure.
    pub fn hotplug_blocker(&self) -> Option<Error> {
        let f = self;
        let is_x86_qemu = matches!(f.hypervisor.as_deref(), Some("kvm" | "qemu"))
            && f.arch
                .as_deref()
                .is_none_or(|a| a == "x86_64" || a == "i686");
        if !is_x86_qemu {
            return None;
        }
        let name = f.name.as_deref().unwrap_or("the VM");
        if f.is_q35() {
            if f.free_pcie_root_ports == 0 {
                return Some(
                    Error::unsupported(format!(
                        "{name} is a q35 machine with no free pcie-root-port ({} in use): a hot-plugged NIC has nowhere to go",
                        f.pcie_root_ports
                    ))
                    .with_hint("add a spare <controller type='pci' model='pcie-root-port'/> and power-cycle the VM, or attach while it is shut off"),
                );
            }
        } else if !f.acpi {
            return Some(
                Error::unsupported(format!(
                    "{name} is an i440fx machine without <acpi/>: QEMU cannot hot-plug a NIC into it (\"Bus 'pci.0' does not support hotplugging\")"
                ))
                .with_hint("add <acpi/> under <features> and power-cycle the VM, or shut it off and run the same command (the NIC is then added to its config)"),
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts;
    use super::super::DomainFacts;
    use super::parse_number;

    const Q35: &str = r#"<domain type='kvm'>
  <name>web&amp;db</name>
  <uuid>0d6e3f4c-1111-2222-3333-444455556666</uuid>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <features><acpi/><apic/></features>
  <devices>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='pcie-root-port'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </controller>
    <controller type='pci' index='2' model='pcie-root-port'/>
    <controller type='pci' index='3' model='pcie-root-port'/>
    <controller type='pci' index='10' model='pcie-root-port'/>
    <controller type='pci' index='4' model='pcie-switch-upstream-port'>
      <address type='pci' bus='3' slot='0'/>
    </controller>
    <interface type='network'>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <disk><address type='drive' bus='0x02'/></disk>
  </devices>
</domain>"#;

    #[test]
    fn q35_facts() {
        let f = facts(Q35).unwrap();
        assert_eq!(f.name.as_deref(), Some("web&db"));
        assert_eq!(
            f.uuid.as_deref(),
            Some("0d6e3f4c-1111-2222-3333-444455556666")
        );
        assert_eq!(f.hypervisor.as_deref(), Some("kvm"));
        assert_eq!(f.machine.as_deref(), Some("pc-q35-7.2"));
        assert_eq!(f.arch.as_deref(), Some("x86_64"));
        assert!(f.acpi);
        assert!(f.is_q35());
        assert_eq!(f.pcie_root_ports, 4);
        // 1 holds the NIC, 3 the switch; the disk's drive address is not PCI.
        assert_eq!(f.free_pcie_root_ports, 2);
    }

    /// Free ports are the ports no device's bus names, not the used ones: with three free
    /// and one used, counting the used would say 1 (the hotplug preflight relies on this).
    #[test]
    fn free_root_ports_are_counted_not_used_ones() {
        let one_used = Q35
            .replace("bus='3' slot='0'", "bus='0' slot='9'")
            .replace("bus='0x01' slot='0x00'", "bus='0x0a' slot='0x00'");
        let f = facts(&one_used).unwrap();
        assert_eq!((f.pcie_root_ports, f.free_pcie_root_ports), (4, 3));
        // Ports 1, 2, 3 and 10 all in use: none free.
        let all_used = one_used.replace(
            "<disk>",
            "<x><address type='pci' bus='0x01'/></x><y><address type='pci' bus='2'/></y><z><address type='pci' bus='0x03'/></z><disk>",
        );
        let f = facts(&all_used).unwrap();
        assert_eq!((f.pcie_root_ports, f.free_pcie_root_ports), (4, 0));
    }

    #[test]
    fn minimal_facts() {
        let f = facts("<domain><name>x</name></domain>").unwrap();
        assert_eq!(f.name.as_deref(), Some("x"));
        assert!(!f.acpi);
        assert_eq!(f.pcie_root_ports, 0);
        assert!(!f.is_q35());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0x0a"), Some(10));
        assert_eq!(parse_number("10"), Some(10));
        assert_eq!(parse_number("zz"), None);
    }

    #[test]
    fn blockers() {
        let base = DomainFacts {
            name: Some("vm".into()),
            hypervisor: Some("kvm".into()),
            machine: Some("pc-i440fx-7.2".into()),
            arch: Some("x86_64".into()),
            acpi: true,
            ..DomainFacts::default()
        };
        assert!(base.hotplug_blocker().is_none());
        // The i440fx/ACPI rule is x86's: i686 too, not aarch64 (its own rules).
        for (arch, blocked) in [("i686", true), ("aarch64", false), ("x86_64", true)] {
            let f = DomainFacts {
                acpi: false,
                arch: Some(arch.into()),
                ..base.clone()
            };
            assert_eq!(f.hotplug_blocker().is_some(), blocked, "{arch}");
        }
        let no_acpi = DomainFacts {
            acpi: false,
            ..base.clone()
        };
        assert!(no_acpi
            .hotplug_blocker()
            .unwrap()
            .message
            .contains("without <acpi/>"));
        let q35 = DomainFacts {
            machine: Some("pc-q35-7.2".into()),
            pcie_root_ports: 4,
            free_pcie_root_ports: 0,
            ..base.clone()
        };
        assert!(q35
            .hotplug_blocker()
            .unwrap()
            .message
            .contains("pcie-root-port"));
        let q35_free = DomainFacts {
            free_pcie_root_ports: 1,
            ..q35
        };
        assert!(q35_free.hotplug_blocker().is_none());
        let test = DomainFacts {
            hypervisor: Some("test".into()),
            acpi: false,
            ..base
        };
        assert!(test.hotplug_blocker().is_none());
    }
}
