use super::*;

/// Two samples written column by column, as the host lays them out:
/// strings `["svc", "up", "host", "a", "latency", "b"]`.
fn hand_made_columns() -> SampleColumns {
    let strings = ["svc", "up", "host", "a", "latency", "b"];
    let mut blob = String::new();
    let mut offsets = vec![0u32];
    for s in strings {
        blob.push_str(s);
        offsets.push(blob.len() as u32);
    }
    SampleColumns {
        strings: blob,
        string_offsets: offsets,
        seqs: vec![10, 11],
        components: vec![0, 0],
        names: vec![1, 4],
        kinds: vec![1, 2],
        values: vec![1.0, 0.25],
        timestamps: vec![1_700_000_000_000, 1_700_000_000_500],
        // sample 0: (host, a); sample 1: (host, b), (up, a)
        label_starts: vec![0, 1, 3],
        label_ids: vec![2, 3, 2, 5, 1, 3],
    }
}

#[test]
fn samples_read_columns_in_place() {
    let batch = Batch::new(hand_made_columns(), Vec::new());
    assert!(batch.validate().is_ok(), "{:?}", batch.validate());
    assert_eq!(batch.len(), 2);
    let samples: Vec<Sample<'_>> = batch.samples().collect();
    assert_eq!(samples.len(), 2);
    let (a, b) = (samples[0], samples[1]);
    assert_eq!((a.seq(), a.component(), a.name()), (10, "svc", "up"));
    assert_eq!((a.kind(), a.value()), (MetricKind::Gauge, 1.0));
    assert_eq!(a.timestamp_ms(), 1_700_000_000_000);
    assert_eq!(a.labels().collect::<Vec<_>>(), vec![("host", "a")]);
    assert_eq!(
        (b.seq(), b.name(), b.kind()),
        (11, "latency", MetricKind::Histogram)
    );
    assert_eq!(
        b.labels().collect::<Vec<_>>(),
        vec![("host", "b"), ("up", "a")]
    );
    assert_eq!(b.label("up"), Some("a"));
    assert_eq!(b.label("nope"), None);
    assert_eq!(batch.seq_range(), Some((10, 11)));
}

#[test]
fn builder_interns_like_the_host() {
    let batch = BatchBuilder::new()
        .sample(1, "svc", "up", MetricKind::Counter, 3.0, 5, &[("a", "svc")])
        .sample(2, "svc", "up", MetricKind::Summary, 4.0, 6, &[])
        .event(7, 8, "TaskCreated", "exec-1", "{}")
        .build();
    assert!(batch.validate().is_ok(), "{:?}", batch.validate());
    assert_eq!(
        batch.columns().string_offsets.len(),
        4,
        "svc, up, a: each once"
    );
    assert_eq!(batch.sample_count(), 2);
    assert_eq!(batch.event_count(), 1);
    assert_eq!(batch.seq_range(), Some((1, 7)));
    let second = batch.samples().nth(1).expect("two samples");
    assert_eq!(second.labels().len(), 0);
    assert_eq!(
        batch.events().next().map(|e| e.event_type.as_str()),
        Some("TaskCreated")
    );
    assert_eq!(BatchBuilder::new().build().seq_range(), None);
}

#[test]
fn malformed_columns_degrade_without_panicking() {
    let mut c = hand_made_columns();
    c.components = vec![99];
    c.names = vec![u32::MAX, 0];
    c.kinds = vec![9];
    c.values.clear();
    c.timestamps.clear();
    c.label_starts = vec![2, 100, 1];
    c.label_ids = vec![0, 1, 2];
    let batch = Batch::new(c, Vec::new());
    assert!(batch.validate().is_err());
    let samples: Vec<Sample<'_>> = batch.samples().collect();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].component(), "");
    assert_eq!(samples[1].component(), "");
    assert_eq!(samples[0].name(), "");
    assert_eq!(samples[1].name(), "svc");
    assert_eq!(samples[0].kind(), MetricKind::Unknown(9));
    assert_eq!(samples[1].kind(), MetricKind::Unknown(u8::MAX));
    assert!(samples[0].value().is_nan());
    assert_eq!(samples[0].timestamp_ms(), 0);
    // start 2 > pairs (1): nothing; start 100 > end 1: nothing.
    assert_eq!(samples[0].labels().count(), 0);
    assert_eq!(samples[1].labels().count(), 0);
}

#[test]
fn bad_offsets_yield_empty_strings() {
    let mut c = hand_made_columns();
    // "é" is two bytes: an offset inside it is not a char boundary.
    c.strings = "é".repeat(8);
    c.string_offsets = vec![0, 1, 2, 40, 3, 4, 5];
    let batch = Batch::new(c, Vec::new());
    assert_eq!(batch.string(0), "", "offset 1 splits a char");
    assert_eq!(batch.string(1), "", "1..2 splits a char");
    assert_eq!(batch.string(2), "", "2..40 is past the blob");
    assert_eq!(batch.string(3), "", "40..3 is reversed");
    assert_eq!(batch.string(6), "", "no such id");
    assert_eq!(batch.string(u32::MAX), "");
    let err = batch.validate().unwrap_err();
    assert!(
        err.contains("decreases") || err.contains("boundary"),
        "{err}"
    );
}

#[test]
fn validate_reports_short_columns() {
    let mut c = hand_made_columns();
    c.values.pop();
    let err = Batch::new(c, Vec::new()).validate().unwrap_err();
    assert!(err.contains("values"), "{err}");
}
