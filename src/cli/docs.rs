//! What the binary says about itself: `--version` naming the libvirt library it runs against,
//! shell completions (`vbridge completions SHELL`) and man pages (`vbridge man --dir DIR`),
//! all generated from the one clap definition in `mod.rs`, so they never drift from it.

use clap::{Args, CommandFactory, FromArgMatches, ValueEnum};
use clap_complete::Shell as Generator;
use std::ffi::OsString;
use std::path::PathBuf;
use vbridge::error::{Error, ErrorKind};

use super::{Cli, CmdResult, Data, Globals, Rendered};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to print a completion script for
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Directory to write vbridge.1 and one vbridge-COMMAND.1 per command into
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// `vbridge 0.1.0 (libvirt 9.0.0)`: which library answers matters as much as our own version
/// when a user reports a problem.
fn version_line() -> &'static str {
    let line = format!(
        "{} (libvirt {})",
        env!("CARGO_PKG_VERSION"),
        vbridge::libvirt::library_version()
    );
    // clap keeps a 'static version; this runs once per process.
    Box::leak(line.into_boxed_str())
}

/// Parse the command line as `Cli::try_parse_from` does, with the runtime version line.
pub fn parse(args: &[OsString]) -> Result<Cli, clap::Error> {
    // clap colours its help and usage errors as --color says (auto: a terminal, NO_COLOR).
    let colour = match super::color_asked(args) {
        Some(super::ColorChoice::Always) => clap::ColorChoice::Always,
        Some(super::ColorChoice::Never) => clap::ColorChoice::Never,
        _ => clap::ColorChoice::Auto,
    };
    let mut cmd = Cli::command().version(version_line()).color(colour);
    let mut matches = cmd.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))
}

/// `vbridge completions SHELL`: the script on stdout (data, so `-q` keeps it).
pub fn completions(a: &CompletionsArgs, _g: &Globals) -> CmdResult {
    let shell = match a.shell {
        Shell::Bash => Generator::Bash,
        Shell::Zsh => Generator::Zsh,
        Shell::Fish => Generator::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vbridge", &mut buf);
    let script = String::from_utf8_lossy(&buf).into_owned();
    Ok(Box::new(Data(
        Rendered {
            value: script,
            render: |s, _, t| t.out.push_str(s),
            success: |_| true,
        },
        Vec::new(),
    )))
}

/// `vbridge man --dir DIR`: vbridge.1 and vbridge-COMMAND.1 (vbridge-tap-add.1 ...) in DIR.
pub fn man(a: &ManArgs, _g: &Globals) -> CmdResult {
    let io = |e: std::io::Error| {
        Error::new(
            ErrorKind::Io,
            format!("cannot write man pages in {}: {e}", a.dir.display()),
        )
    };
    std::fs::create_dir_all(&a.dir).map_err(io)?;
    clap_mangen::generate_to(Cli::command(), &a.dir).map_err(io)?;
    let mut pages: Vec<String> = std::fs::read_dir(&a.dir)
        .map_err(io)?
        .flatten()
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".1") && p.contains("vbridge"))
        .collect();
    pages.sort();
    Ok(super::report(
        pages,
        |p, _, t| {
            p.iter()
                .for_each(|l| t.out.push_str(&format!("wrote {l}\n")))
        },
        |_| true,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: CmdResult) -> String {
        let mut t = super::super::Text::plain();
        r.unwrap_or_else(|e| panic!("{}", e.message))
            .text(&dummy(), &mut t);
        assert_eq!(t.err, "");
        t.out
    }

    #[test]
    fn completions_name_every_command() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = text(completions(&CompletionsArgs { shell }, &dummy()));
            for cmd in [
                "attach",
                "net-define",
                "doctor",
                "host-bridge",
                "completions",
            ] {
                assert!(s.contains(cmd), "{shell:?} completion lacks {cmd}");
            }
        }
    }

    #[test]
    fn one_man_page_per_command_and_none_for_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        let out = text(man(
            &ManArgs {
                dir: dir.path().to_path_buf(),
            },
            &dummy(),
        ));
        for page in ["vbridge.1", "vbridge-attach.1", "vbridge-tap-add.1"] {
            assert!(dir.path().join(page).is_file(), "{page} missing: {out}");
        }
        assert!(!dir.path().join("vbridge-man.1").exists());
        let attach = std::fs::read_to_string(dir.path().join("vbridge-attach.1")).unwrap();
        assert!(attach.contains("hotplug"), "{attach}");
    }

    #[test]
    fn parse_keeps_clap_behaviour_and_names_libvirt_in_the_version() {
        let args = |l: &str| l.split_whitespace().map(OsString::from).collect::<Vec<_>>();
        assert!(parse(&args("vbridge completions fish")).is_ok());
        assert!(parse(&args("vbridge completions tcsh")).is_err());
        let e = parse(&args("vbridge --version")).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(e.to_string().contains("(libvirt "), "{e}");
    }

    fn dummy() -> Globals {
        Globals::default()
    }
}
