//! vbridge: put KVM virtual machines on the real LAN.
//!
//! The library behind the `vbridge` command. Every mutating operation is split into a pure
//! plan (what would change, computed from what was observed) and an apply step.

pub mod attach;
pub mod backup;
pub mod desired;
pub mod doctor;
pub mod domxml;
pub mod error;
mod fanout;
pub mod host;
pub mod hotplug;
pub mod libvirt;
pub mod network;
pub mod plan;
pub mod report;
pub mod template;
pub mod topology;
pub mod validate;
pub mod verify;
pub mod xml;

pub use error::{Error, ErrorKind, Result};
