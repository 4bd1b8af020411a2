//! Process-level tests of the `applause` binary: configuration is validated
//! before binding, the CLI subcommands work, and `kill -9` in the middle of
//! concurrent purchases loses no committed gift and charges nothing twice.
//! (HTTP behaviour is tested in-process by the `http` test binary.)

mod chaos;
mod cli;
mod common;
mod crash;
mod drain;
mod secrets;
