//! The fuzz targets' checks, run as plain tests: over every file of the committed seed corpus
//! (`fuzz/corpus/<target>/`) and over a seeded sweep of mutations of it, so that they run in CI
//! where cargo-fuzz cannot.
//!
//! The checks themselves live in `fuzz/src/checks.rs`, shared with the fuzz targets. This module
//! also holds the seed generator: `STRAIT_REGENERATE_CORPUS=1 cargo test -p strait-media --test
//! media fuzz_corpus` rewrites the generated seeds (see `fuzz/README.md`); without the variable the
//! test checks that the committed seeds are exactly what the generator produces. The harness is
//! the one of `protocol/tests/protocol/fuzz_corpus.rs`, with boundary bytes of these formats.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use checks::OfferInput;

/// One fuzz target: its name (the corpus directory) and its check.
struct Target {
    name: &'static str,
    check: fn(&[u8]),
}

const TARGETS: [Target; 3] = [
    Target {
        name: "rtp_parse",
        check: checks::rtp_parse,
    },
    Target {
        name: "webrtc_demux",
        check: checks::webrtc_demux,
    },
    Target {
        name: "offer_check",
        check: checks::offer_check,
    },
];

/// Inputs of the mutation sweep, over all targets.
const SWEEP_INPUTS: usize = 30_000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// The committed seeds of `target`, sorted by name so that the sweep is deterministic.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("readable corpus directory").path();
            let name = path
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("readable seed"))
        })
        .collect();
    files.sort();
    files
}

/// Runs `check` on `data`, printing the input in hex before passing on a failure.
fn run(target: &Target, what: &str, data: &[u8]) {
    if let Err(panic) = std::panic::catch_unwind(|| (target.check)(data)) {
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        eprintln!("{} failed on {what}: {hex}", target.name);
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn every_committed_seed_passes_its_target() {
    for target in &TARGETS {
        let files = corpus(target.name);
        assert!(
            files.len() >= 10,
            "{} has only {} seeds",
            target.name,
            files.len()
        );
        for (name, data) in &files {
            run(target, name, data);
        }
    }
}

#[test]
fn the_seed_corpus_stays_small() {
    let (mut count, mut bytes) = (0, 0);
    for target in &TARGETS {
        for (_, data) in corpus(target.name) {
            count += 1;
            bytes += data.len();
        }
    }
    assert!(
        count < 100 && bytes < 200 * 1024,
        "{count} seeds, {bytes} bytes"
    );
}

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes where these parsers decide: RFC 7983 first-byte ranges (STUN 0..=3, DTLS 20..=63, TURN
/// channels 64..=79, RTP 128..=191), RTP's V/P/X/CC bits, STUN's USERNAME type, and SDP's
/// separators.
const INTERESTING: [u8; 16] = [
    0x00, 0x01, 0x03, 0x06, 0x0f, 0x10, 0x16, 0x20, 0x40, 0x7f, 0x80, 0xbf, 0xff, b':', b'\n', b'=',
];

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[(String, Vec<u8>)]) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let keep = rng.below(data.len() + 1);
                data.truncate(keep);
            }
            3 => {
                // Splice: a prefix of this input, then a suffix of another seed.
                let (_, other) = &others[rng.below(others.len())];
                let cut = rng.below(data.len() + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            4 => {
                let i = rng.below(data.len() + 1);
                let b = rng.next() as u8;
                data.insert(i, b);
            }
            5 if !data.is_empty() => {
                // Repeat a slice (repeated attributes, lines, extension words).
                let start = rng.below(data.len());
                let end = start + rng.below((data.len() - start).min(256)) + 1;
                let copy = data[start..end].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, copy);
            }
            _ if !data.is_empty() => {
                let i = rng.below(data.len());
                data.remove(i);
            }
            _ => data.push(rng.next() as u8),
        }
    }
}

#[test]
fn seeded_mutation_sweep_passes_every_target() {
    let mut rng = Rng(0x5354_5241_4954_0002);
    for target in &TARGETS {
        let files = corpus(target.name);
        for i in 0..SWEEP_INPUTS / TARGETS.len() {
            let (name, seed) = &files[rng.below(files.len())];
            let mut data = seed.clone();
            mutate(&mut rng, &mut data, &files);
            run(target, &format!("mutation {i} of {name}"), &data);
        }
    }
}

