//! A tiny protobuf encoder for remote-write 1.0's `WriteRequest`:
//!
//! ```proto
//! message WriteRequest { repeated TimeSeries timeseries = 1; }
//! message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//! message Label        { string name = 1; string value = 2; }
//! message Sample       { double value = 1; int64 timestamp = 2; }
//! ```

/// One series: labels sorted by name, samples `(timestamp ms, value)` in time order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Series {
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    tag(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn label(name: &str, value: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(name.len() + value.len() + 4);
    bytes_field(&mut m, 1, name.as_bytes());
    bytes_field(&mut m, 2, value.as_bytes());
    m
}

fn sample(ts: i64, value: f64) -> Vec<u8> {
    let mut m = Vec::with_capacity(20);
    tag(&mut m, 1, 1);
    m.extend_from_slice(&value.to_le_bytes());
    tag(&mut m, 2, 0);
    varint(&mut m, ts as u64);
    m
}

/// The encoded `WriteRequest`.
pub(crate) fn write_request(series: &[Series]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ts_msg = Vec::new();
    for s in series {
        ts_msg.clear();
        for (n, v) in &s.labels {
            bytes_field(&mut ts_msg, 1, &label(n, v));
        }
        for (t, v) in &s.samples {
            bytes_field(&mut ts_msg, 2, &sample(*t, *v));
        }
        bytes_field(&mut out, 1, &ts_msg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_protoc() {
        // protoc --encode=prometheus.WriteRequest of
        // timeseries { labels { name: "__name__" value: "up" } samples { value: 1 timestamp: 1000 } }
        let got = write_request(&[Series {
            labels: vec![("__name__".into(), "up".into())],
            samples: vec![(1000, 1.0)],
        }]);
        let want: Vec<u8> = [
            &[0x0a, 0x1e][..],
            &[0x0a, 0x0e, 0x0a, 0x08],
            b"__name__",
            &[0x12, 0x02],
            b"up",
            &[0x12, 0x0c, 0x09],
            &1.0f64.to_le_bytes(),
            &[0x10, 0xe8, 0x07],
        ]
        .concat();
        assert_eq!(got, want);
        let mut v = Vec::new();
        varint(&mut v, (-1i64) as u64);
        assert_eq!(v.len(), 10);
    }
}
