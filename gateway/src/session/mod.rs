//! Sessions: a client's life from its hello to its end.

mod admission;
pub(crate) mod quic;

pub(crate) use self::admission::Admission;
