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
//! Each SSRC's SRTP state lives in exactly one context: the endpoint's protects the forwarded
//! streams' RTP (originals and retransmissions), `rtc`'s everything else (its RTCP, including
//! the sender reports of the forwarded streams, which SRTCP keys and numbers apart from SRTP).

use std::sync::{Arc, Mutex};

use rtc::crypto::{
    AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher, CryptoAlgorithm,
    CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac, PublicKey, RTCCrypto,
    RTCCryptoProvider, RTCRandom, SecretVec, SignatureScheme, SigningKey, StreamCipher,
    StreamCipherAlgorithm,
};
use rtc::srtp::context::Context;
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

    /// A context that protects RTP as `rtc`'s send context of this peer would, once the DTLS
    /// handshake completed; `None` before, or if the keys were not seen as expected.
    pub(crate) fn send_context(&self, profile: ProtectionProfile) -> Option<Context> {
        let seen = self.crypto.seen.lock().ok()?;
        // Both contexts are built together: with only one seen, the handshake is not done.
        if seen.len() != 2 {
            return None;
        }
        let local = &seen[0];
        if local.key.len() != profile.key_len() {
            return None;
        }
        let salt = &local.first_block[..profile.salt_len()];
        Context::new(
            local.key.as_ref(),
            salt,
            profile,
            None,
            None,
            self.inner.crypto(),
        )
        .ok()
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
