//! vbridge: put KVM virtual machines on the real LAN.
//!
//! The library behind the `vbridge` command. Every mutating operation is split into a pure
//! plan (what would change, computed from what was observed) and an apply step.

pub mod attach;
pub mod backup;
pub mod desired;
pub mod doctor;
pub mod domain;
pub mod domxml;
pub mod edit;
pub mod error;
mod fanout;
pub mod host;
pub mod host_bridge;
pub mod hotplug;
pub mod libvirt;
pub mod network;
pub mod plan;
pub mod progress;
pub mod report;
pub mod shell;
pub mod tap;
pub mod template;
pub mod topology;
pub mod validate;
pub mod verify;
pub mod xml;

/// The golden-file check the unit tests share with the integration tests.
#[cfg(test)]
#[path = "../tests/support/golden.rs"]
pub(crate) mod golden;

pub use error::{Error, ErrorKind, Result};
