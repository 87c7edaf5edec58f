//! (stub) executor.
