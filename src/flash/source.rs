//! Opening an image: recognise its compression by magic bytes (not by the file name),
//! find its decompressed size when the format records it, and stream it decompressed.
//!
//! `.gz` may carry data after the gzip stream (OpenWrt's `fwtool` appends metadata and a
//! signature); like `gzip -d` and upstream sysupgrade, decoding stops at the first bytes
//! after a member that do not start another member.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::size;
use crate::error::{Error, ErrorCode, Result};

/// Input buffer for the compressed side.
const INPUT_BUFFER: usize = 1024 * 1024;
/// liblzma's limit: `xz -9` needs 65 MiB; anything beyond that is not an image we expect.
const XZ_MEMORY_LIMIT: u64 = 128 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    Raw,
    Gzip,
    Xz,
    Zstd,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Gzip => "gzip",
            ImageFormat::Xz => "xz",
            ImageFormat::Zstd => "zstd",
        }
    }
}

/// An image file as a flash sees it before writing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageInfo {
    #[schema(value_type = String)]
    pub path: PathBuf,
    pub format: ImageFormat,
    /// Bytes of the file itself.
    pub file_size: u64,
    /// Bytes that will be written, when known before decompressing: raw images, `.xz`
    /// (from its index) and `.zst` (from its frame headers). gzip does not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Looks at an image: format by magic bytes, and the size to be written when known.
pub(crate) fn inspect(path: &Path) -> Result<ImageInfo> {
    let mut file = open(path)?;
    let file_size = file
        .metadata()
        .map_err(|error| Error::io("reading", path, error))?
        .len();
    let mut magic = [0u8; 8];
    let length =
        read_up_to(&mut file, &mut magic).map_err(|error| Error::io("reading", path, error))?;
    let format = detect(path, &magic[..length])?;
    let size = match format {
        ImageFormat::Raw => Some(file_size),
        ImageFormat::Xz => size::xz_uncompressed_size(&mut file, file_size),
        ImageFormat::Zstd => size::zstd_content_size(&mut file, file_size),
        ImageFormat::Gzip => None,
    };
    if file_size == 0 || size == Some(0) {
        return Err(image_error(path, "is empty"));
    }
    Ok(ImageInfo {
        path: path.to_path_buf(),
        format,
        file_size,
        size,
    })
}

fn open(path: &Path) -> Result<File> {
    let file = File::open(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => Error::new(
            ErrorCode::Precondition,
            format!("image `{}` does not exist", path.display()),
        ),
        _ => Error::io("opening image", path, error),
    })?;
    let is_file = file.metadata().is_ok_and(|metadata| metadata.is_file());
    if !is_file {
        return Err(Error::new(
            ErrorCode::Precondition,
            format!("image `{}` is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

fn detect(path: &Path, magic: &[u8]) -> Result<ImageFormat> {
    const UNSUPPORTED: [(&[u8], &str); 5] = [
        (b"BZh", "bzip2"),
        (b"PK\x03\x04", "zip"),
        (b"7z\xbc\xaf\x27\x1c", "7z"),
        (b"\x04\x22\x4d\x18", "lz4"),
        (b"\x89LZO", "lzo"),
    ];
    if magic.starts_with(&[0x1f, 0x8b]) {
        return Ok(ImageFormat::Gzip);
    }
    if magic.starts_with(b"\xfd7zXZ\x00") {
        return Ok(ImageFormat::Xz);
    }
    if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(ImageFormat::Zstd);
    }
    if let Some((_, name)) = UNSUPPORTED
        .iter()
        .find(|(prefix, _)| magic.starts_with(prefix))
    {
        return Err(image_error(
            path,
            &format!("is compressed with {name}, which imagegen does not decompress"),
        )
        .with_help("decompress it first, or recompress it with gzip, xz or zstd"));
    }
    Ok(ImageFormat::Raw)
}

fn image_error(path: &Path, what: &str) -> Error {
    Error::new(
        ErrorCode::FlashError,
        format!("image `{}` {what}", path.display()),
    )
}

/// Counts the compressed bytes consumed, for progress on formats of unknown output size.
struct CountingReader<R> {
    inner: R,
    consumed: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let length = self.inner.read(buffer)?;
        self.consumed.fetch_add(length as u64, Ordering::Relaxed);
        Ok(length)
    }
}

/// The decompressed byte stream of an image. `consumed` counts the file bytes read so far.
pub(crate) fn open_stream(
    image: &ImageInfo,
    consumed: Arc<AtomicU64>,
) -> Result<Box<dyn Read + Send>> {
    let file = open(&image.path)?;
    let counted = BufReader::with_capacity(
        INPUT_BUFFER,
        CountingReader {
            inner: file,
            consumed,
        },
    );
    Ok(match image.format {
        ImageFormat::Raw => Box::new(counted),
        ImageFormat::Gzip => Box::new(GzipMembers::new(counted)),
        ImageFormat::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMORY_LIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|error| Error::internal(format!("starting xz: {error}")))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(counted, stream))
        }
        ImageFormat::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(counted)
                .map_err(|error| Error::internal(format!("starting zstd: {error}")))?,
        ),
    })
}

