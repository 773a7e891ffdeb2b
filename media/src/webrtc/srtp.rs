//! The SRTP context of forwarded RTP: the peer's own send keys, in a context of the endpoint's.
//!
//! `rtc` runs DTLS-SRTP for every peer and keeps the SRTP contexts it derives to itself. The
//! endpoint forwards RTP without going through `rtc` ([`super::send`]), so it needs the same send
//! keys in a context of its own. `rtc` offers no accessor for them; what it does offer is the
//! crypto provider of a peer connection (`SettingEngineBuilder::with_crypto_provider`), and the
//! SRTP key derivation of RFC 3711 §4.3 runs through that provider: each SRTP context it builds
//! derives its session keys by encrypting blocks with the master key, the first block being the
//! master salt with the label and index of the session encryption key, both 0 (RFC 3711 §4.3.1:
//! `x = key_id XOR master_salt`, then AES-CM keyed by the master key). [`KeyTap`] is a provider
//! that hands every operation to `ring` (the tree's one provider) and remembers the key and that
//! first block of the first two master keys it sees: `rtc` builds its send ("local") context
//! first and its receive context second, once, when the DTLS handshake completes. The profile is
//! the one `rtc`'s transport statistics name.
//!
//! What this depends on, checked by the tests that decode forwarded media at real peers (the
//! `webrtc` crate, `rtc` and Chromium): `rtc` 0.21 derives with AES-CM from the master key in
//! order local then remote, and derives nothing else with the provider's block cipher. A new
//! `rtc` that changes either fails those tests (the peer drops every forwarded packet), and a
//! peer whose keys were not seen gets no forwarded media and a counted error, never packets under
//! a wrong key. An accessor for the exported keying material in `rtc` would replace this module.
//!
//! Each SSRC's SRTP state lives in exactly one place: the endpoint protects the forwarded
//! streams' RTP (originals and retransmissions) with [`SendProtection`], `rtc` everything else
//! (its RTCP, including the sender reports of the forwarded streams, which SRTCP keys and
//! numbers apart from SRTP).
//!
//! [`SendProtection`] derives the peer's SRTP session keys once (RFC 3711 §4.3, with the AES-CM
//! PRF for the AES-128 profiles and RFC 6188's AES-256 PRF for AES-256-GCM) and protects a
//! packet in its own buffer: AES-GCM (RFC 7714 §8) seals the payload in place with the header as
//! associated data, AES-CM (RFC 3711 §4.1.1) applies its keystream in place and appends the
//! truncated HMAC-SHA1 tag of §4.2. The rollover counter of each stream is the stream's own
//! ([`Rollover`], kept by the leg): no per-SSRC map is looked up per packet.

use std::sync::{Arc, Mutex};

use rtc::crypto::{
    AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher, CryptoAlgorithm,
    CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac, PublicKey, RTCCrypto,
    RTCCryptoProvider, RTCRandom, SecretVec, SignatureScheme, SigningKey, StreamCipher,
    StreamCipherAlgorithm,
};
use rtc::srtp::protection_profile::ProtectionProfile;

/// A master key as `rtc` used it, with the first block it derived a session key from.
struct Seen {
    key: SecretVec,
    first_block: [u8; 16],
}

/// A crypto provider for one peer connection that hands everything to `inner` and remembers the
/// SRTP master keys `rtc` derives session keys from (see the module docs).
pub(crate) struct KeyTap {
    inner: Arc<dyn RTCCryptoProvider>,
    crypto: TapCrypto,
}

struct TapCrypto {
    inner: Arc<dyn RTCCryptoProvider>,
    /// The first two master keys seen, in order: `rtc`'s send context's, then its receive
    /// context's.
    seen: Mutex<Vec<Seen>>,
}

impl std::fmt::Debug for KeyTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seen = self.crypto.seen.lock().map_or(0, |s| s.len());
        f.debug_struct("KeyTap").field("keys_seen", &seen).finish()
    }
}

impl KeyTap {
    /// A tap over the tree's default provider (`ring`).
    pub(crate) fn new() -> Result<Arc<KeyTap>, CryptoError> {
        let inner = rtc::crypto::default_provider()?;
        Ok(Arc::new(KeyTap {
            inner: inner.clone(),
            crypto: TapCrypto {
                inner,
                seen: Mutex::new(Vec::with_capacity(2)),
            },
        }))
    }

    /// The peer's send master key and salt, once the DTLS handshake completed; `None` before,
    /// or if the keys were not seen as expected.
    fn send_master(&self, profile: ProtectionProfile) -> Option<(SecretVec, Vec<u8>)> {
        let seen = self.crypto.seen.lock().ok()?;
        // Both contexts are built together: with only one seen, the handshake is not done.
        if seen.len() != 2 {
            return None;
        }
        let local = &seen[0];
        if local.key.len() != profile.key_len() {
            return None;
        }
        let salt = local.first_block[..profile.salt_len()].to_vec();
        Some((SecretVec::new(local.key.as_ref().to_vec()), salt))
    }

