//! (stub) stand-in Image Builder tree generator.
