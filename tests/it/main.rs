//! The one integration-test binary: every test runs the real `imagegen` binary or the real
//! library against temp dirs, a real redb file and real files.

mod build;
mod support;
