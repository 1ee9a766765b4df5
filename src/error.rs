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

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
        }
    }

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

    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        let kind = if err.kind() == std::io::ErrorKind::PermissionDenied {
            ErrorKind::Permission
        } else {
            ErrorKind::Io
        };
        Self::new(kind, format!("{what}: {err}"))
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
