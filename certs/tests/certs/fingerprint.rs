//! Fingerprint encodings: known vectors and round trips.

use proptest::prelude::*;
use strait_certs::Fingerprint;

#[test]
fn known_digest_of_the_empty_input() {
    // SHA-256("") is e3b0c442…b855.
    let fp = Fingerprint::of(b"");
    assert_eq!(
        fp.to_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        fp.to_base64(),
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    );
    assert!(fp.to_hex_colon().starts_with("E3:B0:C4:42:98:FC:"));
    assert!(fp.to_hex_colon().ends_with(":78:52:B8:55"));
    assert_eq!(hex::encode(fp.as_bytes()), fp.to_hex());
}

proptest! {
    #[test]
    fn every_text_form_parses_back(bytes in any::<[u8; 32]>()) {
        let fp = Fingerprint::from_bytes(bytes);
        prop_assert_eq!(fp.to_hex().parse::<Fingerprint>(), Ok(fp));
        prop_assert_eq!(fp.to_hex_colon().parse::<Fingerprint>(), Ok(fp));
        prop_assert_eq!(fp.to_base64().parse::<Fingerprint>(), Ok(fp));
        prop_assert_eq!(fp.to_hex_colon().len(), 95);
        prop_assert_eq!(fp.to_base64().len(), 44);
        prop_assert_eq!(hex::decode(fp.to_hex()).unwrap(), bytes.to_vec());
        prop_assert_eq!(<[u8; 32]>::from(fp), bytes);
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in ".{0,100}") {
        let _ = text.parse::<Fingerprint>();
    }
}
