//! The one integration-test binary: every test runs the real `imagegen` binary or the real
//! library against temp dirs, a real redb file and real files.

mod apply;
mod build;
mod cli;
mod exec;
mod fetch;
mod http_server;
mod lock_cli;
mod manifest;
mod overlay;
mod plan_state;
mod sandbox;
mod standin;
mod state;
mod support;
