//! `vbridge doctor`.

use super::output::{Text, Tone};
use super::{report, CmdResult, Globals};
use clap::Args;
use std::fmt::Write as _;
use vbridge::doctor::{self, Report, Severity};
use vbridge::libvirt::Conn;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// VMs to check (default: all)
    pub domains: Vec<String>,
    /// Apply the safe, reversible fixes
    #[arg(long)]
    pub fix: bool,
    /// With --fix: also make the fixes survive a reboot
    #[arg(long, requires = "fix")]
    pub persist: bool,
}

pub fn run(args: &DoctorArgs, g: &Globals) -> CmdResult {
    let conn = Conn::open(g.connect.as_deref())?;
    let opts = doctor::Options {
        domains: args.domains.clone(),
        fix: args.fix,
        persist: args.persist,
        dry_run: g.dry_run,
        sysctl_dir: None,
        modules_load_dir: None,
    };
    let r = doctor::run(&conn, &opts)?;
    Ok(report(r, render, Report::ok))
}

/// A hop's mark, coloured by what it says on a terminal.
fn mark(t: &Text, m: &str) -> String {
    match m {
        "ok" => t.tone(Tone::Good, "ok"),
        "fail" => t.tone(Tone::Bad, "FAIL"),
        "warn" => t.tone(Tone::Warn, "warn"),
        "off" => "off".to_string(),
        _ => "?".to_string(),
    }
}

/// Findings are the report (stdout), whatever their severity; a fix that could not be made
/// is an error of the run (stderr, under the same heading).
fn render(r: &Report, g: &Globals, t: &mut Text) {
    let mut s = String::new();
    if !r.paths.is_empty() {
        s.push_str("Paths (NIC -> tap -> bridge -> uplink -> LAN):\n");
        for p in &r.paths {
            let hops: Vec<String> = p
                .hops
                .iter()
                .map(|h| {
                    let name = match h.kind {
                        "nic" => format!("NIC {}", h.name),
                        "tap" => format!("tap {}", h.name),
                        _ => h.name.clone(),
                    };
                    format!("{name} {}", mark(t, h.mark))
                })
                .collect();
            let mac = p.mac.as_deref().unwrap_or("-");
            let _ = writeln!(s, "  {} {mac}: {}", p.domain, hops.join(" -> "));
        }
        s.push('\n');
    }
    let shown: Vec<_> = r
        .findings
        .iter()
        .filter(|f| !g.quiet || f.severity == Severity::Error)
        .collect();
    if shown.is_empty() {
        s.push_str("No problem found.\n");
    } else {
        s.push_str("Findings:\n");
        for f in shown {
            let sev = match f.severity {
                Severity::Error => t.tone(Tone::Bad, "ERROR"),
                Severity::Warning => t.tone(Tone::Warn, "warning"),
                Severity::Info => t.tone(Tone::Info, "info"),
            };
            let _ = writeln!(s, "  {sev} {} [{}]: {}", f.id, f.subject, f.message);
            let _ = writeln!(s, "      fix: {}", f.fix);
        }
    }
    if !r.fixed.is_empty() {
        let heading = if r.dry_run {
            "Would change (dry run)"
        } else {
            "Changed"
        };
        let _ = writeln!(s, "\n{heading}:");
        let mut err_heading = false;
        for f in &r.fixed {
            let state = match (&f.error, f.done) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, true) => "done".to_string(),
                (None, false) if r.dry_run => "would do".to_string(),
                (None, false) => "not done".to_string(),
            };
            let to = if f.error.is_some() {
                if !std::mem::replace(&mut err_heading, true) {
                    let _ = writeln!(t.err, "{heading}:");
                }
                &mut t.err
            } else {
                &mut s
            };
            let _ = writeln!(to, "  {} ({}): {state}", f.change, f.ids.join(", "));
            for p in &f.persisted {
                let _ = writeln!(to, "      wrote {}: {}", p.path, p.why);
            }
            if let Some(h) = &f.persist_hint {
                if g.verbose || !f.done || f.persisted.is_empty() {
                    let _ = writeln!(to, "      {h}");
                }
            }
        }
    }
    let count = |sev| r.findings.iter().filter(|f| f.severity == sev).count();
    let _ = writeln!(
        s,
        "\n{} error(s), {} warning(s), {} info ({:.1} ms){}",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info),
        r.elapsed_ms,
        if r.fixed.is_empty() || r.dry_run {
            ""
        } else {
            ", after the fixes"
        }
    );
    t.out.push_str(&s);
}

