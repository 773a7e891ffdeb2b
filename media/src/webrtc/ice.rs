//! ICE restart and trickle: the SDP fragments of RFC 8840 (`application/trickle-ice-sdpfrag`)
//! that WHIP `PATCH` requests carry (RFC 9725 §4.3), and the credential lines of a full SDP.

use super::WebRtcError;

/// ICE credentials (`a=ice-ufrag`, `a=ice-pwd`), checked against RFC 8839 §5.4: `ice-char`s
/// only (letters, digits, `+`, `/`), a ufrag of 4 to 256 and a password of 22 to 256 of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// The username fragment.
    pub ufrag: String,
    /// The password.
    pub pwd: String,
}

impl IceCredentials {
    /// Credentials, if both are well-formed.
    pub fn new(ufrag: &str, pwd: &str) -> Result<Self, WebRtcError> {
        let ice_chars = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        };
        if !(4..=256).contains(&ufrag.len()) || !ice_chars(ufrag) {
            return Err(WebRtcError::BadIceFragment(
                "ice-ufrag must be 4 to 256 letters, digits, '+' or '/'".into(),
            ));
        }
        if !(22..=256).contains(&pwd.len()) || !ice_chars(pwd) {
            return Err(WebRtcError::BadIceFragment(
                "ice-pwd must be 22 to 256 letters, digits, '+' or '/'".into(),
            ));
        }
        Ok(Self {
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
        })
    }
}

/// What a trickle-ICE fragment says: new credentials (an ICE restart) and/or candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceFragment {
    /// The credentials the fragment names, if any. Different from the current ones: a restart.
    pub credentials: Option<IceCredentials>,
    /// How many `a=candidate` lines it has.
    pub candidates: usize,
    /// Whether it ends gathering (`a=end-of-candidates`).
    pub end_of_candidates: bool,
}

impl IceFragment {
    /// Parses a fragment of at most `max_len` bytes (checked first). Every line must be an SDP
    /// `a=` or `m=` line (RFC 8840 §9); the ufrag and password must come together, and every
    /// section must name the same ones (the bridge bundles everything on one transport).
    pub fn parse(text: &str, max_len: usize) -> Result<Self, WebRtcError> {
        if text.len() > max_len {
            return Err(WebRtcError::SdpTooLarge {
                len: text.len(),
                max: max_len,
            });
        }
        let bad = |why: &str| WebRtcError::BadIceFragment(why.to_owned());
        let mut ufrag: Option<&str> = None;
        let mut pwd: Option<&str> = None;
        let mut candidates = 0;
        let mut end_of_candidates = false;
        for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            if let Some(value) = line.strip_prefix("a=ice-ufrag:") {
                if ufrag.is_some_and(|u| u != value) {
                    return Err(bad("the fragment names two different ice-ufrag values"));
                }
                ufrag = Some(value);
            } else if let Some(value) = line.strip_prefix("a=ice-pwd:") {
                if pwd.is_some_and(|p| p != value) {
                    return Err(bad("the fragment names two different ice-pwd values"));
                }
                pwd = Some(value);
            } else if line.starts_with("a=candidate:") {
                candidates += 1;
            } else if line == "a=end-of-candidates" {
                end_of_candidates = true;
            } else if !(line.starts_with("a=") || line.starts_with("m=")) {
                return Err(bad("a trickle-ice-sdpfrag holds only a= and m= lines"));
            }
        }
        let credentials = match (ufrag, pwd) {
            (Some(u), Some(p)) => Some(IceCredentials::new(u, p)?),
            (None, None) => None,
            _ => return Err(bad("ice-ufrag and ice-pwd must come together")),
        };
        Ok(Self {
            credentials,
            candidates,
            end_of_candidates,
        })
    }
}

/// The first `a=ice-ufrag` of an SDP.
pub(crate) fn sdp_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
}

/// Whether the first `a=ice-ufrag` and `a=ice-pwd` of an SDP are `credentials`.
pub(crate) fn has_credentials(sdp: &str, credentials: &IceCredentials) -> bool {
    let pwd = sdp
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-pwd:"));
    sdp_ufrag(sdp) == Some(credentials.ufrag.as_str()) && pwd == Some(credentials.pwd.as_str())
}

