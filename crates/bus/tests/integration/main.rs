//! The bus's one integration-test binary: one module per feature.

mod common;
mod conformance;
mod memory;
mod redis;
mod redis_cluster;
