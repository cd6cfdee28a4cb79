//! `compression = "gzip"`: a gzip member (RFC 1952) around miniz_oxide's
//! raw deflate, level 1 (Elasticsearch's NDJSON compresses ~10× even so).

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE), as gzip's trailer wants it.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in data {
        c = CRC_TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// `data` as one gzip member.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, 1);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    // Magic, deflate, no flags, no mtime, no extra flags, unknown OS.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_members_round_trip() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        let data = b"{\"create\":{}}\n{\"a\":1}\n".repeat(100);
        let z = gzip(&data);
        assert_eq!(&z[..3], &[0x1f, 0x8b, 8]);
        assert!(z.len() < data.len() / 4, "{}", z.len());
        let body = &z[10..z.len() - 8];
        let back = miniz_oxide::inflate::decompress_to_vec(body).expect("inflate");
        assert_eq!(back, data);
        assert_eq!(&z[z.len() - 8..z.len() - 4], &crc32(&data).to_le_bytes());
    }
}
