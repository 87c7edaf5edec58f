//! The official OpenWrt usign public keys that sign target `sha256sums` files.
//!
//! Data only (reference §2.4, from the "OpenWrt Public Keys" page and the
//! `openwrt-keyring` package). Keys are looked up by the signature's key id, so one keyring
//! serves every release line. Adding a key here is a trust decision: cite its source.

/// One official key.
#[derive(Debug, Clone, Copy)]
pub struct OfficialKey {
    /// 16 lowercase hex digits of the keynum.
    pub key_id: &'static str,
    /// What OpenWrt uses the key for.
    pub used_for: &'static str,
    /// The base64 line of the usign public key file.
    pub public_key: &'static str,
}

/// Every official usign key imagegen trusts by default.
pub const OFFICIAL_KEYS: &[OfficialKey] = &[
    OfficialKey {
        key_id: "792d9d9b39f180dc",
        used_for: "17.01 releases",
        public_key: "RWR5LZ2bOfGA3FGliZosEDhodiAKDOISmQs/mmjo4rhcbFtqkibJqMzo",
    },
    OfficialKey {
        key_id: "1035ac73cc4e59e3",
        used_for: "18.06 releases",
        public_key: "RWQQNaxzzE5Z41cVmEh2rilAPKLsyfPKm+S4BJWA1Yv+LP1hKebmGtXi",
    },
    OfficialKey {
        key_id: "f94b9dd6febac963",
        used_for: "19.07 releases",
        public_key: "RWT5S53W/rrJY9BiIod3JF04AZ/eU1xDpVOb+rjZzAQBEcoETGx8BXEK",
    },
    OfficialKey {
        key_id: "2f8b0b98e08306bf",
        used_for: "21.02 releases",
        public_key: "RWQviwuY4IMGvwLfs6842A0m4EZU1IjczTxKMSk3BQP8DAQLHBwdQiaU",
    },
    OfficialKey {
        key_id: "4d017e6f1ed5d616",
        used_for: "22.03 releases",
        public_key: "RWRNAX5vHtXWFmt+n5di7XX8rTu0w+c8X7Ihv4oCyD6tzsUwmH0A6kO0",
    },
    OfficialKey {
        key_id: "d310c6f2833e97f7",
        used_for: "24.10 releases",
        public_key: "RWTTEMbygz6X95lKDAulctZy3aj15823THXfyrfXgwGbxZlXBd2brNcw",
    },
    OfficialKey {
        key_id: "b5043e70f9a75cde",
        used_for: "unattended snapshot builds (also 23.05 and, reportedly, 25.12 releases)",
        public_key: "RWS1BD5w+adc3j2Hqg9+b66CvLR7NlHbsj7wjNVj0XGt/othDgIAOJS+",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imagebuilder::usign::{Keyring, PublicKey};

    #[test]
    fn every_official_key_decodes_to_its_key_id() {
        for official in OFFICIAL_KEYS {
            let key = PublicKey::from_base64(official.public_key).unwrap();
            assert_eq!(key.key_id.to_string(), official.key_id);
        }
    }

    #[test]
    fn official_keyring_holds_exactly_the_table() {
        let ids: Vec<String> = Keyring::official()
            .key_ids()
            .map(|id| id.to_string())
            .collect();
        let mut expected: Vec<String> =
            OFFICIAL_KEYS.iter().map(|k| k.key_id.to_string()).collect();
        expected.sort();
        assert_eq!(ids, expected);
        assert_eq!(ids.len(), 7);
    }
}
