//! TLS identities for the Strait gateway: short-lived development certificates that browsers
//! trust by hash, their fingerprints, the policy that rotates them, and loading an operator's PEM
//! chain and key.
//!
//! # What it is
//!
//! - [`Identity`]: a certificate chain and private key in the types rustls takes
//!   ([`CertificateDer`](rustls_pki_types::CertificateDer),
//!   [`PrivateKeyDer`](rustls_pki_types::PrivateKeyDer)), with the leaf's validity and SHA-256
//!   [`Fingerprint`]s computed once. `Debug` never prints the key.
//! - [`Identity::generate_dev`]: a self-signed ECDSA P-256 certificate for `localhost`,
//!   `127.0.0.1`, `::1` and configured names, valid from one hour before `now` for at most 14
//!   days in all, as WebTransport's `serverCertificateHashes` requires.
//! - [`Fingerprint`]: the SHA-256 of the leaf DER (for `serverCertificateHashes` and pinning Rust
//!   clients) or of its SubjectPublicKeyInfo (for Chromium's
//!   `--ignore-certificate-errors-spki-list`), as bytes, base64 or `AB:CD:…` hex.
//! - [`RotationPolicy`] and [`RotationState`]: a sans-IO rule for when to mint the next dev
//!   identity, when to serve it, which hashes to publish meanwhile and when to forget the old one.
//! - [`Identity::from_pem_files`]: production loading, with a [`LoadError`] variant for each way
//!   the files can be wrong (missing, unreadable, empty, mismatched, expired, …).
//!
//! # What it is not
//!
//! No I/O besides reading and writing the PEM files you name, no clock, no TLS config: the
//! gateway passes `now`, watches files, builds its rustls/quinn config from
//! [`Identity::to_parts`] and serves the hashes. It does not verify chains against trust anchors
//! and does not speak ACME. The only crypto provider is ring. Key generation draws from the
//! operating system's RNG, which is the one randomness this crate does not take as an argument.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use strait_certs::{DevIdentityConfig, Identity, RotationAction, RotationPolicy};
//!
//! // The caller owns the clock.
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
//! let config = DevIdentityConfig { names: vec!["gw.test".into()], ..Default::default() };
//! let identity = Identity::generate_dev(&config, now)?;
//!
//! assert_eq!(identity.not_before(), now - Duration::from_secs(3600));
//! let hash = identity.fingerprint();
//! println!("serverCertificateHashes value (base64): {}", hash.to_base64());
//! println!("--ignore-certificate-errors-spki-list={}", identity.spki_fingerprint().to_base64());
//! println!("pin: {hash}"); // AB:CD:…
//!
//! // rustls: builder.with_single_cert(chain, key)
//! let (chain, _key) = identity.to_parts();
//! assert_eq!(chain.len(), 1);
//!
//! // Nothing to do for the first ten days.
//! let policy = RotationPolicy::default();
//! let decision = policy.decide(&identity.info(), None, None, now);
//! assert_eq!(decision.action, RotationAction::Wait);
//! assert_eq!(decision.publish, vec![hash]);
//! # Ok::<(), strait_certs::GenerateError>(())
//! ```
//!
//! Loading an operator's files checks them against the caller's `now`:
//!
//! ```no_run
//! # use std::{path::Path, time::SystemTime};
//! # fn load(now: SystemTime) -> Result<(), strait_certs::LoadError> {
//! let identity = strait_certs::Identity::from_pem_files(
//!     Path::new("/etc/strait/chain.pem"),
//!     Path::new("/etc/strait/key.pem"),
//!     now,
//! )?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod dev;
mod fingerprint;
mod identity;
mod load;
pub mod rotation;

pub use dev::{
    DEFAULT_DEV_NAMES, DEV_BACKDATE, DevIdentityConfig, GenerateError, MAX_DEV_VALIDITY,
};
pub use fingerprint::{Fingerprint, ParseFingerprintError};
pub use identity::{Identity, IdentityInfo, KeyAlgorithm};
pub use load::LoadError;
pub use rotation::{
    RotationAction, RotationDecision, RotationPolicy, RotationPolicyError, RotationState,
};
