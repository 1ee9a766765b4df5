//! What a domain's lifecycle allows a command to do: a transient domain (`virsh create`, no
//! persistent definition, gone once it stops) must not be made persistent behind the user's
//! back, which is what defining its rewritten XML does. Shared by the commands that define.

use crate::error::{Error, Result};

/// Whether a persistent rewrite of domain `name` may go ahead. A persistent domain: yes,
/// nothing to say. A transient one: only when asked (`persist`), and then the note the
/// report carries; otherwise a conflict naming the reason and the alternatives. Pure.
pub fn persistent_rewrite(name: &str, persistent: bool, persist: bool) -> Result<Option<String>> {
    if persistent {
        return Ok(None);
    }
    if persist {
        return Ok(Some(format!(
            "{name} was transient: defining its new XML makes it persistent (--persist), so it stays defined after it stops; `virsh undefine {}` removes the definition again",
            crate::shell::quote(name)
        )));
    }
    Err(Error::conflict(format!(
        "{name} is a transient VM (started with `virsh create`, no persistent definition): rewriting its definition would make it persistent, and it would stay defined after it stops"
    ))
    .with_hint(format!(
        "to change only the running VM, add a NIC with `{}`; to make it persistent on purpose, pass --persist",
        crate::shell::join(["vbridge", "attach", name, "--hotplug"])
    )))
}

/// The note of a live move on a transient domain: the running NIC moved, and nothing was
/// defined, so the domain stays transient.
pub fn transient_live_only(name: &str) -> String {
    format!(
        "{name} is transient: its running NIC was moved and no persistent definition was written (--persist would make it persistent)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn transient_vms_are_made_persistent_only_when_asked() {
        assert_eq!(persistent_rewrite("web", true, false).unwrap(), None);
        assert_eq!(persistent_rewrite("web", true, true).unwrap(), None);
        let e = persistent_rewrite("ci runner", false, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("transient"), "{}", e.message);
        let hint = e.hint.unwrap();
        assert!(
            hint.contains("`vbridge attach 'ci runner' --hotplug`") && hint.contains("--persist"),
            "{hint}"
        );
        let note = persistent_rewrite("ci runner", false, true)
            .unwrap()
            .unwrap();
        assert!(note.contains("makes it persistent"), "{note}");
    }
}
