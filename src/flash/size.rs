//! The decompressed size of an image, read from the metadata its format records, without
//! decompressing: the `.xz` index at the end of each stream, the content size in each
//! `.zst` frame header. `None` whenever anything is unusual; the writer then finds the
//! size as it streams (and never writes past the end of the device).

use std::io::{Read, Seek, SeekFrom};

const XZ_HEADER_MAGIC: &[u8; 6] = b"\xfd7zXZ\x00";
const XZ_FOOTER_MAGIC: &[u8; 2] = b"YZ";
const XZ_HEADER_SIZE: u64 = 12;
const XZ_FOOTER_SIZE: u64 = 12;
/// Real indexes are a few bytes per block; this bounds what a corrupt field makes us read.
const XZ_MAX_INDEX: u64 = 16 * 1024 * 1024;

/// Sums the uncompressed sizes of every block of every stream of an `.xz` file, walking the
/// streams backwards from the end (each footer says how long its index is).
pub(crate) fn xz_uncompressed_size<F: Read + Seek>(file: &mut F, file_size: u64) -> Option<u64> {
    let mut end = file_size;
    let mut total: u64 = 0;
    while end > 0 {
        end = skip_stream_padding(file, end)?;
        let footer = read_at(
            file,
            end.checked_sub(XZ_FOOTER_SIZE)?,
            XZ_FOOTER_SIZE as usize,
        )?;
        if &footer[10..12] != XZ_FOOTER_MAGIC {
            return None;
        }
        let backward = u32::from_le_bytes(footer[4..8].try_into().ok()?);
        let index_size = (u64::from(backward) + 1) * 4;
        if index_size > XZ_MAX_INDEX {
            return None;
        }
        let index_start = end.checked_sub(XZ_FOOTER_SIZE + index_size)?;
        let index = read_at(file, index_start, index_size as usize)?;
        let (uncompressed, blocks_size) = parse_xz_index(&index)?;
        total = total.checked_add(uncompressed)?;
        let stream_start = index_start.checked_sub(blocks_size + XZ_HEADER_SIZE)?;
        let header = read_at(file, stream_start, 6)?;
        if header != XZ_HEADER_MAGIC {
            return None;
        }
        end = stream_start;
    }
    Some(total)
}

/// Stream padding: zero bytes in groups of four between and after streams.
fn skip_stream_padding<F: Read + Seek>(file: &mut F, mut end: u64) -> Option<u64> {
    while end >= 4 {
        let word = read_at(file, end - 4, 4)?;
        if word != [0, 0, 0, 0] {
            break;
        }
        end -= 4;
    }
    Some(end)
}

/// Parses an xz index: `0x00`, the record count, then (unpadded size, uncompressed size)
/// per block. Returns the uncompressed total and the bytes the blocks occupy (each padded
/// to a multiple of four).
fn parse_xz_index(index: &[u8]) -> Option<(u64, u64)> {
    if index.first() != Some(&0) {
        return None;
    }
    let mut position = 1;
    let records = read_varint(index, &mut position)?;
    let mut uncompressed: u64 = 0;
    let mut blocks: u64 = 0;
    for _ in 0..records {
        let unpadded = read_varint(index, &mut position)?;
        uncompressed = uncompressed.checked_add(read_varint(index, &mut position)?)?;
        blocks = blocks.checked_add(unpadded.checked_add(3)? & !3)?;
    }
    Some((uncompressed, blocks))
}

