//! The one integration-test binary: every test runs the real `imagegen` binary or the real
//! library against temp dirs, a real redb file and real files.

mod apply;
mod bin_dir;
mod build;
mod cli;
mod dashboard;
mod exec;
mod feeds;
mod fetch;
mod first_hour;
mod flash;
mod fuzz_corpus;
mod hostile_files;
mod hostile_names;
mod http_server;
mod lock_cli;
mod manifest;
mod mcp;
mod overlay;
mod parse_scale;
mod plan_state;
mod readme;
mod sandbox;
mod serve_support;
mod server;
mod server_schema;
mod standin;
mod state;
mod support;
mod webdriver;
