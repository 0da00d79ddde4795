use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::context::{ReadContext, Refusal, Times, AS_OF_LOOKBACK_MS};
use crate::dedupe::fingerprint;

fn spec(n: usize, dedupe: bool) -> LastNSpec {
    LastNSpec {
        n,
        keep: vec!["item_id".into(), "action".into(), "score".into()],
        dedupe_by: dedupe.then_some(0),
    }
}

fn entry(ts: i64, id: u32, item: u8, action: &str, score: Value) -> Entry {
    Entry {
        ts,
        tie: fingerprint(&format!("e{id}")),
        values: vec![
            Value::Str(format!("i{item}")),
            Value::Str(action.into()),
            score,
        ],
    }
}

pub(super) fn arb_events() -> impl Strategy<Value = Vec<Entry>> {
    let score = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Int),
        (-1e6f64..1e6).prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
    ];
    // Times over ~7 days (coarse steps of ~2.8 h) with frequent equal times, so retentions of
    // an hour to a day plus the two-day look-back expire some events.
    let ts = (0i64..60, 0i64..50).prop_map(|(coarse, fine)| coarse * 10_000_000 + fine);
    let one = (
        ts,
        0u32..40,
        0u8..12,
        prop::sample::select(vec!["click", "save"]),
        score,
    )
        .prop_map(|(ts, id, item, action, score)| entry(ts, id, item, action, score));
    prop::collection::vec(one, 0..120)
}

/// The naive reference: every event at once, from scratch.
fn recompute(spec: &LastNSpec, retention: i64, events: &[Entry]) -> Vec<Entry> {
    let Some(newest) = events.iter().map(|e| e.ts).max() else {
        return vec![];
    };
    let mut all: Vec<Entry> = events
        .iter()
        .filter(|e| e.ts >= newest - retention - AS_OF_LOOKBACK_MS)
        .cloned()
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.order()));
    if let Some(i) = spec.dedupe_by {
        let mut seen = HashSet::new();
        let first: Vec<bool> = all
            .iter()
            .map(|e| seen.insert(e.values[i].py_key()))
            .collect();
        all = all
            .iter()
            .zip(first)
            .filter(|(_, f)| *f)
            .map(|(e, _)| e.clone())
            .collect();
    }
    all.truncate(spec.n);
    all
}

/// Apply `events` in batches cut at `cuts`, through the stored bytes each time.
fn incremental(spec: &LastNSpec, retention: i64, events: &[Entry], cuts: &[usize]) -> Vec<u8> {
    let mut bytes: Option<Vec<u8>> = None;
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (events.len() + 1)).collect();
    bounds.push(events.len());
    bounds.sort_unstable();
    for end in bounds {
        if end <= start {
            continue;
        }
        // Each batch arrives sorted by time (stable), as the executor sorts a user's rows.
        let mut batch = events[start..end].to_vec();
        batch.sort_by_key(|e| e.ts);
        let old = bytes
            .as_deref()
            .map(|b| decode(b, 3).unwrap())
            .unwrap_or_default();
        let (state, _) = combine(spec, retention, old, batch);
        bytes = Some(encode(&state, 3));
        start = end;
    }
    bytes.unwrap_or_else(|| encode(&[], 3))
}