/// xz's multibyte integer: seven bits per byte, least significant first, at most nine bytes.
fn read_varint(bytes: &[u8], position: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for shift in 0..9 {
        let byte = *bytes.get(*position)?;
        *position += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

const ZSTD_MAGIC: u32 = 0xfd2f_b528;
const ZSTD_SKIPPABLE_MASK: u32 = 0xffff_fff0;
const ZSTD_SKIPPABLE_MAGIC: u32 = 0x184d_2a50;

/// Sums the content sizes of every frame of a `.zst` file, walking frames and blocks by
/// their headers. `None` when a frame does not record its size.
pub(crate) fn zstd_content_size<F: Read + Seek>(file: &mut F, file_size: u64) -> Option<u64> {
    let mut position: u64 = 0;
    let mut total: u64 = 0;
    while position < file_size {
        let magic = u32::from_le_bytes(read_at(file, position, 4)?.try_into().ok()?);
        if magic & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE_MAGIC {
            let length = u32::from_le_bytes(read_at(file, position + 4, 4)?.try_into().ok()?);
            position += 8 + u64::from(length);
            continue;
        }
        if magic != ZSTD_MAGIC {
            return None;
        }
        let (content, header_length, has_checksum) = zstd_frame_header(file, position + 4)?;
        total = total.checked_add(content)?;
        position = skip_zstd_blocks(file, position + 4 + header_length)?;
        if has_checksum {
            position += 4;
        }
    }
    (position == file_size).then_some(total)
}

/// Returns (content size, header length after the magic, checksum flag).
fn zstd_frame_header<F: Read + Seek>(file: &mut F, at: u64) -> Option<(u64, u64, bool)> {
    let descriptor = read_at(file, at, 1)?[0];
    let size_flag = descriptor >> 6;
    let single_segment = descriptor & 0x20 != 0;
    let has_checksum = descriptor & 0x04 != 0;
    let dictionary_bytes: u64 = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let window_bytes: u64 = if single_segment { 0 } else { 1 };
    let size_bytes: usize = match (size_flag, single_segment) {
        (0, false) => return None,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let field = read_at(file, at + 1 + window_bytes + dictionary_bytes, size_bytes)?;
    let mut raw = [0u8; 8];
    raw[..size_bytes].copy_from_slice(&field);
    let mut content = u64::from_le_bytes(raw);
    if size_bytes == 2 {
        content += 256;
    }
    let header_length = 1 + window_bytes + dictionary_bytes + size_bytes as u64;
    Some((content, header_length, has_checksum))
}

/// Skips a frame's blocks (3-byte headers: last flag, type, size) and returns the offset
/// after the last one.
fn skip_zstd_blocks<F: Read + Seek>(file: &mut F, mut position: u64) -> Option<u64> {
    loop {
        let header = read_at(file, position, 3)?;
        let value = u32::from(header[0]) | u32::from(header[1]) << 8 | u32::from(header[2]) << 16;
        let last = value & 1 != 0;
        let kind = (value >> 1) & 3;
        let length = u64::from(value >> 3);
        position += 3 + match kind {
            0 | 2 => length,
            1 => 1,
            _ => return None,
        };
        if last {
            return Some(position);
        }
    }
}

fn read_at<F: Read + Seek>(file: &mut F, offset: u64, length: usize) -> Option<Vec<u8>> {
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut buffer = vec![0u8; length];
    file.read_exact(&mut buffer).ok()?;
    Some(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn sample(length: usize) -> Vec<u8> {
        (0..length)
            .map(|index| (index % 251) as u8 ^ (index / 7919) as u8)
            .collect()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 1);
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn xz_size_from_the_index_of_every_stream() {
        let mut file = xz(&sample(300_000));
        assert_eq!(
            xz_uncompressed_size(&mut Cursor::new(&file), file.len() as u64),
            Some(300_000)
        );
        // Concatenated streams with stream padding between and after them.
        file.extend_from_slice(&[0; 8]);
        file.extend(xz(&sample(1234)));
        file.extend_from_slice(&[0; 4]);
        assert_eq!(
            xz_uncompressed_size(&mut Cursor::new(&file), file.len() as u64),
            Some(301_234)
        );
        file.extend_from_slice(b"junk");
        assert_eq!(
            xz_uncompressed_size(&mut Cursor::new(&file), file.len() as u64),
            None
        );
    }

    #[test]
    fn zstd_size_from_frame_headers() {
        let data = sample(1_000_000);
        let mut file = zstd::bulk::compress(&data[..], 3).unwrap();
        assert_eq!(
            zstd_content_size(&mut Cursor::new(&file), file.len() as u64),
            Some(1_000_000)
        );
        file.extend(zstd::bulk::compress(&data[..300], 19).unwrap());
        assert_eq!(
            zstd_content_size(&mut Cursor::new(&file), file.len() as u64),
            Some(1_000_300)
        );
        // A streamed frame without a content size.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(&data[..5000]).unwrap();
        let streamed = encoder.finish().unwrap();
        assert_eq!(
            zstd_content_size(&mut Cursor::new(&streamed), streamed.len() as u64),
            None
        );
    }
}
