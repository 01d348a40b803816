//! The digest an upload (PutObject, UploadPart) carries for the server to check the body
//! against: CRC-32 or SHA-256 with `checksums: when_supported`, `Content-MD5` with
//! `when_required`; and the check that a digest the server echoes is the one sent.

use base64::Engine as _;

use crate::store::{ChecksumAlgorithm, ChecksumMode};

/// One body's digest, in the header encodings S3 uses (base64 of the big-endian bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct BodyDigest {
    pub crc32: Option<String>,
    pub sha256: Option<String>,
    pub content_md5: Option<String>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl BodyDigest {
    /// The digest `data` is sent with.
    pub fn of(mode: ChecksumMode, algorithm: ChecksumAlgorithm, data: &[u8]) -> Self {
        match (mode, algorithm) {
            (ChecksumMode::WhenSupported, ChecksumAlgorithm::Crc32) => BodyDigest {
                crc32: Some(b64(&crate::compress::crc32(0, data).to_be_bytes())),
                ..BodyDigest::default()
            },
            (ChecksumMode::WhenSupported, ChecksumAlgorithm::Sha256) => {
                use sha2::Digest as _;
                BodyDigest {
                    sha256: Some(b64(&sha2::Sha256::digest(data))),
                    ..BodyDigest::default()
                }
            }
            (ChecksumMode::WhenRequired, _) => {
                use md5::Digest as _;
                BodyDigest {
                    content_md5: Some(b64(&md5::Md5::digest(data))),
                    ..BodyDigest::default()
                }
            }
        }
    }

    /// An error message when the server echoes a digest other than the one sent (it checked
    /// the body against ours, so a different echo means something rewrote one of them).
    pub fn mismatch(
        &self,
        echoed_crc32: Option<&str>,
        echoed_sha256: Option<&str>,
    ) -> Option<String> {
        let pairs = [
            ("CRC-32", self.crc32.as_deref(), echoed_crc32),
            ("SHA-256", self.sha256.as_deref(), echoed_sha256),
        ];
        pairs
            .into_iter()
            .find_map(|(name, sent, echoed)| match (sent, echoed) {
                (Some(sent), Some(echoed)) if sent != echoed => Some(format!(
                    "the server reports {name} {echoed}, {sent} was sent"
                )),
                _ => None,
            })
    }
}

/// The algorithm a multipart upload declares when it is created (none with `when_required`).
pub(super) fn multipart_algorithm(
    mode: ChecksumMode,
    algorithm: ChecksumAlgorithm,
) -> Option<aws_sdk_s3::types::ChecksumAlgorithm> {
    match (mode, algorithm) {
        (ChecksumMode::WhenRequired, _) => None,
        (ChecksumMode::WhenSupported, ChecksumAlgorithm::Crc32) => {
            Some(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
        }
        (ChecksumMode::WhenSupported, ChecksumAlgorithm::Sha256) => {
            Some(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_use_the_s3_encodings() {
        // CRC-32 of "123456789" is 0xCBF43926; S3 sends its big-endian bytes in base64.
        let crc = BodyDigest::of(
            ChecksumMode::WhenSupported,
            ChecksumAlgorithm::Crc32,
            b"123456789",
        );
        assert_eq!(crc.crc32.as_deref(), Some("y/Q5Jg=="));
        assert_eq!((crc.sha256, crc.content_md5), (None, None));

        let sha = BodyDigest::of(
            ChecksumMode::WhenSupported,
            ChecksumAlgorithm::Sha256,
            b"abc",
        );
        assert_eq!(
            sha.sha256.as_deref(),
            Some("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=")
        );
        assert_eq!(sha.crc32, None);

        for algorithm in [ChecksumAlgorithm::Crc32, ChecksumAlgorithm::Sha256] {
            let md5 = BodyDigest::of(ChecksumMode::WhenRequired, algorithm, b"abc");
            assert_eq!(md5.content_md5.as_deref(), Some("kAFQmDzST7DWlj99KOF/cg=="));
            assert_eq!((md5.crc32, md5.sha256), (None, None));
            assert_eq!(
                multipart_algorithm(ChecksumMode::WhenRequired, algorithm),
                None
            );
        }
    }

    #[test]
    fn a_different_echo_is_reported_and_a_missing_one_is_not() {
        let sent = BodyDigest::of(
            ChecksumMode::WhenSupported,
            ChecksumAlgorithm::Crc32,
            b"abc",
        );
        let ours = sent.crc32.clone();
        assert_eq!(sent.mismatch(ours.as_deref(), None), None);
        assert_eq!(sent.mismatch(None, None), None);
        let message = sent.mismatch(Some("AAAAAA=="), None).unwrap();
        assert!(message.contains("CRC-32 AAAAAA=="), "{message}");
    }
}
