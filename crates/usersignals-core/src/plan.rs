//! Signal plans: what the Python DSL compiles a signal to, parsed once and then executed.
//!
//! The JSON is `{"key", "where", "aggregate", "retention_ms"}` where `where` and `aggregate`
//! are exactly `Signal.to_json()`'s parts (see `usersignals.processing.native`).

use std::collections::HashMap;

use serde_json::Value as Json;

use crate::decay::DecayParams;
use crate::decayed::DecayedSpec;
use crate::distinct::DistinctSpec;
use crate::error::CoreError;
use crate::mean_vector::MeanVectorSpec;
use crate::seen::SeenSpec;
use crate::tiles::TileSpec;
use crate::value::Value;

#[derive(Debug, Clone)]
pub struct Plan {
    pub key: String,
    pub filter: Option<Predicate<String>>,
    pub aggregate: Aggregation,
    pub retention_ms: i64,
}

#[derive(Debug, Clone)]
pub enum Aggregation {
    LastN(LastNSpec),
    /// The spec, and the field whose Python `str()` is hashed.
    Distinct(DistinctSpec, String),
    /// `Count` / `Sum` (see `tiles.rs`).
    Tiles(TileSpec),
    /// `FirstSeen` / `LastSeen`; the group is the `by` field's Python `str()` (a text column).
    Seen(SeenSpec),
    /// `DecayedScores` (see `decayed.rs`).
    DecayedScores(DecayedSpec),
    /// `MeanVector`; its vector field is read as a column of floats (see `mean_vector.rs`).
    MeanVector(MeanVectorSpec),
}

/// The column a Distinct reads: the field's values as Python's `str()` renders them (the
/// hash input of the reference), which the binding's caller provides under this name.
pub fn text_column(field: &str) -> String {
    format!("str:{field}")
}

/// The column a MeanVector reads: the field's values as vectors of floats (Python's
/// `float()` of each component), which the binding builds from the column of this name.
pub fn vector_column(field: &str) -> String {
    format!("vec:{field}")
}

#[derive(Debug, Clone)]
pub struct LastNSpec {
    pub n: usize,
    pub keep: Vec<String>,
    /// Position in `keep` of the field entries are deduplicated by.
    pub dedupe_by: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    In,
    NotIn,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
}

/// A filter over one event; `F` names a field (a name when parsed, a column once bound).
#[derive(Debug, Clone)]
pub enum Predicate<F> {
    Compare {
        field: F,
        op: Op,
        operand: Vec<Value>,
    },
    And(Vec<Predicate<F>>),
    Or(Vec<Predicate<F>>),
    Not(Box<Predicate<F>>),
}

impl Plan {
    pub fn from_json(text: &str) -> Result<Plan, CoreError> {
        let json: Json = serde_json::from_str(text)
            .map_err(|e| CoreError::Plan(format!("plan is not JSON: {e}")))?;
        let key = json["key"]
            .as_str()
            .ok_or_else(|| missing("key"))?
            .to_owned();
        let retention_ms = json["retention_ms"]
            .as_i64()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| missing("retention_ms"))?;
        let filter = match &json["where"] {
            Json::Null => None,
            w => Some(Predicate::from_json(w)?),
        };
        let aggregate = Aggregation::from_json(&json["aggregate"])?;
        Ok(Plan {
            key,
            filter,
            aggregate,
            retention_ms,
        })
    }

    /// Every field the plan reads, filter and aggregation, each once, in a fixed order.
    pub fn fields(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        if let Some(filter) = &self.filter {
            filter.collect_fields(&mut names);
        }
        names.extend(self.aggregate.columns());
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }
}

pub(crate) fn missing(what: &str) -> CoreError {
    CoreError::Plan(format!("missing or invalid {what:?}"))
}

impl Aggregation {
    /// The columns an aggregation reads, in the order its kernel takes them (tiles: the `by`
    /// fields, then the summed field; seen: the `by` field's text, if any).
    pub fn columns(&self) -> Vec<String> {
        match self {
            Aggregation::Tiles(spec) => spec.by.iter().chain(&spec.of).cloned().collect(),
            Aggregation::Seen(spec) => spec.by.iter().map(|by| text_column(by)).collect(),
            Aggregation::LastN(spec) => spec.keep.clone(),
            Aggregation::Distinct(_, of) => vec![text_column(of)],
            Aggregation::DecayedScores(spec) => vec![spec.key.clone(), "action".into()],
            Aggregation::MeanVector(spec) => vec!["action".into(), vector_column(&spec.of)],
        }
    }

