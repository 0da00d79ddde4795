use hashbrown::HashMap;

use proptest::prelude::*;

use super::*;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const BASE: i64 = 1_767_225_600_000; // 2026-01-01T00:00Z
const DIM: usize = 3;

fn spec(half_life: i64) -> MeanVectorSpec {
    MeanVectorSpec {
        of: "embedding".into(),
        dim: DIM,
        decay: DecayParams {
            half_life_ms: half_life,
            weights: HashMap::from([("click".into(), 2.0), ("hide".into(), -1.0)]),
            default_weight: 1.0,
        },
    }
}

/// `(ts, action, vector)` rows.
type Raw = (i64, Value, Option<Vec<f64>>);

fn rows_of(raw: &[Raw]) -> Vec<VectorRow<'_>> {
    raw.iter()
        .map(|(ts, action, vector)| VectorRow {
            ts: *ts,
            action,
            vector: vector.as_deref(),
        })
        .collect()
}

fn apply_in_batches(spec: &MeanVectorSpec, retention: i64, raw: &[Raw], cuts: &[usize]) -> Vec<u8> {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (raw.len() + 1)).collect();
    bounds.push(raw.len());
    bounds.sort_unstable();
    let (mut stored, mut start) = (None::<Vec<u8>>, 0);
    for end in bounds {
        if end <= start {
            continue;
        }
        let mut part = raw[start..end].to_vec();
        part.sort_by_key(|r| r.0);
        let (bytes, _) = apply_stored(spec, retention, stored.as_deref(), &rows_of(&part)).unwrap();
        stored = Some(bytes);
        start = end;
    }
    stored.unwrap_or_default()
}

/// A read's answer with its floats as bits: bit-equality, NaN included.
type Bits = Result<(Option<Vec<u64>>, u64, Option<i64>), Refusal>;

fn bits(read: Result<(MeanAnswer, Option<i64>), Refusal>) -> Bits {
    read.map(|(answer, newest)| {
        let vector = answer
            .vector
            .map(|v| v.iter().map(|c| c.to_bits()).collect());
        (vector, answer.weight.to_bits(), newest)
    })
}

fn raw_rows() -> impl Strategy<Value = Vec<Raw>> {
    let component = prop_oneof![
        (-1000i32..1000).prop_map(|c| f64::from(c) / 997.0),
        Just(f64::NAN),
    ];
    let vector = prop::option::of(prop::collection::vec(component, DIM - 1..=DIM));
    let action =
        prop::sample::select(vec!["click", "hide", "view"]).prop_map(|a| Value::Str(a.to_owned()));
    prop::collection::vec(
        ((0i64..400).prop_map(|h| BASE + h * HOUR), action, vector),
        1..50,
    )
}

/// Floats about the places rounding can go wrong: halves, the 2^52 edge, tiny values.
fn roundable() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        (-1e7f64..1e7),
        (-(1i64 << 53)..(1i64 << 53)).prop_map(|n| n as f64 / 2.0),
        (-8i64..8).prop_map(|d| INTEGRAL + d as f64 * 0.5),
        (-8i64..8).prop_map(|d| -INTEGRAL + d as f64 * 0.5),
        (-1e-300f64..1e-300),
    ]
}

proptest! {
    #[test]
    fn rounding_without_libm_is_rounding_ties_to_even(x in roundable()) {
        let (ours, std) = (round_ties_even(x), x.round_ties_even());
        prop_assert!(ours == std || (ours.is_nan() && std.is_nan()), "{x}: {ours} vs {std}");
        prop_assert_eq!(ours as i64, std as i64);
        let scaled = x * 2f64.powi(COMPONENT_BITS);
        prop_assert_eq!(
            scaled.abs() < MAX_QUANTIZED,
            scaled.round_ties_even().abs() < MAX_QUANTIZED
        );
    }
}