proptest! {
    #[test]
    fn any_batching_equals_the_naive_recompute(
        events in arb_events(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        n in 1usize..30,
        dedupe in any::<bool>(),
        retention in prop_oneof![Just(3_600_000i64), Just(86_400_000), Just(1_000_000_000)],
    ) {
        let spec = spec(n, dedupe);
        // Arrival order among equal (ts, tie) is part of the state; the naive recompute sees
        // the events in arrival order too, so batching must not change it.
        let got = incremental(&spec, retention, &events, &cuts);
        let whole = incremental(&spec, retention, &events, &[]);
        prop_assert_eq!(&got, &whole);
        let expected = recompute(&spec, retention, &{
            let mut sorted = events.clone();
            sorted.sort_by_key(|e| e.ts);
            sorted
        });
        prop_assert_eq!(decode(&got, 3).unwrap(), expected);
    }

    #[test]
    fn encode_decode_round_trips(events in arb_events()) {
        let (state, _) = combine(&spec(10_000, false), i64::MAX / 2, vec![], events);
        let bytes = encode(&state, 3);
        prop_assert_eq!(decode(&bytes, 3).unwrap(), state);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode(&bytes, 3);
    }
}

#[test]
fn wrong_version_and_column_count_are_codec_errors() {
    let bytes = encode(&[entry(1, 1, 1, "click", Value::Null)], 3);
    assert!(matches!(decode(&bytes, 2), Err(CoreError::Codec(_))));
    let mut old = bytes.clone();
    old[0] = 0x92; // what a msgpack state of the Python codec starts with
    assert!(matches!(decode(&old, 3), Err(CoreError::Codec(_))));
}

#[test]
fn a_full_last_500_with_four_fields_is_well_under_16_kb() {
    let entries: Vec<Entry> = (0..500)
        .map(|i| Entry {
            ts: 1_764_000_000_000 - i64::from(i) * 7_000,
            tie: fingerprint(&format!("evt-{i:012}")),
            values: vec![
                Value::Str(format!("item-{:07}", (i * 7919) % 10_000_000)),
                Value::Str(["closeup", "click", "save", "share", "hide"][i as usize % 5].into()),
                Value::Str(["home", "search", "related", "board"][i as usize % 4].into()),
                Value::Str(format!("category-{}", (i * 31) % 500)),
            ],
        })
        .collect();
    let bytes = encode(&entries, 4);
    println!("LastN(500), four kept fields: {} bytes", bytes.len());
    assert!(bytes.len() < 12_000, "{} bytes", bytes.len());
    assert_eq!(decode(&bytes, 4).unwrap(), entries);
}

#[test]
fn read_applies_the_context_like_the_reference() {
    let spec = spec(10, false);
    let entries = vec![
        entry(50, 1, 1, "click", Value::Null),
        entry(40, 2, 2, "save", Value::Null),
        entry(30, 3, 1, "click", Value::Null),
        entry(20, 4, 3, "click", Value::Null),
    ];
    let context = ReadContext {
        times: Times {
            now_ms: 100,
            until_ms: Some(45),
            since_ms: Some(25),
            ..Times::default()
        },
        actions: Some(["click".to_string()].into()),
        dedupe: true,
        ..ReadContext::default()
    };
    let bytes = encode(&entries, 3);
    let view = view::LastNView::parse(&bytes, 3).unwrap();
    let (rows, newest) = view.select(&spec, 1_000, &context).unwrap();
    assert_eq!(newest, Some(40));
    assert_eq!(rows.iter().map(|r| view.ts[*r]).collect::<Vec<_>>(), [30]);
    let everything = ReadContext {
        times: Times {
            now_ms: 100,
            ..Times::default()
        },
        limit: Some(2),
        ..ReadContext::default()
    };
    assert_eq!(view.select(&spec, 1_000, &everything).unwrap().0, [0, 1]);
    let not_these = ReadContext {
        exclude: ["i1".into()].into(),
        ..everything.clone()
    };
    assert_eq!(view.select(&spec, 1_000, &not_these).unwrap().0, [1, 3]);
    // The retention counts back from the view time, inclusive: 100 - 60 = 40.
    let unlimited = ReadContext {
        limit: None,
        ..everything.clone()
    };
    assert_eq!(view.select(&spec, 60, &unlimited).unwrap().0, [0, 1]);
    assert_eq!(
        view.select(&spec, 1_000, &unlimited).unwrap().0,
        [0, 1, 2, 3]
    );
    let window = ReadContext {
        times: Times {
            now_ms: 100,
            window_ms: Some(60),
            ..Times::default()
        },
        ..ReadContext::default()
    };
    assert_eq!(view.select(&spec, 1_000, &window).unwrap().0, [0, 1]);
}

#[test]
fn an_as_of_before_newer_events_that_took_the_room_is_refused() {
    let full = spec(2, false);
    let entries = vec![
        entry(300, 1, 1, "click", Value::Null),
        entry(200, 2, 2, "click", Value::Null),
    ];
    let bytes = encode(&entries, 3);
    let view = view::LastNView::parse(&bytes, 3).unwrap();
    let as_of = |ms: i64, limit: Option<usize>| ReadContext {
        times: Times {
            as_of_ms: Some(ms),
            now_ms: 10_000,
            ..Times::default()
        },
        limit,
        ..ReadContext::default()
    };
    // Older events may have been dropped to make room for the one at 300.
    let refusal = view.select(&full, 1_000, &as_of(250, None)).unwrap_err();
    assert_eq!(
        refusal,
        Refusal {
            view_ms: 250,
            earliest_ms: 300,
            why: "newer events took the room of older ones it needs",
        }
    );
    // A read that fills its limit needs nothing older: answered.
    assert_eq!(
        view.select(&full, 1_000, &as_of(250, Some(1))).unwrap().0,
        [1]
    );
    // A state that is not full dropped nothing: answered.
    let roomy = spec(3, false);
    assert_eq!(
        view.select(&roomy, 1_000, &as_of(250, None)).unwrap().0,
        [1]
    );
    // With dedupe_by, an item engaged again may have dropped an entry anywhere: refused.
    let deduped = spec(3, true);
    assert!(view.select(&deduped, 1_000, &as_of(250, Some(1))).is_err());
    // At or after the newest event, nothing is newer: answered.
    assert_eq!(
        view.select(&full, 1_000, &as_of(300, None)).unwrap().0,
        [0, 1]
    );
}

fn text_entry(ts: i64, values: [&str; 3]) -> Entry {
    Entry {
        ts,
        tie: 7,
        values: values.iter().map(|v| Value::Str((*v).into())).collect(),
    }
}

/// The text of every value of a state, as the read view sees it.
fn viewed(bytes: &[u8], rows: usize) -> Vec<Vec<Option<String>>> {
    let view = view::LastNView::parse(bytes, 3).unwrap();
    let mut buf = String::new();
    (0..rows)
        .map(|row| {
            (0..3)
                .map(|c| view.get(c, row).text(&mut buf).map(str::to_owned))
                .collect()
        })
        .collect()
}

#[test]
fn digit_ids_and_small_dictionaries_take_the_compact_forms() {
    let entries: Vec<Entry> = (0..40)
        .map(|i| {
            let item = format!("i{:08}", (i * 7_919) % 100_000);
            let action = ["click", "save", "share"][i % 3];
            text_entry(1_000 - i as i64, [&item, action, "home"])
        })
        .collect();
    let bytes = encode(&entries, 3);
    assert_eq!(bytes[0], FORMAT_VERSION);
    assert_eq!(decode(&bytes, 3).unwrap(), entries);
    let texts: Vec<Vec<Option<String>>> = entries
        .iter()
        .map(|e| {
            e.values
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect()
        })
        .collect();
    assert_eq!(viewed(&bytes, entries.len()), texts);
    // Digits: prefix and width once, then a varint of at most 3 bytes per id (< 2^21).
    let values: Vec<Flat<'_>> = entries.iter().map(|e| Flat::of(&e.values[0])).collect();
    let texts = strings(&values).unwrap();
    let shared = shared_prefix(&texts).unwrap();
    let (_, width, _) = digits_width(&texts, shared).unwrap();
    let mut digits = Vec::new();
    digits_form(&mut digits, &texts, shared, width);
    assert!(digits.len() <= 1 + 1 + 5 + 1 + 40 * 3, "{}", digits.len());
    // Three actions: 2 bits each, 10 bytes for 40 entries after the vocabulary.
    let actions: Vec<Flat<'_>> = entries.iter().map(|e| Flat::of(&e.values[1])).collect();
    let vocab = vocabulary(&actions, usize::MAX).unwrap();
    let mut packed = Vec::new();
    packed_form(&mut packed, &vocab);
    assert_eq!(packed.len(), packed_len(&vocab));
    // Mode, size, three tagged strings (tag, length, text), 40 x 2 bits.
    assert_eq!(packed.len(), 1 + 1 + (7 + 6 + 7) + 10);
}

#[test]
fn a_digits_number_wider_than_its_width_is_a_codec_error() {
    let entries = vec![
        text_entry(2, ["i01", "a", "x"]),
        text_entry(1, ["i02", "b", "y"]),
    ];
    let mut bytes = encode(&entries, 3);
    // Column 0 (after the header, two gaps, ties) in the digits form: numbers 1 and 2.
    let column = 1 + 1 + 1 + 1 + 1 + 2 * 4; // version, columns, count, newest, gap, ties
    assert_eq!(&bytes[column..column + 6], [DIGITS, 2, b'i', b'0', 1, 1]);
    bytes[column + 6] = 10; // "10" does not fit 1 digit
    assert!(matches!(decode(&bytes, 3), Err(CoreError::Codec(_))));
    assert!(view::LastNView::parse(&bytes, 3).is_err());
}

#[test]
fn a_state_of_format_version_1_is_read() {
    // Written by the version 1 encoder: five entries, digits ids in the prefixed form and
    // actions in the byte dictionary (forms 2 and 0, which version 2 still reads).
    let v1 = "010305c0ded5edee66e807e807e807e807e8030000e9030000ea030000eb030000ec0300000208\
              69303030303030300130013701340131013800020505636c69636b05047361766500010001000204\
              686f6d650000000000";
    let bytes: Vec<u8> = (0..v1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v1[i..i + 2], 16).unwrap())
        .collect();
    let entries = decode(&bytes, 3).unwrap();
    let items: Vec<&Value> = entries.iter().map(|e| &e.values[0]).collect();
    assert_eq!(
        items,
        [
            "i00000000",
            "i00000007",
            "i00000004",
            "i00000001",
            "i00000008"
        ]
        .map(|s| Value::Str(s.into()))
        .iter()
        .collect::<Vec<_>>()
    );
    assert_eq!(entries[0].ts, 1_767_225_604_000);
    assert_eq!(entries[4].tie, 1004);
    assert_eq!(viewed(&bytes, 5)[1][1].as_deref(), Some("save"));
    // Written again, it is version 2 with the same entries.
    let again = encode(&entries, 3);
    assert_eq!(again[0], 2);
    assert_eq!(decode(&again, 3).unwrap(), entries);
}

