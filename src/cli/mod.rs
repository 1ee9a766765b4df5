//! The command line: argument parsing (pure), dispatch to the library, rendering of reports
//! as text or JSON, and exit codes. The only layer that prints: in text mode the report on
//! stdout and every error on stderr (`output`), a progress line on a terminal's stderr
//! (`progress`); in JSON mode one document on stdout and nothing else.

mod attach;
mod docs;
mod doctor;
mod host;
mod network;
mod output;
mod plan;
mod progress;
mod verify;

use clap::{Args, Parser, Subcommand, ValueEnum};
use output::{ColorChoice, Text};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use vbridge::error::Error;

/// Exit codes, in one place.
pub mod exit {
    /// Success, whether or not anything changed.
    pub const OK: u8 = 0;
    /// The command ran and failed (an error, a failed check, any VM that failed).
    pub const FAILURE: u8 = 1;
    /// The command line was malformed.
    pub const USAGE: u8 = 2;
    /// `plan --detailed-exitcode`: the plan has changes to apply.
    pub const CHANGES_PENDING: u8 = 3;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Globals {
    /// libvirt URI (default: libvirt's own default, which honours LIBVIRT_DEFAULT_URI)
    #[arg(short = 'c', long = "connect", global = true, value_name = "URI")]
    pub connect: Option<String>,
    /// Output format
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Show what would change and change nothing
    #[arg(short = 'n', long = "dry-run", global = true)]
    pub dry_run: bool,
    /// Print only errors
    #[arg(short = 'q', long = "quiet", global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail
    #[arg(short = 'v', long = "verbose", global = true)]
    pub verbose: bool,
    /// Colour diffs and severities: auto (a terminal, unless NO_COLOR is set), always, never
    #[arg(long = "color", global = true, value_enum, value_name = "WHEN",
          default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Not an option: where the library reports progress (the progress line, or nobody).
    #[arg(skip)]
    pub progress: vbridge::progress::Sink,
}

impl Default for Globals {
    /// The defaults of the command line: text, no flags, libvirt's default URI.
    fn default() -> Globals {
        Globals {
            connect: None,
            output: Format::Text,
            dry_run: false,
            quiet: false,
            verbose: false,
            color: ColorChoice::Auto,
            progress: Default::default(),
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "vbridge",
    version,
    about = "Put KVM virtual machines on the real LAN through a host bridge",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Define, start and autostart a libvirt network with <forward mode='bridge'/>
    NetDefine(network::NetDefineArgs),
    /// Stop and undefine that network
    NetUndefine(network::NetUndefineArgs),
    /// Put a VM's NIC on the bridge (persistent XML), or hot-plug a new one
    Attach(attach::AttachArgs),
    /// Remove a NIC by MAC (live and persistent)
    Detach(attach::DetachArgs),
    /// Define a VM's latest backup again
    Undo(attach::UndoArgs),
    /// Check that a running VM's bridged NICs have LAN addresses that answer
    Verify(verify::VerifyArgs),
    /// Find the broken link between a VM and the LAN, and fix it
    Doctor(doctor::DoctorArgs),
    /// Create the host bridge on a NIC (netplan, or live with rollback)
    HostBridge(host::HostBridgeArgs),
    /// Persistent TAP devices on a bridge
    #[command(subcommand)]
    Tap(host::TapCommand),
    /// Show what apply would change to make a desired-state file true
    Plan(plan::PlanArgs),
    /// Make a desired-state file true on each of its hosts
    Apply(plan::ApplyArgs),
    /// Print a shell completion script (bash, zsh, fish)
    Completions(docs::CompletionsArgs),
    /// Write the man pages (vbridge.1, vbridge-COMMAND.1) into a directory
    #[command(hide = true)]
    Man(docs::ManArgs),
}

/// A command's result, renderable as text or JSON.
pub trait Report {
    fn json(&self) -> serde_json::Value;
    /// The text rendering, into its two streams: the report, and the errors in it (a VM of
    /// several that failed, a host that could not be reached).
    fn text(&self, globals: &Globals, t: &mut Text);
    /// False turns the exit code into FAILURE (a VM that failed, a check that failed).
    fn success(&self) -> bool {
        true
    }
    /// The text is the command's product (a rewritten document), not a message: `-q` keeps it.
    fn is_data(&self) -> bool {
        false
    }
    /// An exit code other than OK/FAILURE (`plan --detailed-exitcode`).
    fn exit_code(&self) -> Option<u8> {
        None
    }
    /// What a person should know beside data on stdout: printed to stderr in text mode.
    fn notes(&self) -> &[String] {
        &[]
    }
}

/// A report whose text rendering is data for a pipe (`attach --xml`), and its notes.
pub struct Data<T: Serialize>(pub Rendered<T>, pub Vec<String>);

impl<T: Serialize> Report for Data<T> {
    fn json(&self) -> serde_json::Value {
        self.0.json()
    }
    fn text(&self, globals: &Globals, t: &mut Text) {
        self.0.text(globals, t)
    }
    fn success(&self) -> bool {
        self.0.success()
    }
    fn is_data(&self) -> bool {
        true
    }
    fn notes(&self) -> &[String] {
        &self.1
    }
}

/// Wrap a serialisable value and a text renderer into a `Report`.
pub struct Rendered<T: Serialize> {
    pub value: T,
    pub render: fn(&T, &Globals, &mut Text),
    pub success: fn(&T) -> bool,
}

impl<T: Serialize> Report for Rendered<T> {
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(&self.value).unwrap_or_else(
            |e| serde_json::json!({"error": {"kind": "internal", "message": e.to_string()}}),
        )
    }
    fn text(&self, globals: &Globals, t: &mut Text) {
        (self.render)(&self.value, globals, t)
    }
    fn success(&self) -> bool {
        (self.success)(&self.value)
    }
}

pub fn report<T: Serialize + 'static>(
    value: T,
    render: fn(&T, &Globals, &mut Text),
    success: fn(&T) -> bool,
) -> Box<dyn Report> {
    Box::new(Rendered {
        value,
        render,
        success,
    })
}

pub type CmdResult = Result<Box<dyn Report>, Error>;

fn dispatch(cli: &Cli) -> CmdResult {
    let g = &cli.globals;
    match &cli.command {
        Command::NetDefine(a) => network::define(a, g),
        Command::NetUndefine(a) => network::undefine(a, g),
        Command::Attach(a) => attach::attach(a, g),
        Command::Detach(a) => attach::detach(a, g),
        Command::Undo(a) => attach::undo(a, g),
        Command::Verify(a) => verify::run(a, g),
        Command::Doctor(a) => doctor::run(a, g),
        Command::HostBridge(a) => host::host_bridge(a, g),
        Command::Tap(a) => host::tap(a, g),
        Command::Plan(a) => plan::plan(a, g),
        Command::Apply(a) => plan::apply(a, g),
        Command::Completions(a) => docs::completions(a, g),
        Command::Man(a) => docs::man(a, g),
    }
}

/// Did the raw command line ask for JSON? Used only to render usage errors as JSON.
fn wants_json(args: &[std::ffi::OsString]) -> bool {
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    args.windows(2)
        .any(|w| (w[0] == "-o" || w[0] == "--output") && w[1] == "json")
        || args
            .iter()
            .any(|a| *a == "--output=json" || *a == "-ojson" || *a == "-o=json")
}

/// The raw command line's `--color WHEN`, the last one given, for clap's own help and usage
/// errors, which are written before the parsed flag exists.
fn color_asked(args: &[std::ffi::OsString]) -> Option<ColorChoice> {
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    let mut asked = None;
    for (i, a) in args.iter().enumerate() {
        let value = match a.strip_prefix("--color") {
            Some("") => args.get(i + 1).copied(),
            Some(v) => v.strip_prefix('='),
            None => None,
        };
        if let Some(c) = value.and_then(|v| ColorChoice::from_str(v, false).ok()) {
            asked = Some(c);
        }
    }
    asked
}

/// Print a rendered report: stdout first (flushed, so a terminal shows the two in order),
/// then the errors on stderr. `-q` drops the report unless it failed or is data.
fn print_text(t: &Text, keep_out: bool) {
    if keep_out && !t.out.is_empty() {
        let mut out = std::io::stdout().lock();
        // Renderers end their own lines: `attach --xml` must print the document as is.
        let _ = write!(out, "{}", t.out);
        let _ = out.flush();
    }
    if !t.err.is_empty() {
        let _ = write!(std::io::stderr().lock(), "{}", t.err);
    }
}

/// The two streams' text, coloured as `--color`, NO_COLOR and each stream's terminal say.
fn text_for(g: &Globals) -> Text {
    let no_color = std::env::var_os("NO_COLOR");
    let on = |terminal| output::colour(g.color, no_color.as_deref(), terminal);
    Text::new(
        on(std::io::stdout().is_terminal()),
        on(std::io::stderr().is_terminal()),
    )
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    vbridge::libvirt::init();
    // args_os: a path argument need not be UTF-8, and std::env::args would panic on it.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cli = match docs::parse(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(
                e.kind(),
                K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                let code = if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
                    exit::USAGE
                } else {
                    exit::OK
                };
                return ExitCode::from(code);
            }
            if wants_json(&args) {
                let v = serde_json::json!({"error": {"kind": "usage", "message": e.kind().to_string(), "detail": e.to_string()}});
                println!("{v}");
            } else {
                let _ = e.print();
            }
            return ExitCode::from(exit::USAGE);
        }
    };
    let json = cli.globals.output == Format::Json;
    // A dumb terminal (an editor's shell buffer) cannot erase a line: no progress there.
    let redraws =
        std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    let line = progress::Line::for_run(!json, cli.globals.quiet, redraws);
    if let Some(l) = &line {
        cli.globals.progress = vbridge::progress::Sink::new(l.clone());
    }
    let result = dispatch(&cli);
    if let Some(l) = &line {
        l.clear();
    }
    let g = &cli.globals;
    match result {
        Ok(report) => {
            let ok = report.success();
            if json {
                // Written, not println!: a closed pipe must not panic.
                let _ = writeln!(std::io::stdout().lock(), "{}", report.json());
            } else {
                let mut t = text_for(g);
                report.text(g, &mut t);
                if !g.quiet {
                    // What was dropped from a rewritten document: beside the data, on stderr.
                    for n in report.notes() {
                        t.err.push_str(&format!("vbridge: note: {n}\n"));
                    }
                }
                print_text(&t, !g.quiet || !ok || report.is_data());
            }
            let code = if ok { exit::OK } else { exit::FAILURE };
            ExitCode::from(report.exit_code().unwrap_or(code))
        }
        Err(err) => {
            if json {
                let v = serde_json::json!({ "error": err });
                let _ = writeln!(std::io::stdout().lock(), "{v}");
            } else {
                let mut t = text_for(g);
                t.error("vbridge", &err);
                print_text(&t, false);
            }
            ExitCode::from(exit::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(line.split_whitespace())
    }

    /// The one table of which command lines parse. How the binary reports a refusal (exit
    /// code, text or JSON) is the table in tests/it/testdriver.rs `cli_bad_input_table`.
    #[test]
    fn command_lines() {
        let valid = [
            "vbridge net-define",
            "vbridge -c test:///default net-define --name n --bridge br1 --no-start --no-autostart --force",
            "vbridge net-undefine --name n",
            "vbridge attach web",
            "vbridge attach web db --bridge br1 --all -o json -n",
            "vbridge attach web --mac 52:54:00:00:00:01",
            "vbridge attach web --index 2",
            "vbridge attach --xml dom.xml",
            "vbridge attach web --hotplug",
            "vbridge attach web db --live",
            "vbridge attach web --live --flap-ms 0 --no-verify",
            "vbridge attach web --live --verify-within 5.5 --mtu 9000",
            "vbridge attach web --queues 4 --mtu 1500 --all",
            "vbridge attach web --direct eth1 --mode vepa",
            "vbridge attach web --hotplug --mtu 9000 --queues 2",
            "vbridge host-bridge eth1 --dhcp --netplan --mtu 9000",
            "vbridge detach web --mac 52:54:00:00:00:01",
            "vbridge undo web",
            "vbridge verify web --timeout 5",
            "vbridge verify web --timeout 0.5 --mac 52:54:00:00:00:01 -o json",
            "vbridge doctor",
            "vbridge doctor web --fix --persist",
            "vbridge host-bridge eth1 --dhcp --netplan --root-dir /tmp/x",
            "vbridge host-bridge eth1 --address 10.0.0.2/24 --gateway 10.0.0.1 --live",
            "vbridge host-bridge --remove",
            "vbridge tap add tap0 --bridge br0",
            "vbridge tap del tap0",
            "vbridge plan f.yml --detailed-exitcode -o json",
            "vbridge apply f.yml -c test:///default",
        ];
        for line in valid {
            if let Err(e) = parse(line) {
                panic!("{line}: {e}");
            }
        }
        let invalid = [
            "vbridge",
            "vbridge attach",
            "vbridge attach web --mac 52:54:00:00:00:01 --index 1",
            "vbridge attach web --all --index 1",
            "vbridge attach web --xml f.xml",
            "vbridge attach web --index 0",
            "vbridge attach web --flap-ms 10",
            "vbridge attach web --live --hotplug",
            "vbridge attach web --live --no-verify --verify-within 3",
            "vbridge attach web --live --verify-within -1",
            "vbridge attach web --mode vepa",
            "vbridge attach web --direct eth1 --hotplug",
            "vbridge attach --xml f.xml --live",
            "vbridge attach web -o yaml",
            "vbridge detach web",
            "vbridge -q -v doctor",
            "vbridge host-bridge eth1 --live --remove",
            "vbridge host-bridge --remove --confirm",
            "vbridge frobnicate",
        ];
        for line in invalid {
            assert!(parse(line).is_err(), "{line} was accepted");
        }
    }

    #[test]
    fn json_usage_detection() {
        let a = |s: &str| s.split_whitespace().map(Into::into).collect::<Vec<_>>();
        assert!(wants_json(&a("vbridge -o json attach")));
        assert!(wants_json(&a("vbridge attach --output=json")));
        assert!(!wants_json(&a("vbridge attach web")));
    }

    #[test]
    fn color_detection_for_clap() {
        let a = |s: &str| s.split_whitespace().map(Into::into).collect::<Vec<_>>();
        assert_eq!(
            color_asked(&a("vbridge --color never attach")),
            Some(ColorChoice::Never)
        );
        assert_eq!(
            color_asked(&a("vbridge attach --color=always --color=never")),
            Some(ColorChoice::Never)
        );
        assert_eq!(color_asked(&a("vbridge attach --color")), None);
        assert_eq!(color_asked(&a("vbridge attach --colour never")), None);
    }
}
