//! The NACK guard: what a subscriber may ask the bridge to send again.
//!
//! `rtc`'s NACK responder answers every sequence number of every NACK from its send buffer, so
//! one RTCP packet (up to ~360 pairs of 17 packets each) can ask for the whole buffer, and the
//! same request sent again asks for it again: a subscriber could make the bridge send hundreds of
//! packets per packet it sends, and take the worker's time from every other leg. The guard sits
//! between the wire and the responder and rewrites each inbound NACK before the responder sees
//! it, per media stream:
//!
//! - **duplicates**: a packet granted less than [`DUPLICATE_WINDOW`] ago is not granted again
//!   (a retransmission is on its way; a real loss of it is asked for again later);
//! - **budget**: each original packet of the stream sent to the leg earns two retransmission
//!   credits, up to [`BURST`]: retransmissions stay at most twice the stream's rate, with room
//!   for one burst of losses (a lost keyframe).
//!
//! Whatever is left is passed on as a new NACK; a NACK with nothing left is removed from its
//! compound packet, and a compound with nothing left is dropped. What was granted, refused as a
//! duplicate or refused for the budget is counted in [`NackCounters`], shared by every leg of an
//! endpoint.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::sansio::Protocol;
use rustc_hash::FxHashMap;

use super::RtcError;

/// A packet granted again within this long is not granted a second time.
pub const DUPLICATE_WINDOW: Duration = Duration::from_millis(100);

/// Most retransmission credits a stream saves up (two per original packet sent).
pub const BURST: u32 = 128;

/// Sequence numbers remembered per stream for the duplicate check (a power of two).
const REMEMBERED: usize = 1024;

/// Counts of what the guards of an endpoint did with the packets asked for again.
#[derive(Debug, Default)]
pub struct NackCounters {
    granted: AtomicU64,
    duplicate: AtomicU64,
    over_budget: AtomicU64,
}

/// A reading of [`NackCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NackStats {
    /// Packets handed on to the NACK responder (sent again if its buffer still holds them).
    pub granted: u64,
    /// Packets asked for again within [`DUPLICATE_WINDOW`] of being granted: refused.
    pub duplicate: u64,
    /// Packets beyond the stream's retransmission budget: refused.
    pub over_budget: u64,
}

impl NackCounters {
    /// The counts so far.
    pub fn read(&self) -> NackStats {
        NackStats {
            granted: self.granted.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
            over_budget: self.over_budget.load(Ordering::Relaxed),
        }
    }
}

/// One media stream sent to the leg.
#[derive(Debug)]
struct Stream {
    /// The highest sequence number sent (originals only).
    highest: u16,
    /// Retransmission credits.
    credits: u32,
    /// When each recently granted sequence number was granted, by `seq % REMEMBERED`.
    granted: Box<[Option<(u16, Instant)>]>,
}

impl Stream {
    fn new(first: u16) -> Stream {
        Stream {
            highest: first,
            credits: 2,
            granted: vec![None; REMEMBERED].into_boxed_slice(),
        }
    }

    /// An RTP packet of this stream on its way out: an original earns two credits.
    fn sent(&mut self, seq: u16) {
        let ahead = seq.wrapping_sub(self.highest);
        if ahead != 0 && ahead < u16::MAX / 2 {
            self.highest = seq;
            self.credits = (self.credits + 2).min(BURST);
        }
    }

