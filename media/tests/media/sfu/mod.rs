//! The SFU core, driven with virtual time and synthetic RTP: a module per area.

mod fixture;

mod allocation;
mod detect;
mod forwarding;
mod grace;
mod keyframes;
mod limits;
mod props;
mod relay;
mod rooms;
mod shed;
mod simulcast;