#[test]
fn json_values_round_trip_in_version_3_and_only_there() {
    // A kept list, object or big integer (as JSON text) in plain and dictionary columns.
    let json = |text: &str| Value::Json(text.into());
    let values = [
        json("{\"os\":\"ios\"}"),
        json("[1,2]"),
        json("{\"os\":\"ios\"}"),
    ];
    let entries: Vec<Entry> = (values.iter().enumerate())
        .map(|(n, v)| Entry {
            ts: 1_000 - n as i64,
            tie: n as u32,
            values: vec![
                v.clone(),
                json("1180591620717411303424"),
                Value::Str("x".into()),
            ],
        })
        .collect();
    let bytes = encode(&entries, 3);
    assert_eq!(bytes[0], JSON_VALUES_VERSION);
    assert_eq!(decode(&bytes, 3).unwrap(), entries);
    let view = view::LastNView::parse(&bytes, 3).unwrap();
    assert_eq!(view.get(0, 1), crate::value::ValueRef::Json("[1,2]"));
    // A build that reads version 2 alone refuses it, rather than misreading tag 6.
    let mut r = Reader::new(&bytes);
    assert!(r.readable_version("LastN", &[0x01, 0x02]).is_err());
    // Scalars alone: version 2, as before.
    let plain: Vec<Entry> = (entries.iter())
        .map(|e| Entry {
            values: vec![Value::Int(1); 3],
            ..e.clone()
        })
        .collect();
    assert_eq!(encode(&plain, 3)[0], FORMAT_VERSION);
}

