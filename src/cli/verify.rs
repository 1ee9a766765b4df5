//! `vbridge verify`.

use super::output::Text;
use super::{report, CmdResult, Globals};
use clap::Args;
use std::time::Duration;
use vbridge::libvirt::Conn;
use vbridge::verify::{self, VerifyOptions, VerifyReport};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The running VM
    pub domain: String,
    /// Seconds to wait for an address (0 to 86400)
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    pub timeout: f64,
    /// Only this NIC
    #[arg(long)]
    pub mac: Option<String>,
}

/// A timeout in seconds: a usage error (exit 2) unless it is a number from 0 to 86400.
pub(super) fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t.is_finite() && (0.0..=86_400.0).contains(&t) => Ok(t),
        _ => Err(format!("{s:?}: give a number of seconds from 0 to 86400")),
    }
}

pub fn run(a: &VerifyArgs, g: &Globals) -> CmdResult {
    let conn = Conn::open(g.connect.as_deref())?;
    let opts = VerifyOptions {
        timeout: Duration::from_secs_f64(a.timeout),
        mac: a.mac.clone(),
        progress: g.progress.clone(),
    };
    let r = verify::verify(&conn, &a.domain, &opts)?;
    Ok(report(r, render, VerifyReport::ok))
}

/// `52:54:00:..  vnet0 on br0  10.77.3.101 (neighbour)  answers`, or the reason; a NIC on a
/// libvirt NAT network's bridge is marked `(not on the LAN)`. The verdict is the report, on
/// stdout even when it is FAILED (exit 1), as doctor's findings are.
fn render(r: &VerifyReport, g: &Globals, t: &mut Text) {
    let out = &mut t.out;
    out.push_str(&format!(
        "{}: {}\n",
        r.domain,
        if r.ok() {
            "every bridged NIC answers"
        } else {
            "FAILED"
        }
    ));
    for i in &r.interfaces {
        let tap = i.tap.as_deref().unwrap_or("(no TAP)");
        let ips = if i.ips.is_empty() {
            "no address".to_string()
        } else {
            let src = i.source.map(|s| format!(" ({})", s.as_str()));
            format!("{}{}", i.ips.join(", "), src.unwrap_or_default())
        };
        let verdict = if i.reachable { "answers" } else { "FAILS" };
        // A NAT network's bridge (virbr0): the address answers the host, not the LAN.
        let lan = if i.lan { "" } else { " (not on the LAN)" };
        out.push_str(&format!(
            "  {}  {tap} on {}{lan}  {ips}  {verdict}\n",
            i.mac, i.bridge
        ));
        if let Some(why) = &i.reason {
            out.push_str(&format!("    {why}\n"));
        }
    }
    if g.verbose {
        out.push_str(&format!("  ({:.2} s)\n", r.elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Format;
    use vbridge::verify::{InterfaceReport, Source};

    fn globals() -> Globals {
        Globals {
            output: Format::Text,
            ..Globals::default()
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
                    lan: true,
                    tap: Some("vnet0".into()),
                    ips: vec!["10.77.3.101".into()],
                    source: Some(Source::Neighbour),
                    reachable: true,
                    reason: None,
                },
                InterfaceReport {
                    mac: "52:54:00:00:00:02".into(),
                    bridge: "virbr0".into(),
                    lan: false,
                    tap: Some("vnet1".into()),
                    ips: vec![],
                    source: None,
                    reachable: false,
                    reason: Some("TAP vnet1 is not on virbr0".into()),
                },
            ],
            elapsed: 0.5,
        };
        let mut text = Text::plain();
        render(&r, &globals(), &mut text);
        assert_eq!(text.err, "");
        let t = text.out;
        assert!(t.starts_with("web: FAILED\n"), "{t}");
        // JSON carries the same verdict, derived from the interfaces.
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["ok"], false);
        assert_eq!(j["interfaces"][0]["reachable"], true);
        assert!(
            t.contains("  52:54:00:00:00:01  vnet0 on br0  10.77.3.101 (neighbour)  answers\n"),
            "{t}"
        );
        assert!(
            t.contains("  52:54:00:00:00:02  vnet1 on virbr0 (not on the LAN)  no address  FAILS\n    TAP vnet1 is not on virbr0\n"),
            "{t}"
        );
    }

    #[test]
    fn bad_timeouts_are_usage_errors() {
        for t in ["NaN", "-1", "inf", "1e300", "soon"] {
            assert!(seconds(t).is_err(), "{t} accepted");
        }
        assert_eq!(seconds("2.5"), Ok(2.5));
        assert_eq!(seconds("0"), Ok(0.0));
    }
}
