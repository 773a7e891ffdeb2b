//! Load shedding, as the gateway asks for it when a worker is overloaded: a ceiling on the layer
//! every subscription forwards (the top simulcast layers go first), and then video only from the
//! publishers who spoke last. Audio is never shed.
//!
//! Who spoke last is judged by the audio itself: an audio packet whose payload is longer than
//! [`VOICE_PAYLOAD_BYTES`] carries voice. Opus sends 1–3 byte frames for silence (and with DTX
//! only one every 400 ms), tens of bytes for speech.

use std::time::Instant;

use rustc_hash::FxHashSet;

use super::{ParticipantId, Sfu, TrackKind};

/// An audio payload longer than this carries voice.
pub(super) const VOICE_PAYLOAD_BYTES: usize = 8;

impl Sfu {
    /// Caps every subscription at layer `ceiling` (`None` lifts the cap) and re-picks the
    /// layers of every subscriber; a subscription then switches at the next keyframe of its new
    /// layer, which is asked for. Relay members keep every layer: the other side sheds for its
    /// own subscribers.
    pub fn set_layer_ceiling(&mut self, ceiling: Option<u8>, now: Instant) {
        if self.layer_ceiling == ceiling {
            return;
        }
        self.layer_ceiling = ceiling;
        let subscribers: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| !p.relay && !p.subscriptions.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for subscriber in subscribers {
            self.retarget(subscriber, now, None);
        }
    }

    /// The current layer ceiling.
    #[must_use]
    pub fn layer_ceiling(&self) -> Option<u8> {
        self.layer_ceiling
    }

    /// Forwards video only from the `speakers` publishers who carried voice last (`None`
    /// forwards all video). Call it again as the speakers change (the gateway does every
    /// second). A publisher whose video is paused is counted in
    /// [`DropStats::shed`](super::DropStats::shed) for each of its subscriptions; when its video
    /// is forwarded again, its subscriptions start at a keyframe, which is asked for.
    pub fn set_video_speakers(&mut self, speakers: Option<usize>, now: Instant) {
        let allowed = speakers.map(|n| {
            let mut ranked: Vec<(Option<Instant>, ParticipantId)> = self
                .participants
                .iter()
                .filter(|(_, p)| {
                    !p.relay
                        && p.published
                            .iter()
                            .any(|&t| self.tracks[t].kind == TrackKind::Video)
                })
                // When any of its audio tracks last carried voice.
                .map(|(id, p)| {
                    let voice = p
                        .published
                        .iter()
                        .filter_map(|&t| self.tracks[t].last_voice)
                        .max();
                    (voice, *id)
                })
                .collect();
            // Latest voice first; never heard last; ties by id, so the choice is stable.
            ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            ranked
                .into_iter()
                .take(n)
                .map(|(_, id)| id)
                .collect::<FxHashSet<_>>()
        });
        let was = |sfu: &Sfu, id: &ParticipantId| {
            sfu.video_speakers
                .as_ref()
                .is_none_or(|speakers| speakers.contains(id))
        };
        let now_allowed = |id: &ParticipantId| allowed.as_ref().is_none_or(|s| s.contains(id));
        // Paused now: their subscriptions start again at a keyframe. Resumed now: ask for it.
        let mut paused = Vec::new();
        let mut resumed = Vec::new();
        for (id, p) in &self.participants {
            if p.relay {
                continue;
            }
            match (was(self, id), now_allowed(id)) {
                (true, false) => paused.extend(p.published.iter().copied()),
                (false, true) => resumed.extend(p.published.iter().copied()),
                _ => {}
            }
        }
        self.video_speakers = allowed;
        for slot in paused {
            let track = &mut self.tracks[slot];
            if track.kind != TrackKind::Video {
                continue;
            }
            for (_, sub) in &mut track.subscriptions {
                sub.current = None;
            }
        }
        for slot in resumed {
            if self.tracks[slot].kind != TrackKind::Video {
                continue;
            }
            let targets: Vec<u8> = self.tracks[slot]
                .subscriptions
                .iter()
                .map(|(_, sub)| sub.target)
                .collect();
            for layer in targets {
                self.request_upstream(slot, layer, now);
            }
        }
    }

    /// Whether video is forwarded only from the latest speakers.
    #[must_use]
    pub fn video_speakers(&self) -> Option<usize> {
        self.video_speakers.as_ref().map(FxHashSet::len)
    }
}