proptest! {
    #[test]
    fn text_columns_round_trip_through_every_form(
        ids in prop::collection::vec((0u64..1_000, 1usize..6, any::<bool>()), 1..40),
    ) {
        // Fixed-width digits (the digits form), mixed widths and a non-digit (not), a
        // handful of values (dictionaries) or many.
        let entries: Vec<Entry> = ids
            .iter()
            .enumerate()
            .map(|(i, (n, width, odd))| {
                let item = if *odd { format!("x{n:0width$}y") } else { format!("i{n:05}") };
                let few = format!("a{}", n % 3);
                // Last: fixed-width digits, whose width is no count of bytes that follow.
                text_entry(1_000 - i as i64, [&item, &few, &format!("c{n:03}")])
            })
            .collect();
        let bytes = encode(&entries, 3);
        prop_assert_eq!(&decode(&bytes, 3).unwrap(), &entries);
        let texts: Vec<Vec<Option<String>>> = entries
            .iter()
            .map(|e| e.values.iter().map(|v| match v {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            }).collect())
            .collect();
        prop_assert_eq!(viewed(&bytes, entries.len()), texts);
    }
}

#[test]
fn a_digits_column_last_in_the_state_decodes() {
    // Regression: the width was read as a length of bytes to follow, so a last column of
    // two 3-digit ids (two 1-byte numbers left) failed to decode.
    let entries = vec![
        text_entry(2, ["a", "x", "c123"]),
        text_entry(1, ["a", "x", "c045"]),
    ];
    let bytes = encode(&entries, 3);
    assert_eq!(decode(&bytes, 3).unwrap(), entries);
    assert_eq!(viewed(&bytes, 2)[1][2].as_deref(), Some("c045"));
}