// --- seed generator ---

/// A seed: target, file name, bytes. Names say `valid-` for inputs the parser accepts (or, for
/// `webrtc_demux`, datagrams that really arrive on the port) and `hostile-` for the ones it must
/// refuse cleanly.
struct Seed {
    target: &'static str,
    name: String,
    bytes: Vec<u8>,
}

/// An RTP packet: version 2, payload type 96 (`| 0x80` with `marker`), sequence 0x1234,
/// timestamp 3000, SSRC 0xcafebabe, `csrc` CSRCs, an extension (`profile`, its data, padded to
/// words) if given, the payload, and `padding` bytes of padding (the last one counting them).
fn rtp(
    marker: bool,
    csrc: u8,
    extension: Option<(u16, &[u8])>,
    payload: &[u8],
    padding: u8,
) -> Vec<u8> {
    let mut out = vec![0x80 | csrc, 96 | if marker { 0x80 } else { 0 }];
    out.extend_from_slice(&0x1234u16.to_be_bytes());
    out.extend_from_slice(&3000u32.to_be_bytes());
    out.extend_from_slice(&0xcafe_babeu32.to_be_bytes());
    for i in 0..csrc {
        out.extend_from_slice(&[0, 0, 0x10, i]);
    }
    if let Some((profile, data)) = extension {
        out[0] |= 0x10;
        let words = data.len().div_ceil(4);
        out.extend_from_slice(&profile.to_be_bytes());
        out.extend_from_slice(&u16::try_from(words).expect("short").to_be_bytes());
        out.extend_from_slice(data);
        out.resize(out.len() + words * 4 - data.len(), 0);
    }
    out.extend_from_slice(payload);
    if padding > 0 {
        out[0] |= 0x20;
        out.resize(out.len() + usize::from(padding) - 1, 0);
        out.push(padding);
    }
    out
}

/// A STUN message (RFC 8489 §5, §14): `kind`, the magic cookie, a fixed transaction id and the
/// attributes, each padded to four bytes. The header's length is the attributes' unless
/// `declared` says otherwise.
fn stun(kind: u16, attributes: &[(u16, &[u8])], declared: Option<u16>) -> Vec<u8> {
    let mut body = Vec::new();
    for (attribute, value) in attributes {
        body.extend_from_slice(&attribute.to_be_bytes());
        body.extend_from_slice(&u16::try_from(value.len()).expect("short").to_be_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().div_ceil(4) * 4, 0);
    }
    let len = declared.unwrap_or_else(|| u16::try_from(body.len()).expect("short"));
    let mut out = kind.to_be_bytes().to_vec();
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    out.extend_from_slice(b"strait-tx-id");
    out.extend_from_slice(&body);
    out
}

const BINDING_REQUEST: u16 = 0x0001;
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const PRIORITY: u16 = 0x0024;
const USE_CANDIDATE: u16 = 0x0025;
const FINGERPRINT: u16 = 0x8028;
const ICE_CONTROLLING: u16 = 0x802a;

/// A Binding request as a browser sends it (attribute order and sizes of Chromium's), with
/// `username` and made-up integrity and fingerprint values: the classifier checks neither.
fn binding_request(username: &[u8]) -> Vec<u8> {
    stun(
        BINDING_REQUEST,
        &[
            (USERNAME, username),
            (0xc057, &[0, 1, 0, 10]),
            (ICE_CONTROLLING, &[7; 8]),
            (USE_CANDIDATE, &[]),
            (PRIORITY, &0x6e7f_1eff_u32.to_be_bytes()),
            (MESSAGE_INTEGRITY, &[0x5a; 20]),
            (FINGERPRINT, &[0xa5; 4]),
        ],
        None,
    )
}