#[cfg(test)]
mod tests {
    //! Golden text reports: tests/data/doctor/*.txt, rewritten with `VBRIDGE_BLESS=1`.

    use super::*;
    use vbridge::doctor::{check, paths, plan, Observation};

    fn globals() -> Globals {
        Globals {
            dry_run: true,
            ..Globals::default()
        }
    }

    fn golden(name: &str, obs: &Observation, fix: bool) {
        let findings = check(obs);
        let fixed = if fix { plan(&findings) } else { Vec::new() };
        let r = Report {
            uri: obs.uri.clone(),
            paths: paths(obs, &findings),
            findings,
            fixed,
            host_skipped: obs.host_skipped.clone(),
            dry_run: true,
            elapsed_ms: 0.0,
        };
        let mut t = Text::plain();
        render(&r, &globals(), &mut t);
        assert_eq!(t.err, "", "a dry run fails no fix");
        let text = t.out;
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/doctor")
            .join(format!("{name}.txt"));
        crate::golden::assert_golden(&p, &text);
    }

    fn healthy() -> Observation {
        serde_json::from_str(include_str!("../../tests/data/doctor/healthy.json")).unwrap()
    }

    #[test]
    fn golden_reports() {
        golden("healthy", &healthy(), false);
        let mut o = healthy();
        let host = o.host.as_mut().unwrap();
        host.interfaces.get_mut("vnet0").unwrap().master = None;
        host.interfaces.get_mut("enp3s0").unwrap().ipv4 = vec!["192.168.1.20/24".into()];
        host.firewall.as_mut().unwrap().forward_policy = Some("DROP".into());
        o.networks[0].autostart = false;
        golden("faults-dry-run-fix", &o, true);
        // The uplink gone from br0 under a running VM: an error (its way to the LAN).
        let mut o = healthy();
        let host = o.host.as_mut().unwrap();
        host.interfaces.get_mut("enp3s0").unwrap().master = None;
        golden("no-uplink-running-vm", &o, true);
    }

    /// A fix that failed is an error of the run: stderr, under the heading it had; the
    /// findings and the fixes that worked stay the report on stdout. On a terminal the
    /// severities and marks are coloured, and only they: the words stay the same.
    #[test]
    fn a_failed_fix_goes_to_stderr_and_severities_take_colour() {
        let mut o = healthy();
        let host = o.host.as_mut().unwrap();
        host.interfaces.get_mut("vnet0").unwrap().master = None;
        o.networks[0].autostart = false;
        let findings = check(&o);
        let mut fixed = plan(&findings);
        assert!(fixed.len() >= 2, "{fixed:#?}");
        fixed[0].error = Some(vbridge::error::Error::new(
            vbridge::error::ErrorKind::Host,
            "RTNETLINK answers: Operation not permitted",
        ));
        fixed[1].done = true;
        let r = Report {
            uri: o.uri.clone(),
            paths: paths(&o, &findings),
            findings,
            fixed,
            host_skipped: None,
            dry_run: false,
            elapsed_ms: 0.0,
        };
        let g = Globals::default();
        let mut t = Text::plain();
        render(&r, &g, &mut t);
        let failed = format!(
            "  {} ({}): FAILED: RTNETLINK answers: Operation not permitted\n",
            r.fixed[0].change,
            r.fixed[0].ids.join(", ")
        );
        assert!(
            t.err.starts_with(&format!("Changed:\n{failed}")),
            "{}",
            t.err
        );
        assert!(!t.out.contains("FAILED"), "{}", t.out);
        assert!(t.out.contains("\nChanged:\n"), "{}", t.out);
        assert!(
            t.out.contains(&format!("  {} (", r.fixed[1].change)),
            "{}",
            t.out
        );
        assert!(t.out.contains("  ERROR tap-detached"), "{}", t.out);

        let mut c = Text::new(true, true);
        render(&r, &g, &mut c);
        assert!(
            c.out.contains("\x1b[1m\x1b[31mERROR\x1b[0m tap-detached"),
            "{}",
            c.out
        );
        assert!(c.out.contains("\x1b[32mok\x1b[0m"), "{}", c.out);
        assert!(c.out.contains("\x1b[1m\x1b[31mFAIL\x1b[0m"), "{}", c.out);
        assert_eq!(c.err, t.err, "the failed fix's line has no colour to lose");
    }