/// The column encoder as it was first written: every applicable form written out, then
/// the smallest (the earliest on a tie). The reference for `encode_refs`, which sizes the
/// forms first and writes only the chosen one.
fn every_form_then_the_smallest(values: &[Flat<'_>]) -> Vec<u8> {
    let mut best = vec![PLAIN];
    values.iter().for_each(|v| v.encode(&mut best));
    let written = |write: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        write(&mut out);
        out
    };
    let vocab = vocabulary(values, usize::MAX);
    let texts = strings(values);
    let shared = texts.as_deref().and_then(shared_prefix);
    let candidates = [
        vocab
            .as_ref()
            .map(|v| written(&|out| dictionary_form(out, v))),
        texts
            .as_deref()
            .zip(shared)
            .map(|(t, s)| written(&|out| prefixed_form(out, t, s))),
        texts.as_deref().zip(shared).and_then(|(t, s)| {
            let (_, width, _) = digits_width(t, s)?;
            Some(written(&|out| digits_form(out, t, s, width)))
        }),
        vocab.as_ref().map(|v| written(&|out| packed_form(out, v))),
    ];
    for candidate in candidates.into_iter().flatten() {
        if candidate.len() < best.len() {
            best = candidate;
        }
    }
    best
}

/// Columns that reach each form: fixed-width ids (digits), ids of varied width (prefixed),
/// a few distinct values (dictionary, packed), anything (plain), and a little of each.
pub(super) fn arb_column() -> impl Strategy<Value = Vec<Value>> {
    let text = |f: fn(u64) -> String| (0u64..100_000).prop_map(move |n| Value::Str(f(n)));
    let mixed = prop_oneof![
        text(|n| format!("i{n:06}")),
        text(|n| format!("cat{}", n % 5)),
        "[aé€]{0,3}".prop_map(Value::Str),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-300i64..300).prop_map(Value::Int),
        prop::sample::select(vec![0.5, 1.0, -2.25]).prop_map(Value::Float),
    ];
    let column = |values: BoxedStrategy<Value>| prop::collection::vec(values, 0..300);
    prop_oneof![
        column(text(|n| format!("i{n:08}")).boxed()),
        column(text(|n| format!("item-{n}")).boxed()),
        column(text(|n| format!("c{:03}", n % 7)).boxed()),
        column(text(|n| format!("é{}", n % 300)).boxed()),
        column(mixed.boxed()),
    ]
}

proptest! {
    #[test]
    fn sizing_the_forms_first_chooses_and_writes_what_writing_them_all_did(
        values in arb_column(),
    ) {
        let refs: Vec<Flat<'_>> = values.iter().map(Flat::of).collect();
        let mut out = Vec::new();
        encode_refs(&mut out, &refs);
        prop_assert_eq!(&out, &every_form_then_the_smallest(&refs));
        prop_assert_eq!(decode_values(&mut Reader::new(&out), values.len()).unwrap(), values);
    }

    #[test]
    fn a_column_of_one_entry_or_none_is_written_as_all_its_forms_chose(
        values in arb_column().prop_map(|column| column.into_iter().take(2).collect::<Vec<_>>()),
    ) {
        let refs: Vec<Flat<'_>> = values.iter().map(Flat::of).collect();
        let mut out = Vec::new();
        encode_refs(&mut out, &refs);
        prop_assert_eq!(&out, &every_form_then_the_smallest(&refs));
    }
}

