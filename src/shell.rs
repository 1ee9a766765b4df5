//! Commands vbridge suggests to a person (doctor's fixes, hints): every value placed into
//! one is quoted for a POSIX shell, so that pasting the line runs exactly that command.

/// Quote one word for a POSIX shell (bash, zsh, dash). Words made only of characters no shell
/// treats specially stay as they are, so the common case reads naturally; anything else is
/// put in single quotes, with each `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c);
    // A leading `=` or `~` could still be expanded by some shells; an empty word needs quotes.
    if !word.is_empty() && word.chars().all(plain) && !word.starts_with(['=', '~']) {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// A command line from its words, each quoted as needed.
pub fn join<I, S>(words: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    words
        .into_iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn plain_words_stay_plain() {
        assert_eq!(quote("web01"), "web01");
        assert_eq!(quote("52:54:00:aa:bb:cc"), "52:54:00:aa:bb:cc");
        assert_eq!(
            quote("/etc/netplan/90-vbridge-br0.yaml"),
            "/etc/netplan/90-vbridge-br0.yaml"
        );
        assert_eq!(
            join(["vbridge", "attach", "web", "--bridge", "br0"]),
            "vbridge attach web --bridge br0"
        );
    }

    #[test]
    fn everything_else_is_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("web server ü"), "'web server ü'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$HOME"), "'$HOME'");
        assert_eq!(quote("~root"), "'~root'");
        assert_eq!(quote("a;rm -rf /"), "'a;rm -rf /'");
    }

    /// The real test of quoting: a shell splits the joined line back into the same words.
    #[test]
    fn a_shell_reads_back_the_same_words() {
        let words = [
            "web server ü",
            "it's",
            "$(id)",
            "`id`",
            "a\"b",
            "back\\slash",
            "*",
            "tab\there",
            "new\nline",
            "",
            "!bang",
            "=eq",
        ];
        let line = format!("printf '%s\\0' {}", join(words));
        let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
        assert!(out.status.success(), "{line}");
        let got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(str::to_string)
            .collect();
        assert_eq!(got, words);
    }
}
