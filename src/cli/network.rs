//! `vbridge net-define` and `vbridge net-undefine`.

use super::output::Text;
use super::{report, CmdResult, Globals};
use clap::Args;
use vbridge::libvirt::Conn;
use vbridge::network::{self, Action, NetDefine, NetReport};

#[derive(Debug, Args)]
pub struct NetDefineArgs {
    /// Name of the libvirt network
    #[arg(long, default_value = "br0-network")]
    pub name: String,
    /// Host bridge the network uses
    #[arg(long, default_value = "br0")]
    pub bridge: String,
    /// Do not start the network
    #[arg(long)]
    pub no_start: bool,
    /// Do not mark the network autostart
    #[arg(long)]
    pub no_autostart: bool,
    /// Redefine a network of that name that differs
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct NetUndefineArgs {
    /// Name of the libvirt network
    #[arg(long, default_value = "br0-network")]
    pub name: String,
}

pub fn define(a: &NetDefineArgs, g: &Globals) -> CmdResult {
    let conn = Conn::open(g.connect.as_deref())?;
    let want = NetDefine {
        name: a.name.clone(),
        bridge: a.bridge.clone(),
        start: !a.no_start,
        autostart: !a.no_autostart,
        force: a.force,
    };
    let r = network::define(&conn, &want, g.dry_run)?;
    Ok(report(r, render, |_| true))
}

pub fn undefine(a: &NetUndefineArgs, g: &Globals) -> CmdResult {
    let conn = Conn::open(g.connect.as_deref())?;
    let r = network::undefine(&conn, &a.name, g.dry_run)?;
    Ok(report(r, render, |_| true))
}

fn verb(a: &Action) -> &'static str {
    match a {
        Action::Stop => "stopped",
        Action::Define => "defined",
        Action::Redefine => "redefined",
        Action::Start => "started",
        Action::Autostart => "set to autostart",
        Action::Undefine => "undefined",
    }
}

/// The network's state and its warnings: a report, all on stdout (its errors end the
/// command before there is a report).
fn render(r: &NetReport, g: &Globals, t: &mut Text) {
    let out = &mut t.out;
    let what = if r.bridge.is_empty() {
        format!("network {}", r.name)
    } else {
        format!("network {} (bridge {})", r.name, r.bridge)
    };
    if r.actions.is_empty() {
        out.push_str(&format!("{what}: unchanged"));
    } else {
        let done: Vec<&str> = r.actions.iter().map(verb).collect();
        let prefix = if r.dry_run { "would be " } else { "" };
        out.push_str(&format!("{what}: {prefix}{}", done.join(", ")));
    }
    if !r.dry_run && r.persistent {
        out.push_str(&format!(
            " [{}, {}]",
            if r.active { "active" } else { "inactive" },
            if r.autostart {
                "autostart"
            } else {
                "no autostart"
            }
        ));
    }
    out.push('\n');
    for w in &r.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    if let Some(xml) = &r.xml {
        if g.dry_run || g.verbose {
            out.push_str(xml);
        }
    }
}