    fn from_json(json: &Json) -> Result<Aggregation, CoreError> {
        match json["kind"].as_str() {
            Some("last_n") => last_n_from_json(json).map(Aggregation::LastN),
            Some("distinct") => {
                let of = json["of"].as_str().ok_or_else(|| missing("of"))?.to_owned();
                Ok(Aggregation::Distinct(distinct_from_json(json)?, of))
            }
            Some("count" | "sum") => crate::tiles::spec_from_json(json).map(Aggregation::Tiles),
            Some(kind @ ("first_seen" | "last_seen")) => {
                let by = match &json["by"] {
                    Json::Null => None,
                    Json::String(name) => Some(name.clone()),
                    _ => return Err(missing("by")),
                };
                let latest = kind == "last_seen";
                Ok(Aggregation::Seen(SeenSpec { by, latest }))
            }
            Some("decayed_scores") => Ok(Aggregation::DecayedScores(DecayedSpec {
                key: json["key"]
                    .as_str()
                    .ok_or_else(|| missing("key"))?
                    .to_owned(),
                decay: DecayParams::from_json(json)?,
                top_k: json["top_k"]
                    .as_u64()
                    .filter(|k| *k >= 1)
                    .ok_or_else(|| missing("top_k"))? as usize,
            })),
            Some("mean_vector") => Ok(Aggregation::MeanVector(MeanVectorSpec {
                of: json["of"].as_str().ok_or_else(|| missing("of"))?.to_owned(),
                dim: json["dim"]
                    .as_u64()
                    .filter(|d| *d >= 1)
                    .ok_or_else(|| missing("dim"))? as usize,
                decay: DecayParams::from_json(json)?,
            })),
            other => Err(CoreError::Plan(format!(
                "aggregation {other:?} is not native"
            ))),
        }
    }
}

/// A `LastN` plan from its `to_json()`.
fn last_n_from_json(json: &Json) -> Result<LastNSpec, CoreError> {
    let n = json["n"]
        .as_u64()
        .filter(|n| *n >= 1)
        .ok_or_else(|| missing("n"))?;
    let keep: Vec<String> = json["keep"]
        .as_array()
        .ok_or_else(|| missing("keep"))?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| missing("keep")))
        .collect::<Result<_, _>>()?;
    let dedupe_by = match &json["dedupe_by"] {
        Json::Null => None,
        Json::String(name) => Some(
            keep.iter()
                .position(|k| k == name)
                .ok_or_else(|| CoreError::Plan(format!("dedupe_by {name:?} not kept")))?,
        ),
        _ => return Err(missing("dedupe_by")),
    };
    Ok(LastNSpec {
        n: n as usize,
        keep,
        dedupe_by,
    })
}

/// A `Distinct` plan's registers and buckets from its `to_json()` (with `bucket_ms`, which
/// the glue adds).
fn distinct_from_json(json: &Json) -> Result<DistinctSpec, CoreError> {
    let precision = json["precision"]
        .as_u64()
        .filter(|p| (4..=16).contains(p))
        .ok_or_else(|| missing("precision"))?;
    let bucket_ms = json["bucket_ms"]
        .as_i64()
        .filter(|b| *b > 0)
        .ok_or_else(|| missing("bucket_ms"))?;
    Ok(DistinctSpec {
        precision: precision as u32,
        bucket_ms,
    })
}

impl Predicate<String> {
    pub fn from_json(json: &Json) -> Result<Self, CoreError> {
        let obj = json.as_object().ok_or_else(|| missing("where"))?;
        for (name, build) in [("and", Predicate::And as fn(_) -> _), ("or", Predicate::Or)] {
            if let Some(parts) = obj.get(name) {
                let parts = parts.as_array().ok_or_else(|| missing(name))?;
                return Ok(build(
                    parts
                        .iter()
                        .map(Self::from_json)
                        .collect::<Result<_, _>>()?,
                ));
            }
        }
        if let Some(inner) = obj.get("not") {
            return Ok(Predicate::Not(Box::new(Self::from_json(inner)?)));
        }
        let field = obj
            .get("field")
            .and_then(Json::as_str)
            .ok_or_else(|| missing("field"))?;
        let op = match obj.get("op").and_then(Json::as_str) {
            Some("in") => Op::In,
            Some("not_in") => Op::NotIn,
            Some("==") => Op::Eq,
            Some("!=") => Op::Ne,
            Some(">") => Op::Gt,
            Some(">=") => Op::Ge,
            Some("<") => Op::Lt,
            Some("<=") => Op::Le,
            Some("exists") => Op::Exists,
            other => return Err(CoreError::Plan(format!("unknown operator {other:?}"))),
        };
        let value = obj.get("value").unwrap_or(&Json::Null);
        let operand = match (op, value) {
            (Op::In | Op::NotIn, Json::Array(values)) => values
                .iter()
                .map(Value::from_json)
                .collect::<Result<_, _>>()?,
            (Op::In | Op::NotIn, _) => return Err(missing("value list")),
            (_, v) => vec![Value::from_json(v)?],
        };
        Ok(Predicate::Compare {
            field: field.to_owned(),
            op,
            operand,
        })
    }

    fn collect_fields(&self, out: &mut Vec<String>) {
        match self {
            Predicate::Compare { field, .. } => out.push(field.clone()),
            Predicate::And(parts) | Predicate::Or(parts) => {
                parts.iter().for_each(|p| p.collect_fields(out))
            }
            Predicate::Not(inner) => inner.collect_fields(out),
        }
    }

