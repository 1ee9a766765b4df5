//! Where the binary's text goes and how it looks: a report's text in two streams (the report
//! for stdout, the errors in it for stderr, as virsh and every Unix tool do), and colour on a
//! terminal, as `--color` and NO_COLOR say.

use anstyle::{AnsiColor, Style};
use clap::ValueEnum;
use std::ffi::OsStr;
use std::fmt::Write as _;
use vbridge::error::Error;

/// `--color WHEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour a stream that is a terminal, unless NO_COLOR is set
    Auto,
    /// Always colour (even through a pipe, or with NO_COLOR set)
    Always,
    /// Never colour
    Never,
}

/// Whether a stream gets colour. `always` and `never` say so themselves (a flag given for one
/// run outranks the environment, as https://no-color.org allows); `auto` colours a terminal
/// unless NO_COLOR holds anything but the empty string.
pub fn colour(choice: ColorChoice, no_color: Option<&OsStr>, terminal: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && no_color.is_none_or(OsStr::is_empty),
    }
}

/// What a word says about the state of things, and so its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// An error, a failed hop.
    Bad,
    /// A warning.
    Warn,
    /// For information.
    Info,
    /// A hop that is fine.
    Good,
}

impl Tone {
    fn style(self) -> Style {
        let fg = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
        match self {
            Tone::Bad => fg(AnsiColor::Red).bold(),
            Tone::Warn => fg(AnsiColor::Yellow),
            Tone::Info => fg(AnsiColor::Cyan),
            Tone::Good => fg(AnsiColor::Green),
        }
    }
}

fn paint(on: bool, style: Style, text: &str) -> String {
    if on {
        format!("{style}{text}{style:#}")
    } else {
        text.to_string()
    }
}

/// A report rendered as text: `out` is the report (stdout), `err` the errors in it (stderr),
/// each coloured only when its stream may be. Renderers write into it; `main` prints it.
#[derive(Debug, Default)]
pub struct Text {
    pub out: String,
    pub err: String,
    out_colour: bool,
    err_colour: bool,
}

impl Text {
    pub fn new(out_colour: bool, err_colour: bool) -> Text {
        Text {
            out_colour,
            err_colour,
            ..Text::default()
        }
    }

    /// Without colour: what goldens read.
    #[cfg(test)]
    pub fn plain() -> Text {
        Text::default()
    }

    /// `SUBJECT: error: MESSAGE` and its hint, on stderr: a VM, a host, or vbridge itself.
    pub fn error(&mut self, subject: &str, e: &Error) {
        let label = paint(self.err_colour, Tone::Bad.style(), "error");
        let _ = writeln!(self.err, "{subject}: {label}: {}", e.message);
        if let Some(h) = &e.hint {
            let _ = writeln!(self.err, "  hint: {h}");
        }
    }

    /// `word` in the colour of `tone`, for the report on stdout.
    pub fn tone(&self, tone: Tone, word: &str) -> String {
        paint(self.out_colour, tone.style(), word)
    }

    /// A unified diff on stdout, ending its last line: on a terminal, added lines green,
    /// removed lines red, hunk headers cyan, file headers bold (as `git diff` shows them).
    pub fn diff(&mut self, diff: &str) {
        if diff.is_empty() {
            self.out.push('\n');
        }
        for line in diff.split_inclusive('\n') {
            let body = line.strip_suffix('\n').unwrap_or(line);
            let style = if body.starts_with("+++") || body.starts_with("---") {
                Style::new().bold()
            } else if body.starts_with('+') {
                Tone::Good.style()
            } else if body.starts_with('-') {
                Style::new().fg_color(Some(AnsiColor::Red.into()))
            } else if body.starts_with("@@") {
                Tone::Info.style()
            } else {
                Style::new()
            };
            if style == Style::new() {
                self.out.push_str(body);
            } else {
                self.out.push_str(&paint(self.out_colour, style, body));
            }
            self.out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vbridge::error::ErrorKind;

    #[test]
    fn when_to_colour() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        // (choice, NO_COLOR, terminal) -> colour
        let table = [
            (ColorChoice::Auto, None, true, true),
            (ColorChoice::Auto, None, false, false),
            (ColorChoice::Auto, set, true, false),
            // An empty NO_COLOR is unset (no-color.org).
            (ColorChoice::Auto, empty, true, true),
            (ColorChoice::Always, None, false, true),
            (ColorChoice::Always, set, false, true),
            (ColorChoice::Never, None, true, false),
        ];
        for (choice, no_color, terminal, want) in table {
            assert_eq!(
                colour(choice, no_color, terminal),
                want,
                "{choice:?} NO_COLOR={no_color:?} terminal={terminal}"
            );
        }
    }

    #[test]
    fn plain_text_is_the_text_and_colour_only_wraps_it() {
        let e = Error::new(ErrorKind::NotFound, "no domain named \"x\"").with_hint("list them");
        let diff = "--- a/x.xml\n+++ b/x.xml\n@@ -1 +1 @@\n-old\n+new\n same";
        let mut plain = Text::plain();
        plain.error("x", &e);
        plain.diff(diff);
        assert_eq!(
            plain.err,
            "x: error: no domain named \"x\"\n  hint: list them\n"
        );
        assert_eq!(plain.out, format!("{diff}\n"));
        assert!(!plain.out.contains('\x1b') && !plain.err.contains('\x1b'));

        let mut coloured = Text::new(true, true);
        coloured.error("x", &e);
        coloured.diff(diff);
        assert!(
            coloured.err.contains("\x1b[1m\x1b[31merror\x1b[0m"),
            "{:?}",
            coloured.err
        );
        assert!(
            coloured.out.contains("\x1b[32m+new\x1b[0m\n"),
            "{:?}",
            coloured.out
        );
        assert!(
            coloured.out.contains("\x1b[31m-old\x1b[0m\n"),
            "{:?}",
            coloured.out
        );
        assert!(coloured.out.ends_with("\n same\n"), "{:?}", coloured.out);
        // Remove the escapes and the text is the plain one, byte for byte.
        let strip = |s: &str| {
            let mut out = String::new();
            let mut esc = false;
            for c in s.chars() {
                match (esc, c) {
                    (false, '\x1b') => esc = true,
                    (true, 'm') => esc = false,
                    (true, _) => {}
                    (false, c) => out.push(c),
                }
            }
            out
        };
        assert_eq!(strip(&coloured.out), plain.out);
        assert_eq!(strip(&coloured.err), plain.err);
    }
}