    /// What protects forwarded RTP as `rtc`'s send context of this peer would; `None` before
    /// the handshake completed, or if the keys were not seen as expected.
    pub(crate) fn send_protection(&self, profile: ProtectionProfile) -> Option<SendProtection> {
        let (key, salt) = self.send_master(profile)?;
        SendProtection::new(profile, key.as_ref(), &salt, self.inner.crypto())
    }
}

/// RFC 3711 §4.3.1 key labels.
const LABEL_ENCRYPTION: u8 = 0x00;
const LABEL_AUTHENTICATION: u8 = 0x01;
const LABEL_SALT: u8 = 0x02;

/// A session key of `len` bytes for `label` (RFC 3711 §4.3 with a key derivation rate of 0, as
/// DTLS-SRTP uses): AES in counter mode keyed by the master key over the master salt, the label
/// at byte 7 and the block counter in the last two bytes. The same PRF serves AES-256 (RFC 6188
/// §7), keyed by the 32-byte master key.
fn derive(
    crypto: &dyn RTCCrypto,
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    len: usize,
) -> Result<Vec<u8>, CryptoError> {
    let algorithm = if master_key.len() == 32 {
        BlockCipherAlgorithm::Aes256
    } else {
        BlockCipherAlgorithm::Aes128
    };
    let mut out = Vec::with_capacity(len.div_ceil(16) * 16);
    for counter in 0..len.div_ceil(16) {
        let mut block = [0u8; 16];
        let salt = master_salt.len().min(14);
        block[..salt].copy_from_slice(&master_salt[..salt]);
        block[7] ^= label;
        block[14..].copy_from_slice(&(counter as u16).to_be_bytes());
        crypto.block_encrypt(algorithm, master_key, &mut block)?;
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    Ok(out)
}

/// The SRTP protection of one peer's forwarded RTP (see the module docs).
pub(crate) struct SendProtection {
    cipher: SendCipher,
    tag_len: usize,
}

enum SendCipher {
    Gcm {
        aead: Box<dyn AeadCipher>,
        salt: [u8; 12],
    },
    CmSha1 {
        ctr: Box<dyn StreamCipher>,
        salt: [u8; 14],
        mac: Box<dyn Mac>,
    },
}

impl std::fmt::Debug for SendProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.cipher {
            SendCipher::Gcm { .. } => "AES-GCM",
            SendCipher::CmSha1 { .. } => "AES-CM/HMAC-SHA1",
        };
        f.debug_struct("SendProtection")
            .field("cipher", &kind)
            .field("tag_len", &self.tag_len)
            .finish()
    }
}

impl SendProtection {
    /// The session keys of `profile` derived from the master key and salt; `None` for a
    /// profile without a send path here, or a key the provider refuses.
    pub(crate) fn new(
        profile: ProtectionProfile,
        master_key: &[u8],
        master_salt: &[u8],
        crypto: &dyn RTCCrypto,
    ) -> Option<SendProtection> {
        let session_key = SecretVec::new(
            derive(
                crypto,
                master_key,
                master_salt,
                LABEL_ENCRYPTION,
                master_key.len(),
            )
            .ok()?,
        );
        let cipher = match profile {
            ProtectionProfile::AeadAes128Gcm | ProtectionProfile::AeadAes256Gcm => {
                let algorithm = if matches!(profile, ProtectionProfile::AeadAes128Gcm) {
                    AeadAlgorithm::Aes128Gcm
                } else {
                    AeadAlgorithm::Aes256Gcm
                };
                let salt = derive(crypto, master_key, master_salt, LABEL_SALT, 12).ok()?;
                SendCipher::Gcm {
                    aead: crypto.new_aead(algorithm, session_key.as_ref()).ok()?,
                    salt: salt.try_into().ok()?,
                }
            }
            ProtectionProfile::Aes128CmHmacSha1_80 | ProtectionProfile::Aes128CmHmacSha1_32 => {
                let salt = derive(crypto, master_key, master_salt, LABEL_SALT, 14).ok()?;
                let auth = SecretVec::new(
                    derive(
                        crypto,
                        master_key,
                        master_salt,
                        LABEL_AUTHENTICATION,
                        profile.auth_key_len(),
                    )
                    .ok()?,
                );
                SendCipher::CmSha1 {
                    ctr: crypto
                        .new_stream_cipher(StreamCipherAlgorithm::Aes128Ctr, session_key.as_ref())
                        .ok()?,
                    salt: salt.try_into().ok()?,
                    mac: crypto.new_hmac(HmacAlgorithm::Sha1, auth.as_ref()).ok()?,
                }
            }
            _ => return None,
        };
        let tag_len = match cipher {
            SendCipher::Gcm { .. } => profile.aead_auth_tag_len(),
            SendCipher::CmSha1 { .. } => profile.rtp_auth_tag_len(),
        };
        Some(SendProtection { cipher, tag_len })
    }

