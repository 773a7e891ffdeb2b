//! The per-subscriber output of the hot path, and the per-subscription RTP rewrite behind it.
//!
//! Each subscription maps the publisher's sequence numbers and timestamps into its own space with
//! two wrapping offsets. The offsets are chosen when a *segment* starts — the first packet ever,
//! a layer switch, or a discontinuity in the publisher's numbering — so that the first packet of
//! the segment follows the last one sent: sequence + 1, timestamp + the wall time elapsed in the
//! codec's clock (at least one tick). Inside a segment the mapping is a pure translation, so
//! reordering and loss upstream look the same downstream.

use std::time::Instant;

use super::ids::{MediaId, ParticipantId, TrackId};

/// One packet to send to one subscriber, produced by
/// [`Sfu::handle_rtp`](super::Sfu::handle_rtp). It borrows the publisher's packet: the gateway
/// writes the rewritten packet straight into its own send buffer with
/// [`write_into`](Self::write_into), one copy and no allocation.
#[derive(Debug, Clone, Copy)]
pub struct Forward<'a> {
    /// The subscriber to send to.
    pub to: ParticipantId,
    /// The subscriber's media id for this subscription (the datagram's media id on QUIC legs).
    /// For a relay member, every layer of the track comes on it; [`layer`](Self::layer) tells
    /// them apart.
    pub media: MediaId,
    /// The track the packet belongs to.
    pub track: TrackId,
    /// The simulcast layer the packet belongs to.
    pub layer: u8,
    packet: &'a [u8],
    ssrc: u32,
    sequence_number: u16,
    timestamp: u32,
}

impl<'a> Forward<'a> {
    pub(crate) fn new(
        to: ParticipantId,
        media: MediaId,
        track: TrackId,
        layer: u8,
        packet: &'a [u8],
        (ssrc, sequence_number, timestamp): (u32, u16, u32),
    ) -> Self {
        Self {
            to,
            media,
            track,
            layer,
            packet,
            ssrc,
            sequence_number,
            timestamp,
        }
    }

    /// Length of the rewritten packet: the same as the original.
    #[must_use]
    pub fn len(&self) -> usize {
        self.packet.len()
    }

    /// Whether the packet is empty (never: RTP packets have at least a 12-byte header).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.packet.is_empty()
    }

    /// The SSRC the rewritten packet carries: the subscription's (for a relay member, the
    /// publisher's: relay subscriptions pass packets through unchanged).
    #[must_use]
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The rewritten sequence number.
    #[must_use]
    pub fn sequence_number(&self) -> u16 {
        self.sequence_number
    }

    /// The rewritten timestamp.
    #[must_use]
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// The publisher's packet as it arrived.
    #[must_use]
    pub fn original(&self) -> &'a [u8] {
        self.packet
    }

    /// Writes the rewritten packet at the start of `dst` and returns its length. It is the
    /// original packet with the sequence number, timestamp and SSRC replaced; marker, payload type,
    /// CSRCs, header extensions, payload and padding are unchanged.
    ///
    /// # Panics
    ///
    /// If `dst` is shorter than [`len`](Self::len). Check it first: the gateway must decide
    /// anyway whether the packet fits a datagram.
    pub fn write_into(&self, dst: &mut [u8]) -> usize {
        let len = self.packet.len();
        let dst = &mut dst[..len];
        dst.copy_from_slice(self.packet);
        dst[2..4].copy_from_slice(&self.sequence_number.to_be_bytes());
        dst[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        dst[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        len
    }
}

/// How far behind the highest forwarded sequence number a packet may be and still be taken as
/// reordered within the segment. Anything further back is a discontinuity (the publisher's
/// numbering jumped) and starts a new segment.
const REORDER_WINDOW: u16 = 0x1000;

/// What the rewrite says about a packet of the segment's layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mapped {
    /// Send it with this sequence number and timestamp.
    Send(u16, u32),
    /// It is older than the first packet of the segment (it precedes the keyframe the segment
    /// started at); its number would collide with packets already sent.
    Stale,
    /// The publisher's numbering jumped; start a new segment at this packet.
    Discontinuity,
}

/// The sequence number and timestamp rewrite of one subscription.
#[derive(Debug, Clone)]
pub(crate) struct Rewriter {
    seq_offset: u16,
    ts_offset: u32,
    /// Highest sequence number sent (or, before the first packet, the first one to send).
    max_seq: u16,
    /// Timestamp of the packet with `max_seq` (or, before the first packet, the first one).
    max_ts: u32,
    /// When the packet with `max_seq` was sent; `None` until the first packet.
    max_at: Option<Instant>,
    /// Sequence number of the segment's first packet.
    segment_first: u16,
    /// Whether packets older than `segment_first` may still arrive within the reorder window.
    young: bool,
}

impl Rewriter {
    /// A rewrite whose first packet will carry `first_seq` and `first_ts` (random, RFC 3550
    /// §5.1: "The initial value of the sequence number SHOULD be random").
    pub(crate) fn new(first_seq: u16, first_ts: u32) -> Self {
        Self {
            seq_offset: 0,
            ts_offset: 0,
            max_seq: first_seq,
            max_ts: first_ts,
            max_at: None,
            segment_first: first_seq,
            young: true,
        }
    }

    /// Starts a segment at this packet and returns its rewritten sequence number and timestamp.
    pub(crate) fn start_segment(
        &mut self,
        seq: u16,
        ts: u32,
        now: Instant,
        clock_rate: u32,
    ) -> (u16, u32) {
        let (first_seq, first_ts) = match self.max_at {
            None => (self.max_seq, self.max_ts),
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_nanos();
                let ticks = elapsed * u128::from(clock_rate) / 1_000_000_000;
                // Timestamps wrap: only the low 32 bits of the advance matter.
                let ticks = (ticks as u32).max(1);
                (
                    self.max_seq.wrapping_add(1),
                    self.max_ts.wrapping_add(ticks),
                )
            }
        };
        self.seq_offset = first_seq.wrapping_sub(seq);
        self.ts_offset = first_ts.wrapping_sub(ts);
        self.max_seq = first_seq;
        self.max_ts = first_ts;
        self.max_at = Some(now);
        self.segment_first = first_seq;
        self.young = true;
        (first_seq, first_ts)
    }

    /// Maps a packet of the segment's layer.
    pub(crate) fn map(&mut self, seq: u16, ts: u32, now: Instant) -> Mapped {
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        let ahead = out_seq.wrapping_sub(self.max_seq) as i16;
        if ahead > 0 {
            self.max_seq = out_seq;
            self.max_ts = out_ts;
            self.max_at = Some(now);
            if self.young && out_seq.wrapping_sub(self.segment_first) > REORDER_WINDOW {
                self.young = false;
            }
            Mapped::Send(out_seq, out_ts)
        } else if ahead >= -(REORDER_WINDOW as i16) {
            if self.young && (out_seq.wrapping_sub(self.segment_first) as i16) < 0 {
                Mapped::Stale
            } else {
                Mapped::Send(out_seq, out_ts)
            }
        } else {
            Mapped::Discontinuity
        }
    }
}
