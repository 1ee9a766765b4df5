//! vbridge's integration tests, compiled into one binary.

mod backends;
mod backends_ns;
mod bench;
mod bench_inflight;
mod bench_latency;
mod bench_live;
mod common;
mod conventions;
mod corpus;
mod desired;
mod host;
mod lab;
mod lab_core;
mod lab_doctor;
mod lab_e2e;
mod lab_faults;
mod lab_live;
mod lab_newcomer;
mod lab_remote;
mod lab_smoke;
mod lab_v11;
mod live_testdriver;
mod mutation;
mod rewrite;
mod testdriver;
