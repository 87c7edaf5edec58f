//! (stub) isolated Image Builder runs.