    /// The bytes protection adds to a packet.
    pub(crate) fn overhead(&self) -> usize {
        self.tag_len
    }

    /// Protects the RTP packet in `packet` (its header, the first `header_len` bytes, stays in
    /// the clear) with rollover counter `roc`, in place, and appends the tag. `packet` should
    /// have room for [`overhead`](Self::overhead) more bytes.
    pub(crate) fn protect(
        &mut self,
        packet: &mut Vec<u8>,
        header_len: usize,
        roc: u32,
    ) -> Result<(), CryptoError> {
        if packet.len() < 12 || header_len > packet.len() {
            return Err(CryptoError::OutputTooSmall {
                required: header_len.max(12),
                actual: packet.len(),
            });
        }
        let seq = [packet[2], packet[3]];
        let ssrc = [packet[8], packet[9], packet[10], packet[11]];
        match &mut self.cipher {
            SendCipher::Gcm { aead, salt } => {
                // RFC 7714 §8.1: 00 00 || SSRC || ROC || SEQ, XOR the session salt.
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&ssrc);
                iv[6..10].copy_from_slice(&roc.to_be_bytes());
                iv[10..12].copy_from_slice(&seq);
                for (v, s) in iv.iter_mut().zip(salt.iter()) {
                    *v ^= s;
                }
                let mut tag = [0u8; 16];
                let (aad, payload) = packet.split_at_mut(header_len);
                aead.seal_in_place(&iv, aad, payload, &mut tag)?;
                packet.extend_from_slice(&tag[..self.tag_len]);
            }
            SendCipher::CmSha1 { ctr, salt, mac } => {
                // RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16).
                let mut iv = [0u8; 16];
                iv[4..8].copy_from_slice(&ssrc);
                iv[8..12].copy_from_slice(&roc.to_be_bytes());
                iv[12..14].copy_from_slice(&seq);
                for (v, s) in iv.iter_mut().zip(salt.iter()) {
                    *v ^= s;
                }
                ctr.apply_keystream(&iv, &mut packet[header_len..])?;
                // §4.2: HMAC-SHA1 over the packet and the ROC, truncated.
                let mut tag = [0u8; 20];
                mac.sign(&[packet.as_slice(), &roc.to_be_bytes()], &mut tag)?;
                packet.extend_from_slice(&tag[..self.tag_len]);
            }
        }
        Ok(())
    }
}

/// A send stream's SRTP rollover counter (RFC 3711 §3.3.1): how often its sequence numbers
/// wrapped, guessed for each packet from the highest number sent (appendix A), so that a
/// retransmission of a packet from before a wrap gets its own counter.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Rollover {
    highest: Option<u16>,
    roc: u32,
}

impl Rollover {
    /// The rollover counter of the packet numbered `seq`, about to be sent.
    pub(crate) fn next(&mut self, seq: u16) -> u32 {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return self.roc;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead == 0 {
            self.roc
        } else if ahead < 0x8000 {
            // Newer: a wrap if the number went down.
            if seq < highest {
                self.roc = self.roc.wrapping_add(1);
            }
            self.highest = Some(seq);
            self.roc
        } else if seq > highest {
            // Older, from before the last wrap.
            self.roc.saturating_sub(1)
        } else {
            self.roc
        }
    }
}

/// The profile named by `rtc`'s transport statistics (`srtp_cipher`).
pub(crate) fn profile_named(name: &str) -> Option<ProtectionProfile> {
    Some(match name {
        "SRTP_AEAD_AES_128_GCM" => ProtectionProfile::AeadAes128Gcm,
        "SRTP_AEAD_AES_256_GCM" => ProtectionProfile::AeadAes256Gcm,
        "SRTP_AES128_CM_HMAC_SHA1_80" => ProtectionProfile::Aes128CmHmacSha1_80,
        "SRTP_AES128_CM_HMAC_SHA1_32" => ProtectionProfile::Aes128CmHmacSha1_32,
        _ => return None,
    })
}

