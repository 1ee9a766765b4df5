//! vbridge's integration tests, compiled into one binary.

mod bench;
mod common;
mod corpus;
mod host;
mod lab;
mod lab_core;
mod lab_doctor;
mod lab_e2e;
mod lab_faults;
mod lab_smoke;
mod mutation;
mod rewrite;
mod testdriver;
