//! MariaDB's compressed binlog events (`log_bin_compress=ON`).
//!
//! With compression on, MariaDB writes a QUERY event whose statement text, or a ROWS event
//! whose row images, exceed `log_bin_compress_min_len` as a compressed variant (types 165–171).
//! Everything before the compressed part — the post-header, and for a QUERY event its status
//! variables and database name, for a ROWS event its column count and column bitmaps — stays
//! as it is; the rest is replaced by:
//!
//! * one byte `0x80 | n`: the high three bits name the algorithm (`100` = zlib, the only one),
//!   `n` (1–4) is how many bytes hold the uncompressed length;
//! * the uncompressed length, `n` bytes, big-endian;
//! * a zlib stream.
//!
//! [`uncompress`] rebuilds the body of the uncompressed event type it stands for
//! ([`uncompressed_type`]), byte for byte what the server writes without compression, so the
//! ordinary decoding reads it and nothing downstream knows the difference. A body that does
//! not decompress to its stated length is an error, never a skipped event.

use std::io::Read;

/// The uncompressed event type a compressed one stands for.
pub fn uncompressed_type(ty: u8) -> Option<u8> {
    Some(match ty {
        165 => 2,  // QUERY_COMPRESSED_EVENT → QUERY_EVENT
        166 => 23, // WRITE_ROWS_COMPRESSED_EVENT_V1 → WRITE_ROWS_EVENT_V1
        167 => 24, // UPDATE_ROWS_COMPRESSED_EVENT_V1
        168 => 25, // DELETE_ROWS_COMPRESSED_EVENT_V1
        169 => 30, // WRITE_ROWS_COMPRESSED_EVENT → WRITE_ROWS_EVENT (v2)
        170 => 31, // UPDATE_ROWS_COMPRESSED_EVENT
        171 => 32, // DELETE_ROWS_COMPRESSED_EVENT
        _ => return None,
    })
}

/// The largest uncompressed part accepted: MariaDB's own limit for one event (`max_allowed_packet`
/// at most 1 GiB).
const MAX_UNCOMPRESSED: u64 = 1 << 30;

/// The body (after the 19-byte common header, without checksum) of the uncompressed event that
/// the compressed event `ty` with body `data` stands for. `post_header_len` is the format
/// description's post-header length for `ty`.
pub fn uncompress(ty: u8, data: &[u8], post_header_len: usize) -> Result<Vec<u8>, String> {
    let start = match ty {
        165 => query_text_start(data, post_header_len)?,
        166..=171 => rows_data_start(ty, data, post_header_len)?,
        _ => return Err(format!("event type {ty} is not a compressed event")),
    };
    let mut out = data[..start].to_vec();
    inflate(&data[start..], &mut out)?;
    Ok(out)
}

/// QUERY: post-header (thread id 4, exec time 4, db length 1, error code 2, status vars
/// length 2, …), status vars, database name, NUL; then the statement.
fn query_text_start(data: &[u8], post_header_len: usize) -> Result<usize, String> {
    if post_header_len < 13 || data.len() < post_header_len {
        return Err(format!(
            "compressed QUERY event too short ({} bytes, post-header {post_header_len})",
            data.len()
        ));
    }
    let db_len = data[8] as usize;
    let status_len = u16::from_le_bytes([data[11], data[12]]) as usize;
    let start = post_header_len + status_len + db_len + 1;
    if start > data.len() {
        return Err(format!(
            "compressed QUERY event: status variables ({status_len} bytes) and database name \
             ({db_len} bytes) run past its end ({} bytes)",
            data.len()
        ));
    }
    Ok(start)
}

/// ROWS: post-header (table id, flags; v2: extra-data length), v2 extra data, column count
/// (length-encoded), the columns-present bitmap (twice for UPDATE); then the row images.
fn rows_data_start(ty: u8, data: &[u8], post_header_len: usize) -> Result<usize, String> {
    let short = || {
        format!(
            "compressed ROWS event (type {ty}) too short ({} bytes)",
            data.len()
        )
    };
    let mut at = post_header_len;
    if ty >= 169 {
        // v2: the extra data's length (counting its own two bytes) ends the post-header
        let len = data
            .get(at.checked_sub(2).ok_or_else(short)?..at)
            .ok_or_else(short)?;
        at += (u16::from_le_bytes([len[0], len[1]]) as usize).saturating_sub(2);
    }
    let (columns, n) = lenenc(data.get(at..).ok_or_else(short)?).ok_or_else(short)?;
    at += n;
    let bitmap = columns.div_ceil(8) as usize;
    at += if matches!(ty, 167 | 170) {
        2 * bitmap
    } else {
        bitmap
    };
    if at > data.len() {
        return Err(short());
    }
    Ok(at)
}

