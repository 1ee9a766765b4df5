//! vbridge's integration tests, compiled into one binary.

mod backends;
mod bench;
mod bench_inflight;
mod bench_latency;
mod common;
mod corpus;
mod desired;
mod host;
mod lab;
mod lab_core;
mod lab_doctor;
mod lab_e2e;
mod lab_newcomer;
mod lab_remote;
mod lab_smoke;
mod rewrite;
mod testdriver;
