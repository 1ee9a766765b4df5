//! `vbridge verify`.

use super::{report, CmdResult, Globals};
use crate::error::Error;
use crate::libvirt::Conn;
use crate::verify::{self, VerifyOptions, VerifyReport};
use clap::Args;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The running VM
    pub domain: String,
    /// Seconds to wait for an address
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Only this NIC
    #[arg(long)]
    pub mac: Option<String>,
}

pub fn run(a: &VerifyArgs, g: &Globals) -> CmdResult {
    if !a.timeout.is_finite() || a.timeout < 0.0 || a.timeout > 86_400.0 {
        return Err(Error::invalid(format!(
            "--timeout {}: give a number of seconds from 0 to 86400",
            a.timeout
        )));
    }
    let conn = Conn::open(g.connect.as_deref())?;
    let opts = VerifyOptions {
        timeout: Duration::from_secs_f64(a.timeout),
        mac: a.mac.clone(),
    };
    let r = verify::verify(&conn, &a.domain, &opts)?;
    Ok(report(r, render, VerifyReport::ok))
}

/// `52:54:00:..  vnet0 on br0  10.77.3.101 (neighbour)  answers`, or the reason.
fn render(r: &VerifyReport, g: &Globals) -> String {
    let mut out = format!(
        "{}: {}\n",
        r.domain,
        if r.ok {
            "every bridged NIC answers"
        } else {
            "FAILED"
        }
    );
    for i in &r.interfaces {
        let tap = i.tap.as_deref().unwrap_or("(no TAP)");
        let ips = if i.ips.is_empty() {
            "no address".to_string()
        } else {
            let src = i.source.map(|s| format!(" ({})", s.as_str()));
            format!("{}{}", i.ips.join(", "), src.unwrap_or_default())
        };
        let verdict = if i.reachable { "answers" } else { "FAILS" };
        out.push_str(&format!(
            "  {}  {tap} on {}  {ips}  {verdict}\n",
            i.mac, i.bridge
        ));
        if let Some(why) = &i.reason {
            out.push_str(&format!("    {why}\n"));
        }
    }
    if g.verbose {
        out.push_str(&format!("  ({:.2} s)\n", r.elapsed));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Format;
    use crate::verify::{InterfaceReport, Source};

    fn globals() -> Globals {
        Globals {
            connect: None,
            output: Format::Text,
            dry_run: false,
            quiet: false,
            verbose: false,
        }
    }

    #[test]
    fn text_shows_each_nic_and_its_reason() {
        let r = VerifyReport {
            domain: "web".into(),
            interfaces: vec![
                InterfaceReport {
                    mac: "52:54:00:00:00:01".into(),
                    bridge: "br0".into(),
                    tap: Some("vnet0".into()),
                    ips: vec!["10.77.3.101".into()],
                    source: Some(Source::Neighbour),
                    reachable: true,
                    reason: None,
                },
                InterfaceReport {
                    mac: "52:54:00:00:00:02".into(),
                    bridge: "br0".into(),
                    tap: Some("vnet1".into()),
                    ips: vec![],
                    source: None,
                    reachable: false,
                    reason: Some("TAP vnet1 is not on br0".into()),
                },
            ],
            ok: false,
            elapsed: 0.5,
        };
        let t = render(&r, &globals());
        assert!(t.starts_with("web: FAILED\n"), "{t}");
        assert!(
            t.contains("  52:54:00:00:00:01  vnet0 on br0  10.77.3.101 (neighbour)  answers\n"),
            "{t}"
        );
        assert!(
            t.contains("  52:54:00:00:00:02  vnet1 on br0  no address  FAILS\n    TAP vnet1 is not on br0\n"),
            "{t}"
        );
    }

    #[test]
    fn bad_timeouts_are_refused_before_connecting() {
        for t in [f64::NAN, -1.0, f64::INFINITY] {
            let a = VerifyArgs {
                domain: "web".into(),
                timeout: t,
                mac: None,
            };
            let e = run(&a, &globals()).err().expect("refused");
            assert_eq!(e.kind, crate::error::ErrorKind::InvalidInput);
        }
    }
}
