//! Prometheus remote-write 1.0 requests, encoded by hand: a protobuf
//! `WriteRequest` of `TimeSeries` (sorted label pairs, `__name__` first, and
//! samples), snappy block format — what `vigil-load --remote-write` and the
//! alert-latency benchmark send to a real Prometheus.

/// Appends `v` as a protobuf varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
pub fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends one `TimeSeries` with one sample to a `WriteRequest` being built.
/// `labels` must be sorted by name (with `__name__` first, as it sorts).
pub fn put_series(request: &mut Vec<u8>, labels: &[(String, String)], value: f64, ts_ms: i64) {
    let mut ts_msg = Vec::with_capacity(128);
    let mut label = Vec::with_capacity(64);
    for (name, v) in labels {
        label.clear();
        put_bytes(&mut label, 1, name.as_bytes());
        put_bytes(&mut label, 2, v.as_bytes());
        put_bytes(&mut ts_msg, 1, &label);
    }
    // Sample { double value = 1; int64 timestamp = 2; }
    let mut sample = Vec::with_capacity(20);
    sample.push(1 << 3 | 1);
    sample.extend_from_slice(&value.to_le_bytes());
    put_varint(&mut sample, 2 << 3);
    put_varint(&mut sample, ts_ms as u64);
    put_bytes(&mut ts_msg, 2, &sample);
    put_bytes(request, 1, &ts_msg);
}

/// A `WriteRequest` snappy-compressed, ready to post with the remote-write
/// 1.0 headers ([`HEADERS`]).
pub fn compress(request: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(request)
        .unwrap_or_default()
}

/// The headers of a remote-write 1.0 request.
pub const HEADERS: [(&str, &str); 3] = [
    ("content-type", "application/x-protobuf"),
    ("content-encoding", "snappy"),
    ("x-prometheus-remote-write-version", "0.1.0"),
];
