//! `macvtap-host-isolation`: a VM on a macvtap of a host NIC reaches the LAN and the LAN
//! reaches it, but the host itself cannot: the kernel never passes frames between a
//! macvtap and its own lower device. Users read this as "the VM has no network".

use super::finding;
use crate::doctor::{Finding, Observation, Severity};

pub(super) fn macvtap_checks(out: &mut Vec<Finding>, obs: &Observation) {
    for d in &obs.domains {
        for nic in d.nics.iter().filter(|n| n.kind == "direct") {
            let mac = nic.mac.as_deref().unwrap_or("(no MAC)");
            let dev = nic.dev.as_deref().unwrap_or("its host NIC");
            let mode = nic.mode.as_deref().unwrap_or("vepa");
            out.push(finding(
                "macvtap-host-isolation",
                Severity::Info,
                &d.name,
                format!("VM {}'s NIC {mac} is a macvtap on {dev} ({mode} mode): the LAN reaches it, but this host cannot (the kernel never passes frames between a macvtap and its own lower device), so ping, ssh or verify from the host fail while the VM is fine", d.name),
                format!("reach the VM from another machine; or give the host its own macvlan on {dev} in bridge mode and move the host's address to it; or put the VM on a bridge instead (`vbridge attach {} --mac {mac}`)", d.name),
                None,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::*;
    use crate::doctor::{check, Severity};

    #[test]
    fn a_macvtap_nic_says_the_host_cannot_reach_it() {
        let mut o = healthy();
        let nic = &mut o.domains[1].nics[0];
        nic.kind = "direct".into();
        nic.bridge = None;
        nic.dev = Some("enp3s0".into());
        nic.mode = Some("bridge".into());
        let f = check(&o);
        let m = f.iter().find(|x| x.id == "macvtap-host-isolation").unwrap();
        assert_eq!((m.severity, m.subject.as_str()), (Severity::Info, "db"));
        assert!(
            m.message.contains("macvtap on enp3s0 (bridge mode)"),
            "{}",
            m.message
        );
        assert!(
            !f.iter().any(|x| x.id == "vm-nat-only"),
            "a macvtap NIC is on the LAN"
        );
    }
}
