//! The apply executor: runs a graph of steps on bounded worker pools.
pub mod queue;