/// `sdp` with every `a=ice-ufrag` and `a=ice-pwd` line set to `credentials`.
pub(crate) fn with_credentials(sdp: &str, credentials: &IceCredentials) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(&credentials.ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(&credentials.pwd);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// The trickle-ICE fragment of an answer (RFC 8840): its `a=ice-lite`, credentials, `m=` and
/// `a=mid` lines, and candidates — what a WHIP `PATCH` that restarted ICE answers with.
pub fn ice_fragment_of_answer(answer_sdp: &str) -> String {
    let mut out = String::new();
    for line in answer_sdp.lines().map(str::trim_end) {
        let keep = line == "a=ice-lite"
            || line == "a=end-of-candidates"
            || ["m=", "a=mid:", "a=ice-ufrag:", "a=ice-pwd:", "a=candidate:"]
                .iter()
                .any(|prefix| line.starts_with(prefix));
        if keep {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PWD: &str = "abcdefghijklmnopqrstuvwx";

    #[test]
    fn a_restart_fragment_gives_its_credentials_and_counts_candidates() {
        let text = format!(
            "a=ice-options:trickle\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
             a=ice-ufrag:Ab+/\r\na=ice-pwd:{PWD}\r\n\
             a=candidate:1 1 udp 2113937151 192.0.2.1 5000 typ host\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=ice-ufrag:Ab+/\r\n\
             a=ice-pwd:{PWD}\r\na=end-of-candidates\r\n"
        );
        let fragment = IceFragment::parse(&text, 4096).unwrap();
        assert_eq!(
            fragment.credentials,
            Some(IceCredentials::new("Ab+/", PWD).unwrap())
        );
        assert_eq!(fragment.candidates, 1);
        assert!(fragment.end_of_candidates);
    }

    #[test]
    fn a_trickle_fragment_has_no_credentials() {
        let text = "a=candidate:1 1 udp 1 192.0.2.1 5000 typ host\n";
        let fragment = IceFragment::parse(text, 4096).unwrap();
        assert_eq!(fragment.credentials, None);
        assert_eq!(fragment.candidates, 1);
        assert!(!fragment.end_of_candidates);
    }

    #[test]
    fn bad_fragments_are_refused_with_reasons() {
        let long_pwd = "p".repeat(257);
        let cases = [
            ("v=0\r\n".to_owned(), "only a= and m="),
            ("a=ice-ufrag:abcd\r\n".to_owned(), "together"),
            (format!("a=ice-pwd:{PWD}\r\n"), "together"),
            (
                format!("a=ice-ufrag:abc\r\na=ice-pwd:{PWD}\r\n"),
                "ice-ufrag must",
            ),
            (
                format!("a=ice-ufrag:ab cd\r\na=ice-pwd:{PWD}\r\n"),
                "ice-ufrag must",
            ),
            (
                "a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n".to_owned(),
                "ice-pwd must",
            ),
            (
                format!("a=ice-ufrag:abcd\r\na=ice-pwd:{long_pwd}\r\n"),
                "ice-pwd must",
            ),
            (
                format!("a=ice-ufrag:abcd\r\na=ice-ufrag:abce\r\na=ice-pwd:{PWD}\r\n"),
                "two different ice-ufrag",
            ),
        ];
        for (text, why) in cases {
            let err = IceFragment::parse(&text, 4096).unwrap_err();
            assert!(err.to_string().contains(why), "{text:?}: {err}");
        }
        assert!(matches!(
            IceFragment::parse(&"a=x\n".repeat(100), 64),
            Err(WebRtcError::SdpTooLarge { max: 64, .. })
        ));
    }

    #[test]
    fn credentials_are_replaced_everywhere_and_read_back() {
        let sdp = "v=0\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword\r\nm=audio 9 X 0\r\n\
                   a=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword\r\n";
        let new = IceCredentials::new("new1", PWD).unwrap();
        let out = with_credentials(sdp, &new);
        assert_eq!(out.matches("a=ice-ufrag:new1\r\n").count(), 2);
        assert_eq!(out.matches(&format!("a=ice-pwd:{PWD}\r\n")).count(), 2);
        assert!(!out.contains("old"));
        assert_eq!(sdp_ufrag(&out), Some("new1"));
        assert!(has_credentials(&out, &new));
        assert!(!has_credentials(sdp, &new));
        let same_ufrag = IceCredentials::new("new1", &PWD.repeat(2)).unwrap();
        assert!(!has_credentials(&out, &same_ufrag));
    }

    #[test]
    fn the_answer_fragment_keeps_ice_lines_only() {
        let answer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\na=ice-lite\r\nm=video 9 X 96\r\na=mid:0\r\n\
                      a=ice-ufrag:uf12\r\na=ice-pwd:pw\r\na=rtpmap:96 VP8/90000\r\n\
                      a=candidate:1 1 udp 1 127.0.0.1 4478 typ host\r\na=end-of-candidates\r\n";
        assert_eq!(
            ice_fragment_of_answer(answer),
            "a=ice-lite\r\nm=video 9 X 96\r\na=mid:0\r\na=ice-ufrag:uf12\r\na=ice-pwd:pw\r\n\
             a=candidate:1 1 udp 1 127.0.0.1 4478 typ host\r\na=end-of-candidates\r\n"
        );
    }
}