/// `unpack_codes` as it was: every code unpacked as a 128-bit value, then checked.
fn unpack_codes_reference(bytes: &[u8], count: usize, size: usize) -> Option<Vec<u32>> {
    let mut r = Reader::new(bytes);
    let packed = r
        .bytes((count * code_bits(size) as usize).div_ceil(8))
        .ok()?;
    crate::varint::unpack_bits(packed, count, code_bits(size))
        .into_iter()
        .map(|code| u32::try_from(code).ok().filter(|c| (*c as usize) < size))
        .collect()
}

proptest! {
    #[test]
    fn codes_unpack_as_they_did(
        bytes in prop::collection::vec(any::<u8>(), 0..40),
        count in 0usize..40,
        size in prop_oneof![1usize..300, Just(1usize << 33)],
    ) {
        let fast = unpack_codes(&mut Reader::new(&bytes), count, size).ok();
        prop_assert_eq!(fast, unpack_codes_reference(&bytes, count, size));
    }
}

/// `encode` as it was: the header, then each column written as it was chosen (the buffer
/// grown as it went).
fn encode_reference(entries: &[Entry], columns: usize) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    put_u64(&mut out, columns as u64);
    put_u64(&mut out, entries.len() as u64);
    if let Some(first) = entries.first() {
        put_i64(&mut out, first.ts);
        for pair in entries.windows(2) {
            put_u64(&mut out, pair[0].ts.wrapping_sub(pair[1].ts) as u64);
        }
        for entry in entries {
            out.extend_from_slice(&entry.tie.to_le_bytes());
        }
    }
    for column in 0..columns {
        let values: Vec<Flat<'_>> = entries
            .iter()
            .map(|e| Flat::of(&e.values[column]))
            .collect();
        encode_refs(&mut out, &values);
    }
    out
}

proptest! {
    #[test]
    fn a_state_sized_before_it_is_written_has_the_bytes_it_had(
        events in arb_events(),
        column in arb_column(),
        ts in prop::collection::vec(any::<i64>(), 0..300),
    ) {
        // The random events' three kept fields, and entries with the forms' columns and
        // times far apart (gaps of up to ten varint bytes).
        let (old, _) = combine(&spec(50, false), 1 << 40, Vec::new(), events);
        prop_assert_eq!(encode(&old, 3), encode_reference(&old, 3));
        let mut times = ts;
        times.sort_unstable_by(|a, b| b.cmp(a));
        let entries: Vec<Entry> = (times.iter().zip(&column))
            .map(|(ts, v)| Entry { ts: *ts, tie: *ts as u32, values: vec![v.clone(), Value::Null] })
            .collect();
        prop_assert_eq!(encode(&entries, 2), encode_reference(&entries, 2));
        prop_assert_eq!(encode(&entries, 0), encode_reference(&entries, 0));
    }
}

/// `vocabulary` as it was: every value's code found in a map.
fn vocabulary_reference<'v>(values: &[Flat<'v>], beat: usize) -> Option<Vocabulary<'v>> {
    let room = values.len().min(VOCABULARY_ROOM);
    let mut vocab: HashMap<ExactKey<'_>, usize> = HashMap::with_capacity(room);
    let mut order: Vec<Flat<'v>> = Vec::with_capacity(room);
    let mut codes = Vec::with_capacity(values.len());
    let mut least = 2;
    for v in values {
        let code = *vocab.entry(v.exact_key()).or_insert_with(|| {
            order.push(*v);
            least += encoded_len(v);
            order.len() - 1
        });
        if least > beat {
            return None;
        }
        codes.push(code);
    }
    if order.len() == values.len() && values.len() > 1 {
        return None;
    }
    Some((order, codes))
}

proptest! {
    #[test]
    fn a_vocabulary_found_by_a_scan_first_is_what_a_map_found(
        values in arb_column(),
        beat in prop_oneof![Just(usize::MAX), 0usize..400],
        distinct in 1u64..40,
    ) {
        // Also few distinct values of every kind (the scan, then the map past eight).
        let few: Vec<Value> = (values.iter().enumerate())
            .map(|(i, v)| if i % 2 == 0 { v.clone() } else { Value::Int((i as u64 % distinct) as i64) })
            .collect();
        for column in [&values, &few] {
            let flats: Vec<Flat<'_>> = column.iter().map(Flat::of).collect();
            prop_assert_eq!(vocabulary(&flats, beat), vocabulary_reference(&flats, beat));
        }
    }
}
