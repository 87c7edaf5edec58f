//! The command-line frontend: parse arguments, resolve settings, call one library
//! operation, render its result as text or JSON, and map errors to exit codes. Core code
//! never sees clap types.

mod applying;
mod args;
mod commands;
mod context;
mod display;
mod explain;
mod fetching;
mod flash;
mod flash_confirm;
mod flash_observer;
mod mcp;
mod records;
pub(crate) mod report;
mod serve;

use std::collections::BTreeMap;
use std::io::Write;

use clap::Parser;

use crate::error::{Error, exit};
pub use args::Cli;
use args::Command;
use context::Context;

/// Runs the command line of this process and returns the exit code.
pub fn main() -> i32 {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let serves = args
        .get(1..)
        .unwrap_or_default()
        .iter()
        .any(|arg| arg == "serve" || arg == "mcp");
    if !serves {
        exit_quietly_on_closed_pipes();
    }
    run(args, env)
}

/// `imagegen builds list | head` must end quietly when the reader goes away, as other Unix
/// tools do, instead of panicking in `println!`: the default SIGPIPE action does that. The
/// servers keep Rust's ignored SIGPIPE, so a client that hangs up cannot kill them.
fn exit_quietly_on_closed_pipes() {
    // SAFETY: setting a signal's disposition to its default is async-signal-safe and happens
    // before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs one command line with an explicit environment (tests pass their own).
pub fn run(args: Vec<std::ffi::OsString>, env: BTreeMap<String, String>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    let context = Context::new(cli.global, env);
    let result = dispatch(&context, cli.command);
    let _ = std::io::stdout().flush();
    match result {
        Ok(code) => code,
        Err(error) => {
            report::print_error(&error, context.json(), context.color());
            error.exit_code()
        }
    }
}

fn dispatch(context: &Context, command: Command) -> Result<i32, Error> {
    match command {
        Command::Validate(args) => commands::validate(context, &args),
        Command::Plan(args) => commands::plan(context, &args),
        Command::Config => commands::config(context),
        Command::Apply(args) => applying::apply(context, &args),
        Command::Build(args) => applying::build(context, &args),
        Command::Show(args) => explain::show(context, &args),
        Command::Graph(args) => explain::graph(context, &args),
        Command::Builds(command) => records::builds(context, command),
        Command::Artifacts(command) => records::artifacts(context, command),
        Command::Gc(args) => records::gc(context, &args),
        Command::Lock(args) => fetching::lock(context, &args),
        Command::Builders(command) => fetching::builders(context, command),
        Command::Profiles(command) => commands::profiles(context, command),
        Command::Mcp(args) => mcp::serve(context, &args),
        Command::Flash(command) => flash::flash(context, command),
        Command::Devices => flash::devices(context),
        Command::Serve(args) => serve::serve(context, &args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "imagegen", &mut std::io::stdout());
            Ok(exit::OK)
        }
    }
}
