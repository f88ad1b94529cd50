//! [`ObjectsOnly`]: serde, reading a struct, takes a JSON array of its fields in declaration order
//! as readily as an object (`"texts": ["Title", "Body", …]` for `{"title": …, "body": …}`). No
//! client of this API writes a struct that way, and a careless one that sends an array where an
//! object belongs should hear so — not have its values land in whichever fields come first. This
//! wrapper around any deserializer (a JSON text's or a `serde_json::Value`'s) refuses an array
//! for a struct or a struct variant, at any depth, with serde's own error ("invalid type:
//! sequence, expected struct Texts"), which `serde_path_to_error` then places at its field.
//!
//! Every other call is passed through unchanged; the wrapper only follows the nested values down
//! (each visitor, map, sequence and enum access wrapped in turn). What it cannot reach: a struct
//! read from serde's own buffered content — inside an untagged or internally tagged enum — which
//! no input type here has.

use std::fmt;

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, Error as _, MapAccess, SeqAccess, Unexpected, VariantAccess, Visitor,
};

/// A deserializer, visitor, seed or access whose structs must be JSON objects (see the module).
pub struct ObjectsOnly<T>(pub T);

/// A struct's visitor: a map as before, a sequence refused.
struct StructVisitor<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for StructVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(A::Error::invalid_type(Unexpected::Seq, &self))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(ObjectsOnly(map))
    }
}

macro_rules! forward_deserialize {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method(ObjectsOnly(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectsOnly<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, ObjectsOnly(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, ObjectsOnly(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, ObjectsOnly(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, ObjectsOnly(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, StructVisitor(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, ObjectsOnly(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: serde::de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.0.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ObjectsOnly<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_some(ObjectsOnly(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_newtype_struct(ObjectsOnly(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(ObjectsOnly(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(ObjectsOnly(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.0.visit_enum(ObjectsOnly(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for ObjectsOnly<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(ObjectsOnly(d))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for ObjectsOnly<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(ObjectsOnly(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ObjectsOnly<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(ObjectsOnly(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(ObjectsOnly(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for ObjectsOnly<A> {
    type Error = A::Error;
    type Variant = ObjectsOnly<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(ObjectsOnly(seed))?;
        Ok((value, ObjectsOnly(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for ObjectsOnly<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(ObjectsOnly(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, ObjectsOnly(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, StructVisitor(visitor))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::{Value, json};

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        by_key: std::collections::BTreeMap<String, Inner>,
        kind: Option<Kind>,
        pair: Option<(u8, u8)>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u8,
        b: Option<u8>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Plain,
        Shaped { x: u8 },
    }

    fn read(v: Value) -> Result<Outer, String> {
        serde_path_to_error::deserialize(ObjectsOnly(v)).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    fn read_text(v: &Value) -> Result<Outer, String> {
        let text = v.to_string();
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(ObjectsOnly(de)).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    /// Every place a struct can sit refuses an array for it, naming the place — from a JSON text
    /// and from a `Value` alike — while plain serde would take the array's items as its fields.
    #[test]
    fn an_array_for_a_struct_is_refused_at_its_field() {
        let cases = [
            (json!(["n"]), "."),
            (json!({"name": "n", "inner": [1, 2]}), "inner"),
            (json!({"name": "n", "list": [{"a": 1}, [1, 2]]}), "list[1]"),
            (json!({"name": "n", "by_key": {"k": [1]}}), "by_key.k"),
            (json!({"name": "n", "kind": {"shaped": [1]}}), "kind.shaped"),
        ];
        for (input, at) in cases {
            for got in [read(input.clone()), read_text(&input)] {
                let err = got.expect_err(&input.to_string());
                assert!(err.starts_with(&format!("{at}: invalid type: sequence, expected")), "{input}: {err}");
            }
        }
        assert!(serde_json::from_value::<Outer>(json!({"name": "n", "inner": [1, 2]})).is_ok(), "plain serde takes it");
    }

    /// Everything else reads as plain serde reads it: objects, arrays that are lists or tuples,
    /// enums, options, and the errors of a wrong field.
    #[test]
    fn everything_else_reads_as_before() {
        let ok = json!({
            "name": "n", "inner": {"a": 1, "b": null}, "list": [{"a": 2}], "by_key": {"k": {"a": 3, "b": 4}},
            "kind": {"shaped": {"x": 5}}, "pair": [6, 7]
        });
        let plain: Outer = serde_json::from_value(ok.clone()).unwrap();
        assert_eq!(read(ok.clone()).unwrap(), plain);
        assert_eq!(read_text(&ok).unwrap(), plain);
        assert_eq!(read(json!({"name": "n", "kind": "plain"})).unwrap().kind, Some(Kind::Plain));
        for bad in [json!({"name": "n", "inner": {"a": 300}}), json!({"name": "n", "extra": 1}), json!({})] {
            let expected = serde_path_to_error::deserialize::<_, Outer>(bad.clone())
                .map_err(|e| format!("{}: {}", e.path(), e.inner()))
                .unwrap_err();
            assert_eq!(read(bad.clone()).unwrap_err(), expected, "{bad}");
        }
    }
}
