//! Canonical JSON, so a hash over a JSON value can be recomputed by anyone (an auditor with
//! `jq -cS` or any RFC 8785 library): object keys sorted by their UTF-16 code units, no
//! insignificant whitespace, strings escaped as serde_json does (the RFC 8785 rules for the
//! values we hash: only strings, booleans, integers and null occur).

use serde_json::Value;

pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::to_string;

    #[test]
    fn keys_are_sorted_at_every_level_without_whitespace() {
        let v = json!({"b": 1, "a": {"z": [true, null, "x\n\"y\""], "y": -2}, "A": "é"});
        assert_eq!(to_string(&v), r#"{"A":"é","a":{"y":-2,"z":[true,null,"x\n\"y\""]},"b":1}"#);
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let a: serde_json::Value = serde_json::from_str(r#"{"x":1,"y":{"b":2,"a":3}}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"y":{"a":3,"b":2},"x":1}"#).unwrap();
        assert_eq!(to_string(&a), to_string(&b));
    }
}