    /// Names a shell would split or expand: every suggested command quotes them, so a paste
    /// runs exactly it (a shell reads each command of the --fix plan back into its words).
    #[test]
    fn golden_quoted_names() {
        let mut o = healthy();
        let weird_net = "it's $x";
        o.networks[0].name = weird_net.into();
        o.networks[0].active = false;
        o.networks[0].autostart = false;
        o.domains[0].name = "web server ü".into();
        o.domains[0].nics[0].network = Some(weird_net.into());
        o.domains[0].nics[0].model = Some("e1000".into());
        o.domains[1].name = "$x".into();
        o.domains[1].nics[0].kind = "network".into();
        o.domains[1].nics[0].network = Some("gone `now`".into());
        o.domains[1].nics[0].bridge = None;
        let host = o.host.as_mut().unwrap();
        host.interfaces.get_mut("vnet0").unwrap().master = None;
        golden("quoted-names", &o, true);

        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/doctor/quoted-names.txt"),
        )
        .unwrap();
        for cmd in [
            "vbridge attach 'web server ü' --mac 52:54:00:00:00:01",
            "vbridge attach '$x'",
            "virsh net-autostart 'it'\\''s $x'",
            "vbridge net-define --name 'gone `now`' --bridge BR",
        ] {
            assert!(text.contains(&format!("`{cmd}`")), "no `{cmd}` in\n{text}");
        }
        for f in plan(&check(&o)) {
            let line = format!("printf '%s\\0' {}", f.change);
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&line)
                .output()
                .unwrap();
            let words: Vec<String> = String::from_utf8(out.stdout)
                .unwrap()
                .split_terminator('\0')
                .map(str::to_string)
                .collect();
            if f.change.starts_with("virsh") {
                assert_eq!(words.last().map(String::as_str), Some(weird_net), "{line}");
            }
        }
    }

    /// virbr0 belongs to the NAT network `default`: its fixes name that network, never
    /// netplan or `vbridge host-bridge NIC --bridge virbr0`.
    #[test]
    fn golden_libvirt_owned_bridge() {
        let mut o = healthy();
        // db's NIC and a bridge-mode network both put VMs on virbr0 as if it were the LAN.
        o.domains[1].nics[0].bridge = Some("virbr0".into());
        o.networks.push(vbridge::doctor::NetworkObs {
            name: "lan".into(),
            forward_mode: Some("bridge".into()),
            bridge: Some("virbr0".into()),
            active: true,
            autostart: true,
            persistent: true,
        });
        golden("libvirt-owned-bridge", &o, true);
        let findings = check(&o);
        let on_virbr0: Vec<_> = findings.iter().filter(|f| f.subject == "virbr0").collect();
        assert!(
            on_virbr0.iter().any(|f| f.id == "bridge-owned-by-network"
                && f.message.contains("network default (forward mode nat)")),
            "{on_virbr0:#?}"
        );
        let stp = on_virbr0
            .iter()
            .find(|f| f.id == "stp-forward-delay")
            .expect("STP on virbr0");
        assert!(
            stp.fix.contains("virsh net-edit default") && stp.fix.contains("stp='off'"),
            "{}",
            stp.fix
        );
        for f in &on_virbr0 {
            assert!(
                !f.fix.contains("netplan") && !f.fix.contains("--bridge virbr0"),
                "{f:#?}"
            );
        }
        assert!(!findings
            .iter()
            .any(|f| f.id == "bridge-no-uplink" && f.subject == "virbr0"));
    }

    /// libvirt without its network driver: one finding, and the domain and host checks
    /// still run (the detached tap is found); no network is called missing.
    #[test]
    fn golden_network_driver_unavailable() {
        let mut o = healthy();
        o.networks.clear();
        o.network_driver_unavailable = Some(
            "libvirt's network driver is not available (virConnectListAllNetworks is not supported by this connection)".into(),
        );
        o.domains[0].nics[0].kind = "bridge".into();
        o.domains[0].nics[0].network = None;
        o.domains[1].nics[0].kind = "network".into();
        o.domains[1].nics[0].network = Some("default".into());
        let host = o.host.as_mut().unwrap();
        host.interfaces.get_mut("vnet0").unwrap().master = None;
        golden("network-driver-unavailable", &o, true);
        let findings = check(&o);
        let ids: Vec<_> = findings.iter().map(|f| f.id).collect();
        assert!(ids.contains(&"network-driver-unavailable"), "{ids:?}");
        assert!(ids.contains(&"tap-detached"), "{ids:?}");
        assert!(!ids.contains(&"network-missing"), "{ids:?}");
    }
}
