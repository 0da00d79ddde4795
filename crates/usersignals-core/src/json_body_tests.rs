use super::*;

/// Python's own answers (`datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec=
/// "milliseconds")`), the far-future ones a millisecond short through float rounding.
#[test]
fn times_render_as_python_renders_them() {
    let cases = [
        (0, "1970-01-01T00:00:00.000+00:00"),
        (999, "1970-01-01T00:00:00.999+00:00"),
        (1_795_670_425_233, "2026-11-26T05:20:25.233+00:00"),
        (951_782_400_000, "2000-02-29T00:00:00.000+00:00"),
        (4_102_444_800_123, "2100-01-01T00:00:00.123+00:00"),
        (253_402_300_799_999, "9999-12-31T23:59:59.998+00:00"),
        (165_279_854_824_517, "7207-07-06T06:47:04.516+00:00"),
        (36_711_422_925_642, "3133-05-04T17:28:45.641+00:00"),
    ];
    for (ms, expected) in cases {
        assert_eq!(iso_ms(ms).as_deref(), Some(expected), "{ms}");
    }
    assert_eq!(iso_ms(253_402_300_800_000 + 86_400_000), None);
}

#[test]
fn only_a_whole_msgpack_bin_is_a_native_state() {
    assert_eq!(unbin(&[0xC4, 2, 7, 8]), Some(&[7u8, 8][..]));
    assert_eq!(unbin(&[0xC5, 0, 1, 9]), Some(&[9u8][..]));
    assert_eq!(unbin(&[0xC6, 0, 0, 0, 0]), Some(&[][..]));
    assert_eq!(unbin(&[0xC4, 2, 7]), None, "short");
    assert_eq!(unbin(&[0xC4, 1, 7, 8]), None, "trailing bytes");
    assert_eq!(unbin(&[0x92, 1, 2]), None, "the old codec's msgpack array");
    assert_eq!(unbin(&[]), None);
}

#[test]
fn floats_read_back_as_the_numbers_msgspec_writes() {
    // msgspec writes `1e16` where serde_json writes `1e+16`: the same number.
    let mut out = Vec::new();
    write_floats(&[f64::NAN, f64::INFINITY, 1e16, 1e-7, 2.0, -0.5], &mut out);
    assert_eq!(out, b"[null,null,1e+16,1e-7,2.0,-0.5]");
}

#[test]
fn strings_are_escaped() {
    let mut out = Vec::new();
    write_text("é\u{1}\"\\", &mut out);
    assert_eq!(out, "\"é\\u0001\\\"\\\\\"".as_bytes());
}

#[test]
fn an_unknown_plan_or_a_foreign_state_is_left_to_the_object_path() {
    let slot = Slot {
        plan: 0,
        head: b"\"x\":{\"value\":",
        tail: b"}",
        state: None,
    };
    assert_eq!(
        user_body(&[], b"\"u\"", &[slot], &ReadContext::default()),
        Body::Unserved
    );
}

/// Labels are Python's `str()` of the first `by` value, sorted, and equal ones summed (the
/// `tiles_value` dict): `1` and `"1"` are one label, `None` and `True` sort as their text.
#[test]
fn tile_labels_merge_and_sort_as_their_text() {
    let answer = TileAnswer {
        total: 9,
        by: vec![
            (Some(Value::Str("b".into())), 1),
            (Some(Value::Int(1)), 2),
            (Some(Value::Null), 3),
            (Some(Value::Str("1".into())), 1),
            (Some(Value::Bool(true)), 2),
        ],
        newest: Some(5),
    };
    let mut out = Vec::new();
    write_tiles(1, &answer, &mut out).unwrap_or_else(|_| panic!("unserved"));
    assert_eq!(
        out,
        b"{\"total\":9,\"by\":{\"1\":3,\"None\":3,\"True\":2,\"b\":1}}"
    );
    let float = TileAnswer {
        by: vec![(Some(Value::Float(1.5)), 1)],
        ..answer
    };
    assert!(write_tiles(1, &float, &mut Vec::new()).is_err());
}

/// `iso_ms`'s rendering as it was first written, with `format!`: the reference of the
/// hand-written digits. The calendar fields are shared (`iso_fields`); they are checked
/// against Python's `datetime` by tests/unit/test_native_bodies.py, which compares the
/// core's body with the object path's answer.
fn iso_ms_by_format(ms: i64) -> Option<String> {
    let [year, month, day, hour, minute, second, millis] = iso_fields(ms)?;
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}+00:00"
    ))
}