/// An offer shaped like Chromium's (audio and video, BUNDLE, the usual extensions and codecs)
/// with `video_extra` lines appended to its video section.
fn offer(video_extra: &str) -> String {
    let transport = "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:Hb3c\r\na=ice-pwd:Xk4oV0Dy8DLmCPVmUPpNj8bR\r\na=ice-options:trickle\r\n\
         a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:\
         DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\na=setup:actpass\r\n";
    format!(
        "v=0\r\no=- 4215775240449105457 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS stream\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n{transport}a=mid:0\r\n\
         a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
         a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
         a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=sendrecv\r\na=msid:stream audio-track\r\na=rtcp-mux\r\n\
         a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n\
         a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\n\
         a=rtpmap:126 telephone-event/8000\r\na=ssrc:1001 cname:strait\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 45 46 102 103\r\n{transport}a=mid:1\r\n\
         a=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r\n\
         a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
         a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
         a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n\
         a=sendrecv\r\na=msid:stream video-track\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
         a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\n\
         a=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
         a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
         a=rtpmap:98 VP9/90000\r\na=rtcp-fb:98 nack pli\r\na=fmtp:98 profile-id=0\r\n\
         a=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\n\
         a=rtpmap:45 AV1/90000\r\na=fmtp:45 level-idx=5;profile=0;tier=0\r\n\
         a=rtpmap:46 rtx/90000\r\na=fmtp:46 apt=45\r\n\
         a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
         a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
         a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n{video_extra}"
    )
}

/// A short offer: one section of `kind` on `port` with one `a=rtpmap` line, plus `extra` lines.
fn small_offer(kind: &str, port: u16, rtpmap: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         m={kind} {port} UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
         a=rtpmap:96 {rtpmap}\r\n{extra}"
    )
}

