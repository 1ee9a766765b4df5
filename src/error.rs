//! The library's one error type: a kind a caller can branch on, a message in plain words,
//! and a hint that says what to do next.

use serde::Serialize;
use std::fmt;

/// What went wrong, coarse enough for a script to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The caller gave something malformed: a bad MAC, bridge name, CIDR, XML document.
    InvalidInput,
    /// A domain, network, interface or host device that was named does not exist.
    NotFound,
    /// The request contradicts what exists (a network of that name that differs, an edit
    /// made by someone else meanwhile, several candidate NICs).
    Conflict,
    /// The request cannot be done for this object (hostdev NIC, no hotplug slot, ...).
    Unsupported,
    /// Not allowed: not root, or libvirt refused access.
    Permission,
    /// libvirtd cannot be reached.
    Connection,
    /// libvirt answers, but the driver this needs is not there (its network driver not
    /// installed or not running: virtqemud without virtnetworkd).
    DriverUnavailable,
    /// The connection to libvirtd broke during a call (libvirtd died, the socket closed, a
    /// keepalive timed out): whether a change that call asked for took effect is unknown.
    ConnectionLost,
    /// libvirt answered with an error not covered above.
    Libvirt,
    /// A host command or kernel interface failed.
    Host,
    /// A file could not be read or written.
    Io,
}

/// An error with a message a person can act on.
#[derive(Debug, Clone, Serialize)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The hint a permission error gets unless its caller knows better.
pub const NEED_ROOT_HINT: &str = "run as root (CAP_NET_ADMIN)";

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// Set the hint, replacing any default one.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    pub fn host(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Host, message)
    }

    /// A failed read, write or system call. "Permission denied" gets [`NEED_ROOT_HINT`], so a
    /// host write that lacks root says what to do; a caller's `with_hint` replaces it.
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::PermissionDenied {
            Self::new(ErrorKind::Permission, format!("{what}: {err}")).with_hint(NEED_ROOT_HINT)
        } else {
            Self::new(ErrorKind::Io, format!("{what}: {err}"))
        }
    }

    /// Prefix the message with context ("domain web: ...").
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_say_to_run_as_root_unless_told_otherwise() {
        let denied = || std::io::Error::from_raw_os_error(libc::EACCES);
        let e = Error::io("cannot write x", denied());
        assert_eq!(e.kind, ErrorKind::Permission);
        assert_eq!(e.hint.as_deref(), Some(NEED_ROOT_HINT));
        let e = Error::io("cannot write x", denied()).with_hint("set VBRIDGE_STATE_DIR");
        assert_eq!(e.hint.as_deref(), Some("set VBRIDGE_STATE_DIR"));
        let e = Error::io(
            "cannot read x",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!((e.kind, e.hint), (ErrorKind::Io, None));
    }
}
