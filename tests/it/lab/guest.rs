//! Lab guests: the domain XML for the tiny kernel + initramfs guest, and reading its serial
//! console (a file) for the markers its /init prints (`LEASE ip=...`, `DHCP-FAIL`).

use std::fmt::Write as _;
use std::path::Path;
use vbridge::xml::escape;

/// One NIC of a guest.
#[derive(Clone, Debug)]
pub enum Nic {
    /// `<interface type='bridge'><source bridge='B'/>` with a virtio model.
    Bridge { bridge: String, mac: Option<String> },
    /// `<interface type='network'><source network='N'/>` with a virtio model.
    Network {
        network: String,
        mac: Option<String>,
    },
    /// An `<interface>` element written by the test, placed verbatim.
    Xml(String),
}

impl Nic {
    pub fn bridge(bridge: &str) -> Nic {
        Nic::Bridge {
            bridge: bridge.into(),
            mac: None,
        }
    }

    pub fn network(network: &str) -> Nic {
        Nic::Network {
            network: network.into(),
            mac: None,
        }
    }

    fn xml(&self) -> String {
        let (kind, attr, source, mac) = match self {
            Nic::Bridge { bridge, mac } => ("bridge", "bridge", bridge, mac),
            Nic::Network { network, mac } => ("network", "network", network, mac),
            Nic::Xml(x) => return x.clone(),
        };
        let mut s = format!(
            "    <interface type='{kind}'>\n      <source {attr}='{}'/>\n",
            escape(source)
        );
        if let Some(m) = mac {
            let _ = writeln!(s, "      <mac address='{}'/>", escape(m));
        }
        s.push_str("      <model type='virtio'/>\n    </interface>\n");
        s
    }
}

/// What to define. `name` is a short label; the lab makes the domain name unique.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    pub name: String,
    pub nics: Vec<Nic>,
    /// `<features><acpi/>`: without it i440fx refuses PCI hotplug.
    pub acpi: bool,
    /// Start the domain after defining it.
    pub running: bool,
    /// Machine type; "pc" (i440fx) is what the measurements used.
    pub machine: String,
    /// vCPUs (`<vcpu>`); a multiqueue NIC uses at most one queue pair per vCPU.
    pub vcpus: u32,
    /// How the guest's /init asks DHCP (the kernel command line tells it).
    pub dhcp: Dhcp,
    /// `vb.ping=IP,SIZE`: after each lease the guest pings IP once with SIZE data bytes and
    /// prints `PING-OK` or `PING-FAIL` on its console.
    pub ping: Option<(String, u32)>,
}

/// When the lab guest asks DHCP for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dhcp {
    /// Every ~2 s, and at once when a NIC appears: it follows any move on its own.
    Poll,
    /// Only when a NIC's link comes up (at boot, then on each carrier 0 -> 1), like
    /// NetworkManager, systemd-networkd or dhclient: a move without a link flap goes unseen.
    LinkUp,
}

impl GuestSpec {
    /// The extra words of the kernel command line that carry the guest's options.
    fn cmdline(&self) -> String {
        let mut s = String::new();
        if self.dhcp == Dhcp::LinkUp {
            s.push_str(" vb.dhcp=linkup");
        }
        if let Some((ip, size)) = &self.ping {
            let _ = write!(s, " vb.ping={ip},{size}");
        }
        s
    }
}

impl GuestSpec {
    /// A running guest with ACPI on machine "pc" and the given NICs.
    pub fn new(name: &str, nics: Vec<Nic>) -> GuestSpec {
        GuestSpec {
            name: name.into(),
            nics,
            acpi: true,
            running: true,
            machine: "pc".into(),
            vcpus: 1,
            dhcp: Dhcp::Poll,
            ping: None,
        }
    }
}

/// `qemu` (TCG) when KVM is missing or is the PVM flavour a stock kernel never boots under.
pub fn domain_type() -> &'static str {
    if Path::new("/sys/module/kvm_pvm").exists() || !Path::new("/dev/kvm").exists() {
        "qemu"
    } else {
        "kvm"
    }
}

/// The domain XML of a lab guest.
pub fn domain_xml(
    spec: &GuestSpec,
    name: &str,
    kernel: &Path,
    initrd: &Path,
    console: &Path,
    dtype: &str,
) -> String {
    let features = if spec.acpi {
        "<acpi/><apic/>"
    } else {
        "<apic/>"
    };
    let mut nics = String::new();
    for n in &spec.nics {
        nics.push_str(&n.xml());
    }
    format!(
        "<domain type='{dtype}'>
  <name>{name}</name>
  <memory unit='MiB'>160</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='{machine}'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet{cmdline}</cmdline>
  </os>
  <features>{features}</features>
  <devices>
{nics}    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
",
        name = escape(name),
        vcpus = spec.vcpus,
        cmdline = escape(&spec.cmdline()),
        machine = escape(&spec.machine),
        kernel = escape(&kernel.display().to_string()),
        initrd = escape(&initrd.display().to_string()),
        console = escape(&console.display().to_string()),
    )
}

/// The first `marker` at or after byte `from` of `text` that is followed by a complete
/// word: returns that word (e.g. the IP after `LEASE ip=`) and the offset just past it.
pub fn find_marker(text: &str, marker: &str, from: usize) -> Option<(String, usize)> {
    let from = from.min(text.len());
    let hay = text.get(from..)?;
    let at = hay.find(marker)? + from + marker.len();
    let rest = &text[at..];
    // Only a word ended by whitespace is complete: the console may be mid-line.
    let end = rest.find(char::is_whitespace)?;
    Some((rest[..end].to_string(), at + end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_word_and_offset() {
        let t = "boot\nLEASE ip=10.77.1.100 dev=eth0\nLEASE ip=10.77.1.101 dev=eth1\n";
        let (ip, end) = find_marker(t, "LEASE ip=", 0).unwrap();
        assert_eq!(ip, "10.77.1.100");
        let (ip2, _) = find_marker(t, "LEASE ip=", end).unwrap();
        assert_eq!(ip2, "10.77.1.101");
        assert_eq!(find_marker("LEASE ip=10.7", "LEASE ip=", 0), None);
    }

    #[test]
    fn xml_escapes_and_nics() {
        let mut spec = GuestSpec::new("g", vec![Nic::bridge("br'0"), Nic::network("n&1")]);
        spec.acpi = false;
        let x = domain_xml(
            &spec,
            "g<1>",
            Path::new("/k"),
            Path::new("/i"),
            Path::new("/c"),
            "qemu",
        );
        assert!(x.contains("<name>g&lt;1&gt;</name>"));
        assert!(x.contains("<source bridge='br&apos;0'/>"));
        assert!(x.contains("<source network='n&amp;1'/>"));
        assert!(x.contains("<features><apic/></features>"));
        assert!(x.contains("<memballoon model='none'/>"));
        assert!(x.contains("<vcpu>1</vcpu>"));
        assert!(
            x.contains("<cmdline>console=ttyS0 panic=-1 quiet</cmdline>"),
            "{x}"
        );
        spec.vcpus = 2;
        spec.dhcp = Dhcp::LinkUp;
        spec.ping = Some(("10.77.3.1".into(), 8972));
        let x = domain_xml(
            &spec,
            "g",
            Path::new("/k"),
            Path::new("/i"),
            Path::new("/c"),
            "qemu",
        );
        assert!(x.contains("<vcpu>2</vcpu>"));
        assert!(
            x.contains("quiet vb.dhcp=linkup vb.ping=10.77.3.1,8972</cmdline>"),
            "{x}"
        );
    }
}