    /// The same predicate with each field name replaced by its column position.
    pub fn bind(&self, columns: &HashMap<&str, usize>) -> Result<Predicate<usize>, CoreError> {
        Ok(match self {
            Predicate::Compare { field, op, operand } => Predicate::Compare {
                field: *columns
                    .get(field.as_str())
                    .ok_or_else(|| CoreError::Batch(format!("no column for field {field:?}")))?,
                op: *op,
                operand: operand.clone(),
            },
            Predicate::And(parts) => Predicate::And(
                parts
                    .iter()
                    .map(|p| p.bind(columns))
                    .collect::<Result<_, _>>()?,
            ),
            Predicate::Or(parts) => Predicate::Or(
                parts
                    .iter()
                    .map(|p| p.bind(columns))
                    .collect::<Result<_, _>>()?,
            ),
            Predicate::Not(inner) => Predicate::Not(Box::new(inner.bind(columns)?)),
        })
    }
}

impl Predicate<usize> {
    /// Whether event `row` passes, with the same outcome as the Python predicate.
    pub fn accepts(&self, columns: &[Vec<Value>], row: usize) -> bool {
        match self {
            Predicate::Compare { field, op, operand } => {
                let v = &columns[*field][row];
                match op {
                    Op::In => contains(operand, v),
                    Op::NotIn => !contains(operand, v),
                    Op::Eq => v.py_eq(&operand[0]),
                    Op::Ne => !v.py_eq(&operand[0]),
                    Op::Exists => *v != Value::Null,
                    Op::Gt => v.py_cmp(&operand[0]).is_some_and(|o| o.is_gt()),
                    Op::Ge => v.py_cmp(&operand[0]).is_some_and(|o| o.is_ge()),
                    Op::Lt => v.py_cmp(&operand[0]).is_some_and(|o| o.is_lt()),
                    Op::Le => v.py_cmp(&operand[0]).is_some_and(|o| o.is_le()),
                }
            }
            Predicate::And(parts) => parts.iter().all(|p| p.accepts(columns, row)),
            Predicate::Or(parts) => parts.iter().any(|p| p.accepts(columns, row)),
            Predicate::Not(inner) => !inner.accepts(columns, row),
        }
    }
}

/// Whether `v` is among `operand` under Python's equality. A text equals only a text of the
/// same characters, compared inline here: the filter runs per event and plan, and `py_eq`'s
/// general path for every operand was most of its time (callgrind, bench/engine.py).
fn contains(operand: &[Value], v: &Value) -> bool {
    match v {
        Value::Str(text) => (operand.iter()).any(|o| matches!(o, Value::Str(t) if t == text)),
        _ => operand.iter().any(|o| v.py_eq(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"{"key": "recent@1", "retention_ms": 1000,
        "where": {"and": [{"field": "action", "op": "in", "value": ["click", "save"]},
                          {"not": {"field": "attrs.dwell", "op": "<", "value": 5}}]},
        "aggregate": {"kind": "last_n", "n": 3, "keep": ["item_id", "action"],
                      "dedupe_by": "item_id"}}"#;

    #[test]
    fn parses_and_lists_fields_once() {
        let plan = Plan::from_json(PLAN).unwrap();
        assert_eq!(plan.fields(), ["action", "attrs.dwell", "item_id"]);
        let Aggregation::LastN(spec) = &plan.aggregate else {
            panic!("not a LastN plan")
        };
        assert_eq!(spec.dedupe_by, Some(0));
    }

    #[test]
    fn filters_like_python() {
        let plan = Plan::from_json(PLAN).unwrap();
        let names: HashMap<&str, usize> = [("action", 0), ("attrs.dwell", 1)].into();
        let filter = plan.filter.unwrap().bind(&names).unwrap();
        let columns = vec![
            vec![
                Value::Str("click".into()),
                Value::Str("click".into()),
                Value::Str("hide".into()),
            ],
            // a missing or mistyped dwell never matches "<": so `not` accepts the event
            vec![Value::Int(2), Value::Str("x".into()), Value::Null],
        ];
        let got: Vec<bool> = (0..3).map(|row| filter.accepts(&columns, row)).collect();
        assert_eq!(got, [false, true, false]);
    }

    #[test]
    fn a_text_is_in_only_texts_of_its_characters() {
        let operand = vec![Value::Str("1".into()), Value::Int(2), Value::Float(3.0)];
        let filter = Predicate::Compare {
            field: 0,
            op: Op::In,
            operand,
        };
        let columns = [vec![
            Value::Str("1".into()),
            Value::Str("2".into()),
            Value::Str("3.0".into()),
            Value::Int(1),
            Value::Bool(false),
            Value::Float(2.0),
            Value::Int(3),
        ]];
        let got: Vec<bool> = (0..7).map(|row| filter.accepts(&columns, row)).collect();
        assert_eq!(got, [true, false, false, false, false, true, true]);
    }

    #[test]
    fn unknown_aggregation_is_a_plan_error() {
        let err = Plan::from_json(
            r#"{"key": "k", "retention_ms": 1, "where": null,
            "aggregate": {"kind": "user_defined"}}"#,
        )
        .unwrap_err();
        assert!(matches!(err, CoreError::Plan(_)));
    }
}
