//! `imagegen serve`: the HTTP API and dashboard ([`crate::server`]) for the fleet found as
//! every other command finds it.

use super::args::ServeArgs;
use super::context::Context;
use crate::error::{ErrorCode, Result, exit};
use crate::server::{self, ServeOptions};

pub(crate) fn serve(context: &Context, args: &ServeArgs) -> Result<i32> {
    // Load once now: no fleet at all is an error at start; a fleet that is broken now is
    // served anyway (every request reloads it and reports its problems).
    match context.workspace() {
        Err(error) if error.code == ErrorCode::Precondition => return Err(error),
        Err(error) => eprintln!("warning: the fleet does not load yet: {}", error.message),
        Ok(_) => {}
    }
    let mut workspace = context.workspace_options();
    workspace.search_from = Some(std::env::current_dir().map_err(|error| {
        crate::error::Error::internal(format!("cannot read the current directory: {error}"))
    })?);
    server::serve(ServeOptions {
        listen: args.listen,
        token_file: args.token_file.clone(),
        workspace,
        body_limit: args.max_body_bytes,
        store_wait: std::time::Duration::from_millis(args.store_wait_ms),
        allow_flash: args.allow_flash,
    })?;
    Ok(exit::OK)
}