/// Decodes gzip members one after another while the bytes after a member start a new one
/// (`1f 8b`), and ends the stream at anything else: the trailer OpenWrt appends.
struct GzipMembers<R: BufRead> {
    decoder: Option<flate2::bufread::GzDecoder<R>>,
}

impl<R: BufRead> GzipMembers<R> {
    fn new(reader: R) -> Self {
        GzipMembers {
            decoder: Some(flate2::bufread::GzDecoder::new(reader)),
        }
    }
}

impl<R: BufRead> Read for GzipMembers<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while let Some(decoder) = self.decoder.as_mut() {
            let length = decoder.read(buffer)?;
            if length > 0 || buffer.is_empty() {
                return Ok(length);
            }
            // This member ended; look at what follows it.
            let Some(mut reader) = self.decoder.take().map(|decoder| decoder.into_inner()) else {
                break;
            };
            let next = reader.fill_buf()?;
            if next.starts_with(&[0x1f, 0x8b]) {
                self.decoder = Some(flate2::bufread::GzDecoder::new(reader));
            }
        }
        Ok(0)
    }
}

pub(crate) use crate::fsutil::read_up_to;

/// Counts the decompressed bytes of an image whose format does not record them (gzip),
/// for `--dry-run`, which may read the image but must not write anything.
pub(crate) fn count_decompressed(image: &ImageInfo) -> Result<u64> {
    let mut stream = open_stream(image, Arc::new(AtomicU64::new(0)))?;
    io::copy(&mut stream, &mut io::sink()).map_err(|error| decode_error(&image.path, &error))
}

/// A failure inside the compressed stream.
pub(crate) fn decode_error(path: &Path, error: &io::Error) -> Error {
    image_error(path, &format!("cannot be decompressed: {error}"))
        .with_help("the file is damaged or truncated; download or build it again")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn decode_all(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzipMembers::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn gzip_stops_at_openwrt_metadata_after_the_stream() {
        let mut file = gzip(b"disk image bytes");
        file.extend_from_slice(b"{\"metadata_version\":\"1.1\"}FWx0\x00\x00\x00\x2a");
        assert_eq!(decode_all(&file), b"disk image bytes");
    }

    #[test]
    fn gzip_reads_every_member_like_gzip_does() {
        let mut file = gzip(b"first ");
        file.extend(gzip(b"second"));
        file.extend_from_slice(b"trailing");
        assert_eq!(decode_all(&file), b"first second");
    }

    #[test]
    fn formats_come_from_magic_bytes_not_names() {
        let dir = tempfile::tempdir().unwrap();
        let misnamed = dir.path().join("image.img");
        std::fs::write(&misnamed, gzip(&[7u8; 4096])).unwrap();
        let info = inspect(&misnamed).unwrap();
        assert_eq!(info.format, ImageFormat::Gzip);
        assert_eq!(info.size, None);
        assert_eq!(count_decompressed(&info).unwrap(), 4096);

        let zip = dir.path().join("image.img.gz");
        std::fs::write(&zip, b"PK\x03\x04 not really").unwrap();
        let error = inspect(&zip).unwrap_err();
        assert_eq!(error.code, ErrorCode::FlashError);
        assert!(error.message.contains("zip"), "{}", error.message);

        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(inspect(&empty).unwrap_err().code, ErrorCode::FlashError);

        let missing = inspect(&dir.path().join("nope.img")).unwrap_err();
        assert_eq!(missing.code, ErrorCode::Precondition);
    }

    #[test]
    fn corrupt_streams_fail_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.img.gz");
        let mut bytes = gzip(&[1u8; 100_000]);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        bytes.truncate(bytes.len() - 4);
        std::fs::write(&path, bytes).unwrap();
        let info = inspect(&path).unwrap();
        let error = count_decompressed(&info).unwrap_err();
        assert_eq!(error.code, ErrorCode::FlashError);
        assert!(error.message.contains("bad.img.gz"), "{}", error.message);
    }
}
