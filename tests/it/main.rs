//! vbridge's integration tests, compiled into one binary.

mod common;
mod corpus;
mod lab;
mod lab_core;
mod lab_doctor;
mod lab_smoke;
mod rewrite;
mod testdriver;
