//! `apply` through the public API: every way it refuses, how it allocates, and what it records.
//! Every command goes through `Cluster::run`, which also checks that the invariants hold after it
//! and that a refused command left the state exactly as it was.

mod batch;
mod history;
mod identities;
mod rules;
mod support;