fn seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target, name: &str, bytes| {
        seeds.push(Seed {
            target,
            name: name.to_owned(),
            bytes,
        });
    };

    // rtp_parse: whole packets.
    let rp = "rtp_parse";
    add(rp, "valid-min", rtp(false, 0, None, &[], 0));
    add(
        rp,
        "valid-opus-marker",
        rtp(true, 0, None, &[0xfc, 0xff, 0xfe], 0),
    );
    add(rp, "valid-csrc-15", rtp(false, 15, None, &[1, 2, 3], 0));
    // One-byte header extensions (RFC 8285 §4.2): sdes:mid "1" and rtp-stream-id "q".
    add(
        rp,
        "valid-one-byte-extension",
        rtp(
            false,
            0,
            Some((0xbede, &[0x40, b'1', 0x90, b'q'])),
            &[9; 20],
            0,
        ),
    );
    add(
        rp,
        "valid-two-byte-extension",
        rtp(
            false,
            2,
            Some((0x1000, &[4, 3, b'h', b'i', b'!', 0, 0])),
            &[9; 20],
            0,
        ),
    );
    add(rp, "valid-padding", rtp(false, 0, None, &[1, 2, 3, 4], 4));
    add(rp, "valid-padding-only", rtp(false, 0, None, &[], 255));
    // VP8 descriptor X=1 S=1 PID=0, I with a 15-bit picture id, then a key frame header (P=0).
    add(
        rp,
        "valid-vp8-keyframe",
        rtp(
            true,
            0,
            None,
            &[0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00, 0x9d],
            0,
        ),
    );
    // VP9 descriptor I=1 L=1 B=1 with a 7-bit picture id and spatial id 0.
    add(
        rp,
        "valid-vp9-keyframe",
        rtp(false, 0, None, &[0xa8, 0x05, 0x00, 0x82, 0x49, 0x83], 0),
    );
    // H.264 STAP-A carrying an SPS, and an FU-A starting an IDR slice.
    add(
        rp,
        "valid-h264-stap-a-sps",
        rtp(
            false,
            0,
            None,
            &[
                0x78, 0x00, 0x04, 0x67, 0x42, 0xe0, 0x1f, 0x00, 0x02, 0x68, 0xce,
            ],
            0,
        ),
    );
    add(
        rp,
        "valid-h264-fu-a-idr",
        rtp(false, 0, None, &[0x7c, 0x85, 0x88, 0x84], 0),
    );
    add(
        rp,
        "valid-av1-new-sequence",
        rtp(true, 0, None, &[0x18, 0x0a, 0x0b], 0),
    );
    add(rp, "hostile-empty", vec![]);
    add(
        rp,
        "hostile-11-bytes",
        rtp(false, 0, None, &[], 0)[..11].to_vec(),
    );
    let mut v0 = rtp(false, 0, None, &[1], 0);
    v0[0] &= 0x3f;
    add(rp, "hostile-version-0", v0);
    let mut v3 = rtp(false, 0, None, &[1], 0);
    v3[0] |= 0xc0;
    add(rp, "hostile-version-3", v3);
    add(
        rp,
        "hostile-csrc-overflow",
        rtp(false, 15, None, &[], 0)[..40].to_vec(),
    );
    let mut ext_cut = rtp(false, 0, None, &[], 0);
    ext_cut[0] |= 0x10;
    ext_cut.extend_from_slice(&[0xbe, 0xde]);
    add(rp, "hostile-extension-header-cut", ext_cut);
    let mut ext_long = rtp(false, 0, Some((0xbede, &[0x10, 1, 0, 0])), &[0; 8], 0);
    ext_long[14..16].copy_from_slice(&[0xff, 0xff]);
    add(rp, "hostile-extension-length-65535", ext_long);
    let mut pad_zero = rtp(false, 0, None, &[1, 2, 3], 0);
    pad_zero[0] |= 0x20;
    pad_zero.push(0);
    add(rp, "hostile-padding-zero", pad_zero);
    let mut pad_over = rtp(false, 0, None, &[1, 2, 3], 0);
    pad_over[0] |= 0x20;
    pad_over.push(5);
    add(rp, "hostile-padding-over-payload", pad_over);
    let mut pad_header = rtp(false, 1, None, &[], 0);
    pad_header[0] |= 0x20;
    add(rp, "hostile-padding-in-header", pad_header);

    // webrtc_demux: datagrams on the bridge's port.
    let wd = "webrtc_demux";
    add(wd, "valid-binding-request", binding_request(b"Hb3c:f00d"));
    add(
        wd,
        "valid-binding-request-long-ufrag",
        binding_request(format!("{}:{}", "u".repeat(256), "c".repeat(256)).as_bytes()),
    );
    add(
        wd,
        "valid-binding-request-username-later",
        stun(
            BINDING_REQUEST,
            &[
                (PRIORITY, &[1, 2, 3, 4]),
                (0xc057, &[0, 1, 0]),
                (USERNAME, b"abcd:efgh"),
            ],
            None,
        ),
    );
    add(
        wd,
        "valid-binding-response",
        stun(
            0x0101,
            &[(0x0020, &[0, 1, 0x2b, 0x4c, 0x5e, 0x12, 0xa4, 0x43])],
            None,
        ),
    );
    // DTLS 1.2 ClientHello record header (content type 22, version fe fd) and the start of one.
    add(
        wd,
        "valid-dtls-client-hello",
        vec![
            22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 1, 0, 0, 0x14, 0, 0, 0, 0, 0, 0, 0,
            0x14, 0xfe, 0xfd,
        ],
    );
    add(wd, "valid-srtp", rtp(true, 0, None, &[0x5a; 40], 0));
    // An SRTCP sender report header (payload type 200) and an encrypted-looking tail.
    let mut srtcp = vec![0x80, 200, 0, 6, 0xca, 0xfe, 0xba, 0xbe];
    srtcp.extend_from_slice(&[0x33; 30]);
    add(wd, "valid-srtcp", srtcp);
    add(
        wd,
        "valid-turn-channel-data",
        vec![0x40, 0x00, 0, 4, 1, 2, 3, 4],
    );
    add(
        wd,
        "valid-zrtp",
        vec![0x10, 0, 0, 1, b'Z', b'R', b'T', b'P'],
    );
    add(wd, "hostile-empty", vec![]);
    add(
        wd,
        "hostile-stun-19-bytes",
        binding_request(b"a:b")[..19].to_vec(),
    );
    let mut bad_cookie = binding_request(b"Hb3c:f00d");
    bad_cookie[4] ^= 0xff;
    add(wd, "hostile-bad-cookie", bad_cookie);
    add(
        wd,
        "hostile-username-no-colon",
        binding_request(b"Hb3cf00d"),
    );
    add(
        wd,
        "hostile-username-empty-ufrag",
        binding_request(b":f00d"),
    );
    add(
        wd,
        "hostile-username-not-utf8",
        binding_request(&[b'H', 0xff, 0xfe, b':', b'c']),
    );
    let mut overrun = binding_request(b"Hb3c:f00d");
    overrun[22..24].copy_from_slice(&[0x01, 0x00]);
    add(wd, "hostile-username-overruns", overrun);
    add(
        wd,
        "hostile-declared-length-before-username",
        stun(
            BINDING_REQUEST,
            &[(PRIORITY, &[1, 2, 3, 4]), (USERNAME, b"Hb3c:x")],
            Some(8),
        ),
    );
    add(
        wd,
        "hostile-declared-length-65535",
        stun(BINDING_REQUEST, &[(USERNAME, b"Hb3c:x")], Some(0xffff)),
    );
    let mut trailing = binding_request(b"Hb3c:f00d");
    trailing.extend_from_slice(&stun(BINDING_REQUEST, &[(USERNAME, b"evil:x")], None));
    add(wd, "hostile-second-message-after-declared", trailing);
    let many: Vec<(u16, &[u8])> = std::iter::repeat_n((0x8022, &[][..]), 300)
        .chain([(USERNAME, &b"late:x"[..])])
        .collect();
    add(
        wd,
        "hostile-300-attributes",
        stun(BINDING_REQUEST, &many, None),
    );
    let mut unpadded = stun(BINDING_REQUEST, &[(USERNAME, b"Hb3c:x")], None);
    unpadded.truncate(unpadded.len() - 2);
    let declared = u16::try_from(unpadded.len() - 20).expect("short");
    unpadded[2..4].copy_from_slice(&declared.to_be_bytes());
    add(wd, "hostile-username-unpadded-at-end", unpadded);

    // offer_check: header byte (limit index), then the text. Index 0 is 64 KiB, 1 is 0, 3 is
    // 100, 4 is 1000, 7 is no limit.
    let oc = "offer_check";
    let simulcast = "a=rid:q send max-br=150000\r\na=rid:h send max-width=640;max-height=360\r\n\
                     a=rid:f send\r\na=simulcast:send q;h;~f\r\n";
    add(
        oc,
        "valid-chromium",
        OfferInput::build(0, offer("").as_bytes()),
    );
    add(
        oc,
        "valid-chromium-simulcast",
        OfferInput::build(0, offer(simulcast).as_bytes()),
    );
    add(
        oc,
        "valid-simulcast-five-rids",
        OfferInput::build(
            7,
            small_offer(
                "video",
                9,
                "vp8/90000",
                "a=rid:a send\r\na=rid:b send\r\na=rid:c send\r\na=rid:d send\r\n\
                 a=rid:e recv\r\na=simulcast:send a;b;c;d recv e\r\n",
            )
            .as_bytes(),
        ),
    );
    add(
        oc,
        "valid-audio-opus",
        OfferInput::build(4, small_offer("audio", 9, "opus/48000/2", "").as_bytes()),
    );
    add(
        oc,
        "valid-video-h264-lowercase",
        OfferInput::build(4, small_offer("video", 9, "h264/90000", "").as_bytes()),
    );
    add(
        oc,
        "valid-ice-fragment",
        OfferInput::build(
            4,
            b"a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\n\
              a=mid:0\r\na=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\n\
              a=end-of-candidates\r\n",
        ),
    );
    add(oc, "hostile-empty", OfferInput::build(0, b""));
    add(
        oc,
        "hostile-not-sdp",
        OfferInput::build(0, b"this is not sdp"),
    );
    add(
        oc,
        "hostile-over-limit",
        OfferInput::build(3, offer("").as_bytes()),
    );
    add(oc, "hostile-limit-0", OfferInput::build(1, b"v=0\r\n"));
    add(
        oc,
        "hostile-no-media",
        OfferInput::build(
            4,
            b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
              m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n",
        ),
    );
    add(
        oc,
        "hostile-port-0",
        OfferInput::build(4, small_offer("video", 0, "VP8/90000", "").as_bytes()),
    );
    add(
        oc,
        "hostile-unsupported-codecs",
        OfferInput::build(
            4,
            small_offer("audio", 9, "G722/8000", "a=rtpmap:0 PCMU/8000\r\n").as_bytes(),
        ),
    );
    add(
        oc,
        "hostile-simulcast-on-audio",
        OfferInput::build(
            4,
            small_offer(
                "audio",
                9,
                "opus/48000/2",
                "a=rid:q send\r\na=simulcast:send q\r\n",
            )
            .as_bytes(),
        ),
    );
    add(
        oc,
        "hostile-simulcast-without-mid",
        OfferInput::build(
            4,
            small_offer(
                "video",
                9,
                "VP8/90000",
                "a=rid:q send\r\na=simulcast:send q\r\n",
            )
            .replace("a=mid:0\r\n", "")
            .as_bytes(),
        ),
    );
    add(
        oc,
        "hostile-simulcast-rid-undeclared",
        OfferInput::build(
            4,
            small_offer(
                "video",
                9,
                "VP8/90000",
                "a=rid:q send\r\na=simulcast:send q;h\r\n",
            )
            .as_bytes(),
        ),
    );
    add(
        oc,
        "hostile-simulcast-twice",
        OfferInput::build(
            4,
            small_offer(
                "video",
                9,
                "VP8/90000",
                "a=rid:q send\r\na=simulcast:send q\r\na=simulcast:send q\r\n",
            )
            .as_bytes(),
        ),
    );
    add(
        oc,
        "hostile-rid-too-long",
        OfferInput::build(
            4,
            small_offer(
                "video",
                9,
                "VP8/90000",
                "a=rid:qqqqqqqqqqqqqqqqq send\r\na=simulcast:send qqqqqqqqqqqqqqqqq\r\n",
            )
            .as_bytes(),
        ),
    );
    add(
        oc,
        "hostile-huge-numbers",
        OfferInput::build(
            0,
            small_offer(
                "video",
                65535,
                "VP8/99999999999999999999",
                "a=rid:q send max-br=99999999999;max-width=70000\r\na=simulcast:send q\r\n",
            )
            .replace("96\r\n", "96 4294967296 -1\r\n")
            .as_bytes(),
        ),
    );
    add(
        oc,
        "hostile-fragment-two-ufrags",
        OfferInput::build(
            4,
            b"a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=ice-ufrag:other\r\n",
        ),
    );
    let mut not_utf8 = small_offer("audio", 9, "opus/48000/2", "").into_bytes();
    not_utf8.splice(20..20, [0xff, 0xfe, 0xc3]);
    add(oc, "hostile-invalid-utf8", OfferInput::build(0, &not_utf8));
    seeds
}

