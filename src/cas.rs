//! (stub) content-addressed artifact store.
