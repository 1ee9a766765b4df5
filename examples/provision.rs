//! Using vbridge as a library from provisioning code: one connection, the bridge network
//! defined, then every VM named on the command line put on the bridge; the report is printed
//! as JSON for the calling script.
//!
//! `cargo run --example provision -- [URI] VM...`
//! (URI defaults to the project's test-driver homelab, so it runs anywhere.)

use vbridge::attach::{self, AttachOptions};
use vbridge::backup::StateDir;
use vbridge::domxml::Selection;
use vbridge::libvirt::Conn;
use vbridge::network::{self, NetDefine};
use vbridge::validate::BridgeName;

fn main() -> anyhow::Result<()> {
    vbridge::libvirt::init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let uri = match args.first() {
        Some(a) if a.contains(":/") => args.remove(0),
        _ => format!("test://{}/examples/homelab.xml", env!("CARGO_MANIFEST_DIR")),
    };
    if args.is_empty() {
        args = vec!["web".into(), "db".into()];
    }
    let conn = Conn::open(Some(&uri))?;
    let net = network::define(&conn, &NetDefine::default(), false)?;
    // Where `vbridge undo` looks too: $VBRIDGE_STATE_DIR, or /var/lib/vbridge.
    let state = StateDir::from_env();
    let opts = AttachOptions {
        bridge: BridgeName::parse(&net.bridge)?,
        selection: Selection::All,
        dry_run: false,
        // A transient VM is refused rather than made persistent.
        persist: false,
        // No progress line: this program prints one JSON document.
        progress: Default::default(),
    };
    let report = attach::attach(&conn, &args, &opts, &state)?;
    println!(
        "{}",
        serde_json::json!({ "network": net, "attach": report })
    );
    if !report.ok() {
        std::process::exit(1);
    }
    Ok(())
}