#[test]
fn generated_seeds_pass_their_targets() {
    for seed in seeds() {
        let target = TARGETS
            .iter()
            .find(|t| t.name == seed.target)
            .expect("a target");
        run(target, &seed.name, &seed.bytes);
    }
}

/// With `STRAIT_REGENERATE_CORPUS=1`, writes the generated seeds into `fuzz/corpus/<target>/`
/// (files it does not generate, such as crashes kept as regressions, are left alone). Without it,
/// checks that every generated seed is committed unchanged, so a change of the generator cannot
/// leave the corpus stale.
#[test]
fn committed_seeds_match_the_generator() {
    let regenerate = std::env::var_os("STRAIT_REGENERATE_CORPUS").is_some_and(|v| v == "1");
    for seed in seeds() {
        let dir = corpus_dir(seed.target);
        let path = dir.join(&seed.name);
        if regenerate {
            std::fs::create_dir_all(&dir).expect("corpus directory");
            std::fs::write(&path, &seed.bytes).expect("seed written");
        } else {
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{} missing ({e}); regenerate with STRAIT_REGENERATE_CORPUS=1",
                    path.display()
                )
            });
            assert_eq!(
                committed,
                seed.bytes,
                "{} is stale; regenerate with STRAIT_REGENERATE_CORPUS=1",
                path.display()
            );
        }
    }
}
