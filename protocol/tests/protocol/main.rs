//! Integration tests of the wire protocol: golden vectors, property round trips, hostile input
//! and the fuzz targets' seed corpus. One binary, a module per area.
//!
//! `hostile` installs a counting global allocator for the whole binary; it measures per thread,
//! so the other modules' tests running in parallel do not disturb its bounds.

mod fuzz_corpus;
mod golden;
mod hostile;
mod roundtrip;
