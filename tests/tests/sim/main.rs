//! The bandwidth allocation on a simulated network, in virtual time (see `strait_tests::sim`).
//! Each scenario runs on five seeds.

mod quic;
