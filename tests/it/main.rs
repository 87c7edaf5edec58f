//! The one integration-test binary: every test runs the real `imagegen` binary or the real
//! library against temp dirs, a real redb file and real files.

mod apply;
mod build;
mod cli;
mod exec;
mod fetch;
mod first_hour;
mod flash;
mod flash_records;
mod http_server;
mod lock_cli;
mod manifest;
mod mcp;
mod overlay;
mod plan_state;
mod readme;
mod standin;
mod state;
mod support;
