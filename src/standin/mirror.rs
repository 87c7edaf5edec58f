//! (stub) stand-in download mirror writer.
