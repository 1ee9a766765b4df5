//! vbridge's integration tests, compiled into one binary.

mod bench;
mod bench_live;
mod common;
mod corpus;
mod host;
mod lab;
mod lab_core;
mod lab_doctor;
mod lab_e2e;
mod lab_live;
mod lab_smoke;
mod live_testdriver;
mod rewrite;
mod testdriver;