proptest! {
    #[test]
    fn any_batching_gives_the_same_bytes(
        raw in raw_rows(),
        cuts in prop::collection::vec(any::<usize>(), 0..5),
        half_life in prop::sample::select(vec![HOUR, 7 * DAY]),
        retention in prop::sample::select(vec![DAY, 10 * DAY]),
    ) {
        let spec = spec(half_life);
        prop_assert_eq!(
            apply_in_batches(&spec, retention, &raw, &cuts),
            apply_in_batches(&spec, retention, &raw, &[])
        );
    }

    /// The weight and mean equal a naive float recompute within the documented bound of
    /// `MeanVector` (2^-17 per event on the weight; on a component, 2^-17 plus
    /// n · 2^-16 · max|component| / W).
    #[test]
    fn the_mean_equals_a_naive_recompute(raw in raw_rows(), after in 0i64..(3 * DAY)) {
        let (spec, retention) = (spec(7 * DAY), 90 * DAY);
        let mut sorted: Vec<Raw> = raw
            .into_iter()
            .filter(|(_, _, v)| v.as_ref().is_some_and(|v| quantize(v, DIM).is_some()))
            .filter(|(_, action, _)| spec.decay.weight(action) > 0.0)
            .collect();
        sorted.sort_by_key(|r| r.0);
        prop_assume!(!sorted.is_empty());
        let (state, _) = spec.apply(retention, None, &rows_of(&sorted));
        let view = state.newest + after;
        let times = Times { as_of_ms: Some(view), ..Times::default() };
        let (answer, _) = spec.read(retention, &state, &times).unwrap();
        let (mut weight, mut sums) = (0.0, [0.0; DIM]);
        for (ts, action, vector) in &sorted {
            let w = spec.decay.weight(action)
                * 2f64.powf((ts - view) as f64 / spec.decay.half_life_ms as f64);
            weight += w;
            for (sum, c) in sums.iter_mut().zip(vector.as_ref().unwrap()) {
                *sum += w * c;
            }
        }
        let n = sorted.len() as f64;
        prop_assert!((answer.weight - weight).abs() <= n * 2f64.powi(-17) + 1e-12);
        let bound = 2f64.powi(-17) + n * 2f64.powi(-16) * 1.01 / weight;
        for (got, sum) in answer.vector.unwrap().iter().zip(sums) {
            prop_assert!((got - sum / weight).abs() <= bound, "{got} vs {}", sum / weight);
        }
    }

    /// The serving path (`read_stored`, over the bytes) answers exactly as `read` over the
    /// decoded state: bit-equal floats, the same refusals.
    #[test]
    fn reading_the_bytes_equals_reading_the_decoded_state(
        raw in raw_rows(),
        half_life in prop::sample::select(vec![HOUR, 7 * DAY]),
        retention in prop::sample::select(vec![DAY, 10 * DAY]),
        view_offset in -(3 * DAY)..(3 * DAY),
        as_of in any::<bool>(),
    ) {
        let spec = spec(half_life);
        let bytes = apply_in_batches(&spec, retention, &raw, &[]);
        let bucket_ms = spec.buckets(retention).bucket_ms;
        let state = decode(&bytes, DIM, bucket_ms).unwrap();
        let at = state.newest + view_offset;
        let times = Times { as_of_ms: as_of.then_some(at), now_ms: at, ..Times::default() };
        let stored = spec.read_stored(retention, &bytes, &times).unwrap();
        let decoded = spec.read(retention, &state, &times);
        prop_assert_eq!(bits(stored), bits(decoded));
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let decoded = decode(&bytes, DIM, DAY);
        // What the serving path reads, it reads as `decode` does.
        let stored = spec(DAY).read_stored(DAY, &bytes, &Times::default());
        prop_assert_eq!(stored.is_ok(), decoded.is_ok());
        if let (Ok(stored), Ok(state)) = (stored, decoded) {
            prop_assert_eq!(bits(stored), bits(spec(DAY).read(DAY, &state, &Times::default())));
        }
    }
}

#[test]
fn components_beyond_the_bound_or_not_finite_add_nothing() {
    assert_eq!(
        quantize(&[0.5, -1.0, 3.0], 3),
        Some(vec![32_768, -65_536, 196_608])
    );
    assert_eq!(quantize(&[0.5, f64::INFINITY, 3.0], 3), None);
    assert_eq!(quantize(&[0.5, 1e300, 3.0], 3), None);
    assert_eq!(quantize(&[0.5, 3.0], 3), None);
}

/// A bucket of one event stores the quantized components (divided by the event's scale),
/// not their products with it: about 3 bytes a component instead of 5.
#[test]
fn a_single_event_bucket_stores_the_components() {
    let spec = MeanVectorSpec {
        dim: 32,
        ..spec(7 * DAY)
    };
    let vector: Vec<f64> = (0..32).map(|i| f64::from(i) / 40.0 - 0.4).collect();
    let raw: Vec<Raw> = (0..92)
        .map(|d| {
            (
                BASE + d * DAY + 1000,
                Value::Str("click".into()),
                Some(vector.clone()),
            )
        })
        .collect();
    let (state, _) = spec.apply(90 * DAY, None, &rows_of(&raw));
    let bytes = encode(&state, 32, DAY);
    assert!(bytes.len() < 92 * 32 * 3, "{}", bytes.len());
    assert_eq!(decode(&bytes, 32, DAY).unwrap(), state);
}

/// A bucket packs into fewer bytes than its dimension (all components 0: a width of 0).
#[test]
fn a_bucket_smaller_than_its_dimension_round_trips() {
    let spec = MeanVectorSpec {
        dim: 32,
        ..spec(7 * DAY)
    };
    let raw: Vec<Raw> = vec![(BASE, Value::Str("click".into()), Some(vec![0.0; 32]))];
    let (state, _) = spec.apply(90 * DAY, None, &rows_of(&raw));
    let bytes = encode(&state, 32, DAY);
    assert!(bytes.len() < 32, "{}", bytes.len());
    assert_eq!(decode(&bytes, 32, DAY).unwrap(), state);
}

