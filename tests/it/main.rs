//! vbridge's integration tests, compiled into one binary.

mod common;
mod lab;
mod lab_smoke;
