//! Integration tests for `strait-certs`, one module per area.

mod dev;
mod fingerprint;
mod load;
mod rotation;
mod support;