fn euclid(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

proptest! {
    #[test]
    fn the_common_divisor_is_euclids(
        sums in prop::collection::vec(
            prop_oneof![
                any::<i64>().prop_map(i128::from),
                (any::<i32>(), 0u32..40).prop_map(|(v, shift)| i128::from(v) << shift),
                any::<i128>().prop_map(|v| v >> 2),
                Just(0i128),
            ],
            0..8,
        ),
    ) {
        let expected = sums.iter().fold(0, |d, s| euclid(d, s.unsigned_abs()));
        prop_assert_eq!(common_divisor(&sums), expected);
    }

    #[test]
    fn the_binary_gcd_is_euclids(a in any::<u64>(), b in any::<u64>(), shift in 0u32..20) {
        let (a, b) = (a >> shift, b >> (shift / 2));
        prop_assert_eq!(u128::from(binary_gcd(a, b)), euclid(u128::from(a), u128::from(b)));
    }
}

proptest! {
    /// The 64-bit product is the 128-bit saturating one it takes over from, at the edges
    /// too (products past i64, scales past i64, saturation).
    #[test]
    fn scaled_equals_the_128_bit_saturating_product(
        q in prop_oneof![
            -(1i64 << 62)..(1i64 << 62),
            prop::sample::select(vec![0, 1, -1, (1 << 62) - 1, -(1 << 62) + 1]),
        ],
        scale in prop_oneof![
            -(1i128 << 50)..(1i128 << 50),
            any::<i64>().prop_map(i128::from),
            any::<i128>(),
            prop::sample::select(vec![i128::MAX, i128::MIN, i128::from(i64::MAX) + 1]),
        ],
    ) {
        let q = i128::from(q);
        let narrow = i64::try_from(scale).ok();
        prop_assert_eq!(scaled(q, scale, narrow), q.saturating_mul(scale));
    }
}

proptest! {
    /// A bucket's divisor and quotients as `encode` worked them out before, in 128 bits.
    #[test]
    fn quotients_equal_the_128_bit_ones(
        base in prop::collection::vec(any::<i64>(), 0..40),
        factor in prop_oneof![Just(1i128), 1i128..5000, Just(1i128 << 40)],
        wide in any::<bool>(),
    ) {
        let mut sums: Vec<i128> = base.iter().map(|b| (i128::from(*b) >> 20) * factor).collect();
        if wide {
            sums.push(i128::from(i64::MIN));
        }
        let mut got = Vec::new();
        let d = quotients_into(&sums, &mut got);
        let want_d = common_divisor(&sums);
        let want: Vec<u128> = sums
            .iter()
            .map(|sum| zigzag(if want_d > 1 { divide(*sum, want_d) } else { *sum }))
            .collect();
        prop_assert_eq!(d, want_d);
        prop_assert_eq!(got, want);
    }
}

proptest! {
    /// Applying over the stored bytes while re-encoding only the buckets the rows reach
    /// writes the bytes that decoding and encoding every bucket writes, and counts the same
    /// expired rows: rows in old buckets, in new ones, past the retention of the old ones, and
    /// before the buckets kept.
    #[test]
    fn splicing_the_reached_buckets_equals_encoding_them_all(
        before in raw_rows(),
        after in raw_rows(),
        shift in -(20 * DAY)..(30 * DAY),
        half_life in prop::sample::select(vec![HOUR, 7 * DAY]),
        retention in prop::sample::select(vec![DAY, 10 * DAY, 90 * DAY]),
    ) {
        let spec = spec(half_life);
        let old = apply_in_batches(&spec, retention, &before, &[]);
        let mut later: Vec<Raw> = after.into_iter().map(|(ts, a, v)| (ts + shift, a, v)).collect();
        later.sort_by_key(|r| r.0);
        let rows = rows_of(&later);
        prop_assert_eq!(
            apply_spliced(&spec, retention, Some(&old), &rows).unwrap(),
            apply_stored(&spec, retention, Some(&old), &rows).unwrap()
        );
    }

    /// Whatever the stored bytes (a state with a byte changed, or cut short), splicing does
    /// not panic, and where decoding them all succeeds it writes the same state: not
    /// always the same bytes, as a damaged bucket the rows do not reach may still decode
    /// (a varint with a needless continuation byte, a divisor smaller than the sums'
    /// greatest common one), and it is carried as it was where the other path writes it
    /// again in its canonical form.
    #[test]
    fn splicing_damaged_bytes_never_panics(
        before in raw_rows(),
        after in raw_rows(),
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let mut bytes = apply_in_batches(&spec(DAY), DAY, &before, &[]);
        let at = at % bytes.len();
        if cut { bytes.truncate(at) } else { bytes[at] = byte }
        let mut later = after;
        later.sort_by_key(|r| r.0);
        let rows = rows_of(&later);
        let spliced = apply_spliced(&spec(DAY), DAY, Some(&bytes), &rows);
        if let Ok((stored, expired)) = apply_stored(&spec(DAY), DAY, Some(&bytes), &rows) {
            let (spliced, spliced_expired) = spliced.unwrap();
            prop_assert_eq!(spliced_expired, expired);
            let bucket_ms = spec(DAY).buckets(DAY).bucket_ms;
            prop_assert_eq!(
                decode(&spliced, DIM, bucket_ms).unwrap(),
                decode(&stored, DIM, bucket_ms).unwrap()
            );
        }
    }
}