/// An `rtc` RTP header that stands for a packet whose header (fixed part, CSRCs and extension
/// block) is `len` bytes long: SRTP reads only the SSRC, the sequence number and the header's
/// length from it, and this one allocates nothing. `len` is 12 plus a multiple of 4.
#[cfg(test)]
pub(crate) fn header_of_len(ssrc: u32, sequence_number: u16, len: usize) -> rtc::rtp::Header {
    debug_assert!(len >= 12 && len.is_multiple_of(4));
    rtc::rtp::Header {
        version: 2,
        sequence_number,
        ssrc,
        // 4 bytes of extension header and the rest as its padding: the same length.
        extension: len > 12,
        extensions_padding: len.saturating_sub(16),
        ..Default::default()
    }
}

impl RTCCryptoProvider for KeyTap {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

impl RTCCrypto for TapCrypto {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.crypto().hash(algorithm, data)
    }

    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        if let Ok(mut seen) = self.seen.lock()
            && seen.len() < 2
            && seen.last().is_none_or(|s| s.key.as_ref() != key)
            && let Ok(first_block) = <[u8; 16]>::try_from(&block[..])
        {
            seen.push(Seen {
                key: SecretVec::new(key.to_vec()),
                first_block,
            });
        }
        self.inner.crypto().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.inner.crypto().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.inner.crypto().new_aead(algorithm, key)
    }

    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn rtc::crypto::ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner
            .crypto()
            .verify_signature(scheme, public_key, message, signature)
    }
}

#[cfg(test)]
mod tests {
    use rtc::srtp::context::Context;

    use super::*;

    const PROFILES: [ProtectionProfile; 4] = [
        ProtectionProfile::AeadAes128Gcm,
        ProtectionProfile::AeadAes256Gcm,
        ProtectionProfile::Aes128CmHmacSha1_80,
        ProtectionProfile::Aes128CmHmacSha1_32,
    ];

    /// An RTP packet: a 12-byte header, or 20 with a one-byte extension block, and a payload.
    fn packet(ssrc: u32, seq: u16, extension: bool) -> (Vec<u8>, usize) {
        let mut p = vec![if extension { 0x90 } else { 0x80 }, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        if extension {
            p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
        }
        let header_len = p.len();
        p.extend((0..200u16).map(|i| (i as u8).wrapping_mul(7)));
        (p, header_len)
    }

    #[test]
    fn protection_matches_rtc_and_authenticates_across_a_rollover() {
        let crypto = rtc::crypto::default_provider().expect("a provider");
        let crypto = crypto.crypto();
        for profile in PROFILES {
            let key: Vec<u8> = (0..profile.key_len()).map(|i| i as u8 ^ 0x5a).collect();
            let salt: Vec<u8> = (0..profile.salt_len()).map(|i| i as u8 ^ 0xa5).collect();
            let mut ours = SendProtection::new(profile, &key, &salt, crypto).expect("keys");
            let mut theirs = Context::new(&key, &salt, profile, None, None, crypto).expect("rtc");
            let mut receiver = Context::new(&key, &salt, profile, None, None, crypto).expect("rtc");
            let mut rollover = Rollover::default();
            // Across a wrap of the sequence numbers, then a retransmission from before it.
            for (seq, extension) in [
                (65_533u16, false),
                (65_534, true),
                (65_535, false),
                (0, true),
                (1, false),
                (65_535, false),
            ] {
                let (plain, header_len) = packet(0xfeed_beef, seq, extension);
                let mut protected = plain.clone();
                ours.protect(&mut protected, header_len, rollover.next(seq))
                    .expect("protects");
                assert_eq!(protected.len(), plain.len() + ours.overhead());
                let expected = theirs.encrypt_rtp(&plain).expect("rtc protects");
                assert_eq!(&protected[..], &expected[..], "{profile:?} seq {seq}");
                // The late retransmission too: under the rollover counter of its first sending.
                let opened = receiver.decrypt_rtp(&protected).expect("authenticates");
                assert_eq!(&opened[..], &plain[..], "{profile:?} seq {seq}");
            }
        }
    }

    #[test]
    fn the_rollover_counter_follows_wraps_and_late_packets() {
        let mut r = Rollover::default();
        assert_eq!(r.next(65_000), 0);
        assert_eq!(r.next(65_535), 0);
        assert_eq!(r.next(3), 1, "wrapped");
        assert_eq!(r.next(65_534), 0, "from before the wrap");
        assert_eq!(r.next(4), 1);
        assert_eq!(r.next(30_000), 1);
        assert_eq!(r.next(2), 1, "an old one of this round");
        assert_eq!(r.next(40_000), 1);
        assert_eq!(r.next(100), 2, "wrapped again");
        let mut first = Rollover::default();
        assert_eq!(first.next(60_000), 0);
        assert_eq!(first.next(10), 1);
        assert_eq!(Rollover::default().next(7), 0);
    }
}
