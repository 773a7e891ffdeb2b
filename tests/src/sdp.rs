//! What the tests read from SDP: payload types and candidates.

use std::net::SocketAddr;

/// The payload type an SDP maps to the codec `name` (an `a=rtpmap` encoding name, compared
/// case-insensitively). Panics when there is none.
pub fn payload_type_of(sdp: &str, name: &str) -> u8 {
    let prefix = format!("{}/", name.to_ascii_uppercase());
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .find_map(|l| {
            let (pt, codec) = l.split_once(' ')?;
            codec
                .to_ascii_uppercase()
                .starts_with(&prefix)
                .then(|| pt.parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("the SDP maps no {name}"))
}

/// The addresses of an SDP's host candidates, each once (every section may repeat them).
pub fn host_candidates(sdp: &str) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = sdp
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            let fields: Vec<&str> = c.split_whitespace().collect();
            (fields.get(7) == Some(&"host"))
                .then(|| {
                    format!("{}:{}", fields.get(4)?, fields.get(5)?)
                        .parse()
                        .ok()
                })
                .flatten()
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// The ports of every candidate line of an SDP.
pub fn candidate_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .filter_map(|c| c.split_whitespace().nth(5))
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_payload_types_and_host_candidates() {
        let sdp = "m=video 9 X 96 98\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:98 vp9/90000\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 4478 typ host\r\n\
                   a=candidate:2 1 udp 16777215 127.0.0.1 5000 typ relay raddr 0.0.0.0 rport 0\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 4478 typ host\r\n";
        assert_eq!(payload_type_of(sdp, "vp8"), 96);
        assert_eq!(payload_type_of(sdp, "VP9"), 98);
        assert_eq!(
            host_candidates(sdp),
            vec!["127.0.0.1:4478".parse::<SocketAddr>().unwrap()]
        );
    }
}