/// A length-encoded integer and how many bytes it took.
fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let n = match *b.first()? {
        v @ 0..=0xfa => return Some((v as u64, 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = b.get(1..1 + n)?;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(bytes);
    Some((u64::from_le_bytes(v), 1 + n))
}

/// Appends the decompressed part to `out`.
fn inflate(part: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let (&head, rest) = part.split_first().ok_or("the compressed part is empty")?;
    if head & 0xe0 != 0x80 {
        return Err(format!(
            "unknown compression header {head:#04x} (expected zlib, 0x81–0x84)"
        ));
    }
    let n = (head & 0x07) as usize;
    if !(1..=4).contains(&n) || rest.len() < n {
        return Err(format!(
            "compression header {head:#04x}: bad length size {n}"
        ));
    }
    let want = rest[..n].iter().fold(0u64, |v, b| v << 8 | *b as u64);
    if want > MAX_UNCOMPRESSED {
        return Err(format!("uncompressed length {want} exceeds 1 GiB"));
    }
    let before = out.len();
    // what the header declares is untrusted: reserve no more than zlib can expand these
    // bytes to (~1032:1), the rest grows as it is really decompressed
    out.reserve(want.min(rest.len() as u64 * 1032) as usize);
    flate2::read::ZlibDecoder::new(&rest[n..])
        .take(want + 1)
        .read_to_end(out)
        .map_err(|e| format!("zlib: {e}"))?;
    let got = (out.len() - before) as u64;
    if got != want {
        return Err(format!(
            "decompressed to {got} bytes, the header says {want}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `body` compressed the way MariaDB's `binlog_buf_compress` writes it.
    fn compress(body: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(body).unwrap();
        let z = z.finish().unwrap();
        let len = (body.len() as u32).to_be_bytes();
        let skip = len.iter().take_while(|b| **b == 0).count().min(3);
        let mut out = vec![0x80 | (4 - skip) as u8];
        out.extend_from_slice(&len[skip..]);
        out.extend_from_slice(&z);
        out
    }

    #[test]
    fn a_query_keeps_its_status_vars_and_database_and_gets_its_text_back() {
        let mut head = vec![0u8; 13];
        head[8] = 4; // db length
        head[11..13].copy_from_slice(&3u16.to_le_bytes()); // status vars length
        head.extend_from_slice(&[1, 2, 3]);
        head.extend_from_slice(b"shop\0");
        let sql = b"INSERT INTO product VALUES (1, 'a long enough statement')";
        let mut data = head.clone();
        data.extend_from_slice(&compress(sql));
        let out = uncompress(165, &data, 13).unwrap();
        assert_eq!(&out[..head.len()], &head[..]);
        assert_eq!(&out[head.len()..], &sql[..]);
        assert_eq!(uncompressed_type(165), Some(2));
    }

    #[test]
    fn rows_keep_their_bitmaps_in_v1_and_v2_and_update_has_two() {
        let rows: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        for (ty, post, extra) in [
            (166u8, 8usize, vec![]),
            (167, 8, vec![]),
            (168, 8, vec![]),
            (169, 10, vec![9u8, 9, 9]),
            (170, 10, vec![]),
            (171, 10, vec![]),
        ] {
            let mut head = vec![7u8; post];
            if post == 10 {
                head[8..10].copy_from_slice(&(2 + extra.len() as u16).to_le_bytes());
            }
            head.extend_from_slice(&extra);
            head.push(9); // 9 columns: 2-byte bitmaps
            head.extend_from_slice(&[0xff, 0x01]);
            if matches!(ty, 167 | 170) {
                head.extend_from_slice(&[0xff, 0x01]);
            }
            let mut data = head.clone();
            data.extend_from_slice(&compress(&rows));
            let out = uncompress(ty, &data, post).unwrap_or_else(|e| panic!("type {ty}: {e}"));
            assert_eq!(&out[..head.len()], &head[..], "type {ty}");
            assert_eq!(&out[head.len()..], &rows[..], "type {ty}");
        }
    }

    #[test]
    fn a_damaged_body_is_an_error() {
        let mut head = vec![0u8; 8];
        head.push(1);
        head.push(0x01);
        let good = compress(b"row bytes");
        for (bad, why) in [
            (
                [&head[..], &[0x00][..]].concat(),
                "unknown compression header",
            ),
            ([&head[..], &good[..good.len() - 3]].concat(), "zlib"),
            (
                [&head[..], &[0x81, 200][..], &good[2..]].concat(),
                "the header says 200",
            ),
            (head[..5].to_vec(), "too short"),
        ] {
            let e = uncompress(166, &bad, 8).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        // a v2 rows event with a post-header length too short to hold its extra-data length
        for post_header_len in [0, 1] {
            let e = uncompress(169, &[0; 10], post_header_len).unwrap_err();
            assert!(e.contains("too short"), "{e}");
        }
        // 1 GiB declared in a 12-byte compressed part: refused after decompressing
        let mut data = vec![0u8; 8];
        data.extend_from_slice(&[1, 0]); // one column, bitmap
        data.extend_from_slice(&[0x84, 0x40, 0, 0, 0]);
        data.extend_from_slice(&[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        let e = uncompress(166, &data, 8).unwrap_err();
        assert!(e.contains("the header says 1073741824"), "{e}");
    }

    #[test]
    fn length_encoded_column_counts() {
        assert_eq!(lenenc(&[5]), Some((5, 1)));
        assert_eq!(lenenc(&[0xfc, 0x2c, 0x01]), Some((300, 3)));
        assert_eq!(lenenc(&[0xfd, 1, 0, 1]), Some((65537, 4)));
        assert_eq!(lenenc(&[0xfc, 1]), None);
        assert_eq!(lenenc(&[0xfb]), None);
    }
}
