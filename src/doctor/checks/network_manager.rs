//! NetworkManager and libvirt's TAPs: when NetworkManager runs and its configuration does
//! not leave `vnet*`/`tap*` unmanaged, it may take a VM's tap over (off its bridge, or with
//! an address of its own) when the VM starts or NetworkManager restarts.

use super::{finding, Action, Finding, Severity};
use crate::doctor::HostState;
use crate::host::backends::nm;
use std::path::Path;

pub(super) fn network_manager_checks(out: &mut Vec<Finding>, host: &HostState) {
    let Some(obs) = &host.network_manager else {
        return;
    };
    if obs.taps_unmanaged {
        return;
    }
    let conf = nm::unmanaged_taps_file(Path::new(&obs.conf_dir))
        .display()
        .to_string();
    out.push(finding(
        "nm-manages-taps",
        Severity::Warning,
        "NetworkManager",
        format!(
            "NetworkManager runs and {}/NetworkManager.conf and conf.d do not leave libvirt's TAP devices (vnet*, tap*) unmanaged: it can take a VM's tap off its bridge",
            obs.conf_dir
        ),
        format!(
            "vbridge doctor --fix writes {} ([keyfile] unmanaged-devices+=interface-name:vnet*;interface-name:tap*), then runs `nmcli general reload conf`",
            crate::shell::quote(&conf)
        ),
        Some(Action::NmUnmanageTaps { conf }),
    ));
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::fixture::*;
    use crate::doctor::{Action, NetworkManagerObs, Observation, Severity};

    /// tests/data/doctor/nm-manages-taps.json: the healthy host with NetworkManager running
    /// and no unmanaged-devices setting.
    fn recorded() -> Observation {
        serde_json::from_str(include_str!(
            "../../../tests/data/doctor/nm-manages-taps.json"
        ))
        .unwrap()
    }

    #[test]
    fn nm_managing_taps_is_a_warning_with_a_fix() {
        let f = check(&recorded());
        let nm: Vec<_> = f.iter().filter(|f| f.id == "nm-manages-taps").collect();
        assert_eq!(nm.len(), 1, "{f:?}");
        assert_eq!(nm[0].severity, Severity::Warning);
        assert!(
            nm[0].fix.contains("90-vbridge-unmanaged-taps.conf"),
            "{}",
            nm[0].fix
        );
        assert_eq!(
            nm[0].action,
            Some(Action::NmUnmanageTaps {
                conf: "/etc/NetworkManager/conf.d/90-vbridge-unmanaged-taps.conf".into()
            })
        );
        // The rest of the host is the healthy one: nothing else is found.
        let mut plain = recorded();
        host(&mut plain).network_manager = None;
        assert_eq!(check(&plain), check(&healthy()));
    }

    #[test]
    fn no_finding_when_taps_are_unmanaged_or_nm_is_not_running() {
        let mut o = healthy();
        assert!(host(&mut o).network_manager.is_none(), "old fixtures load");
        assert!(!check(&o).iter().any(|f| f.id == "nm-manages-taps"));
        host(&mut o).network_manager = Some(NetworkManagerObs {
            conf_dir: "/etc/NetworkManager".into(),
            taps_unmanaged: true,
        });
        assert!(!check(&o).iter().any(|f| f.id == "nm-manages-taps"));
    }
}