    /// Whether `seq` may be sent again now.
    fn ask(&mut self, seq: u16, now: Instant, counters: &NackCounters) -> bool {
        let slot = &mut self.granted[usize::from(seq) % REMEMBERED];
        if let Some((at_seq, at)) = *slot
            && at_seq == seq
            && now.saturating_duration_since(at) < DUPLICATE_WINDOW
        {
            counters.duplicate.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.credits == 0 {
            counters.over_budget.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.credits -= 1;
        *slot = Some((seq, now));
        counters.granted.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The interceptor (see the module docs). Install it wire-ward of the NACK responder.
pub struct NackGuard {
    counters: Arc<NackCounters>,
    streams: FxHashMap<u32, Stream>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
    /// Scratch for the sequence numbers of one NACK.
    asked: Vec<u16>,
}

impl std::fmt::Debug for NackGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NackGuard")
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl NackGuard {
    /// A guard that counts into `counters`.
    pub fn new(counters: Arc<NackCounters>) -> NackGuard {
        NackGuard {
            counters,
            streams: FxHashMap::default(),
            reads: VecDeque::new(),
            writes: VecDeque::new(),
            asked: Vec::new(),
        }
    }

    /// `nack` with only what may be sent again (`None`: nothing).
    fn filter(&mut self, nack: &TransportLayerNack, now: Instant) -> Option<TransportLayerNack> {
        // A stream this leg is not sent: the responder has nothing for it either.
        let stream = self.streams.get_mut(&nack.media_ssrc)?;
        self.asked.clear();
        for pair in &nack.nacks {
            // The pair's base and the packets its bitmask names (at most 17).
            self.asked.push(pair.packet_id);
            for bit in 0..16u16 {
                if pair.lost_packets & (1 << bit) != 0 {
                    self.asked.push(pair.packet_id.wrapping_add(bit + 1));
                }
            }
        }
        self.asked.sort_unstable();
        self.asked.dedup();
        let counters = &self.counters;
        self.asked.retain(|&seq| stream.ask(seq, now, counters));
        if self.asked.is_empty() {
            return None;
        }
        Some(TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: nack.media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(&self.asked),
        })
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackGuard {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet
            && packets
                .iter()
                .any(|p| p.as_any().is::<TransportLayerNack>())
        {
            let now = msg.now;
            let mut kept: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::with_capacity(packets.len());
            for packet in packets.drain(..) {
                match packet.as_any().downcast_ref::<TransportLayerNack>() {
                    Some(nack) => {
                        if self.streams.contains_key(&nack.media_ssrc) {
                            if let Some(filtered) = self.filter(nack, now) {
                                kept.push(Box::new(filtered));
                            }
                        } else {
                            kept.push(packet);
                        }
                    }
                    None => kept.push(packet),
                }
            }
            if kept.is_empty() {
                // An empty compound means something else to `rtc` (an attribute carrier).
                return Ok(());
            }
            *packets = kept;
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &msg.message.packet {
            let (ssrc, seq) = (packet.header.ssrc, packet.header.sequence_number);
            self.streams
                .entry(ssrc)
                .or_insert_with(|| Stream::new(seq))
                .sent(seq);
        }
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for NackGuard {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    fn nack(ssrc: u32, seqs: &[u16]) -> TransportLayerNack {
        TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: ssrc,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        }
    }

    fn asked(nack: &TransportLayerNack) -> Vec<u16> {
        nack.nacks.iter().flat_map(NackPair::packet_list).collect()
    }

    #[test]
    fn retransmissions_stay_within_twice_the_streams_rate_and_once_per_window() {
        let counters = Arc::new(NackCounters::default());
        let mut guard = NackGuard::new(counters.clone());
        let now = Instant::now();
        let mut stream = Stream::new(0);
        for seq in 1..=40u16 {
            stream.sent(seq);
        }
        guard.streams.insert(7, stream);

        // 40 originals earned 80 credits (2 at the start too): the first 82 of 100 asked.
        let all: Vec<u16> = (1..=100).collect();
        let first = guard.filter(&nack(7, &all), now).expect("some granted");
        assert_eq!(asked(&first), (1..=82).collect::<Vec<_>>());
        // Asked again at once: duplicates, and no credit left for the rest.
        assert!(guard.filter(&nack(7, &all), now).is_none());
        let stats = counters.read();
        assert_eq!(stats.granted, 82);
        assert_eq!(stats.duplicate, 82);
        assert_eq!(stats.over_budget, 18 + 18);

        // Later, with new credits from new originals, a packet may be granted again.
        let guard_stream = guard.streams.get_mut(&7).expect("stream");
        guard_stream.sent(41);
        guard_stream.sent(40); // a retransmission earns nothing
        let later = now + DUPLICATE_WINDOW;
        let again = guard.filter(&nack(7, &[5, 6, 7]), later).expect("granted");
        assert_eq!(asked(&again), vec![5, 6]);
        // An unknown stream's NACK passes untouched; the budget never exceeds the burst.
        assert!(guard.filter(&nack(8, &[1]), now).is_none());
        let mut big = Stream::new(0);
        for seq in 1..=1000u16 {
            big.sent(seq);
        }
        assert_eq!(big.credits, BURST);
    }
}