proptest::proptest! {
    #[test]
    fn times_and_ints_are_written_as_format_writes_them(
        ms in proptest::prop_oneof![-62_135_596_800_000i64..253_402_300_800_000, proptest::prelude::any::<i64>()],
    ) {
        proptest::prop_assert_eq!(iso_ms(ms), iso_ms_by_format(ms));
        let mut out = Vec::new();
        write_int(ms, &mut out);
        proptest::prop_assert_eq!(out, ms.to_string().into_bytes());
    }
}

proptest::proptest! {
    /// Strings as serde_json writes them; digits ids as their text would be.
    #[test]
    fn texts_are_written_as_serde_json_writes_them(
        s in "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é]{0,6}|[a-zé\u{80}-\u{7ff}]{0,24}[\"\\\\\u{0}-\u{1f}]?[a-z]{0,9}",
        number in proptest::prelude::any::<u64>(),
        width in 0usize..22,
    ) {
        let mut out = Vec::new();
        write_text(&s, &mut out);
        proptest::prop_assert_eq!(&out, &serde_json::to_vec(&s).unwrap());
        let (mut out, mut text) = (Vec::new(), String::new());
        write_ref(ValueRef::Digits(&s, width, number), &mut text, &mut out);
        let expected = serde_json::to_vec(&format!("{s}{number:0width$}")).unwrap();
        proptest::prop_assert_eq!(out, expected);
    }
}

proptest::proptest! {
    /// Zero-padded numbers as the zeros pushed one by one wrote them, and as `format!` does.
    #[test]
    fn padded_numbers_are_written_as_before(
        number in proptest::prop_oneof![0u64..1_000, proptest::prelude::any::<u64>()],
        width in proptest::prop_oneof![0usize..5, 0usize..45],
    ) {
        let (mut out, mut before) = (b"x".to_vec(), b"x".to_vec());
        write_padded(number, width, &mut out);
        write_padded_by_pushes(number, width, &mut before);
        proptest::prop_assert_eq!(&out, &before);
        let formatted = format!("{number:0width$}");
        proptest::prop_assert_eq!(&out[1..], formatted.as_bytes());
    }
}

proptest::proptest! {
    /// Eight bytes at a time, the same verdict as byte by byte.
    #[test]
    fn a_word_needs_an_escape_when_one_of_its_bytes_does(bytes in proptest::prelude::any::<[u8; 8]>()) {
        let expected = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        proptest::prop_assert_eq!(needs_escape(u64::from_le_bytes(bytes)), expected);
    }
}

#[test]
fn a_label_left_to_the_object_path_leaves_the_columns_as_they_were() {
    let seen = r#"{"key": "seen@1", "where": null, "aggregate": {"kind": "last_seen", "by": "surface"}, "retention_ms": 604800000}"#;
    let plans = [Plan::from_json(seen).unwrap()];
    let column = |plan| LabelColumn {
        plan,
        context: ReadContext::default(),
    };
    let states = [None];
    let mut out = JsonColumns::new(2);
    assert!(label_values(
        &plans,
        &states,
        &mut [column(0), column(0)],
        5,
        &mut out
    ));
    let first = out.clone();
    assert_eq!(first.len(), 1);
    assert_eq!(first.value(0, 0), first.value(1, 0));
    assert!(!first.value(0, 0).is_empty());
    // The first column answers, the second names no plan: nothing of the label stays.
    assert!(!label_values(
        &plans,
        &states,
        &mut [column(0), column(1)],
        6,
        &mut out
    ));
    assert_eq!(out, first);
}

#[test]
fn columns_sized_ahead_hold_what_growing_columns_hold() {
    let seen = r#"{"key": "seen@1", "where": null, "aggregate": {"kind": "last_seen", "by": "surface"}, "retention_ms": 604800000}"#;
    let plans = [Plan::from_json(seen).unwrap()];
    let mut columns = [LabelColumn {
        plan: 0,
        context: ReadContext::default(),
    }];
    // Fewer, as many and more labels than announced: the same texts and offsets.
    let mut filled = |mut out: JsonColumns| {
        for ts in 0..40 {
            assert!(label_values(&plans, &[None], &mut columns, ts, &mut out));
        }
        (out.offsets, out.data)
    };
    let grown = filled(JsonColumns::new(1));
    for announced in [0, 3, 40, 1_000] {
        assert_eq!(filled(JsonColumns::for_labels(1, announced)), grown);
    }
}

#[test]
fn every_column_is_sized_for_the_labels_announced() {
    let out = JsonColumns::for_labels(3, 100);
    assert!(out.offsets.iter().all(|offsets| offsets.capacity() > 100));
    assert!(out.offsets.iter().all(|offsets| offsets == &[0]));
}
