//! Internally tagged JSON (`{"op": "challenge_start", "ctx": …}`) without serde's buffering.
//!
//! serde's own `#[serde(tag = "…")]` decodes every such message into an intermediate tree
//! first (it cannot know the variant before it has seen the tag, wherever it is), then decodes
//! the variant from the tree — for nested tagged types (a `Step` holding a `Prompt`), once per
//! level. Every encoder of these messages (this SDK, the C header's examples) writes the tag
//! first, so the decoder here reads the first key: when it is the tag, the variant's fields
//! are decoded straight from the input; in any other order, the object is collected and
//! decoded from that, as before. The wire format is serde's internally tagged one, unchanged.
//!
//! A message type derives serde's externally tagged code as inherent functions
//! (`#[serde(remote = "Self")]`) and gets its trait impls from `tagged!`.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize as _;
use serde::de::value::{MapAccessDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{self, Impossible, SerializeStruct, Serializer};

/// A message type whose variants travel with their name in the field `TAG`.
pub(crate) trait Tagged: Sized {
    /// The name of the field that holds the variant's name.
    const TAG: &'static str;
    /// Decodes the type from an externally tagged representation (serde's derive).
    fn decode_variant<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
    /// Encodes the type in an externally tagged representation (serde's derive).
    fn encode_variant<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
}

/// Implements `Serialize` and `Deserialize` of an internally tagged message type whose
/// externally tagged code serde derived as inherent functions (`#[serde(remote = "Self")]`).
macro_rules! tagged {
    ($t:ty, $tag:literal) => {
        impl $crate::tagged::Tagged for $t {
            const TAG: &'static str = $tag;
            fn decode_variant<'de, D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$t>::deserialize(d)
            }
            fn encode_variant<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::tagged::serialize(self, s)
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::tagged::deserialize(d)
            }
        }
    };
}
pub(crate) use tagged;

/// Encodes `value` as an object whose first field is its tag.
pub(crate) fn serialize<T: Tagged, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    value.encode_variant(TagFirst {
        inner: s,
        tag: T::TAG,
    })
}

/// Decodes an internally tagged object, without buffering when the tag comes first.
pub(crate) fn deserialize<'de, T: Tagged, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(ObjectVisitor::<T>(PhantomData))
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Tagged> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with the field `{}`", T::TAG)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        match map.next_key_seed(KeySeed(T::TAG))? {
            None => Err(de::Error::missing_field(T::TAG)),
            Some(Key::Tag) => {
                let variant: std::borrow::Cow<'de, str> = map.next_value_seed(CowStr)?;
                T::decode_variant(Variant {
                    name: &variant,
                    fields: MapAccessDeserializer::new(map),
                })
            }
            Some(Key::Other(first)) => {
                // The tag comes later (a hand-written encoder): collect the object first.
                let mut object = serde_json::Map::new();
                object.insert(first, map.next_value()?);
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    object.insert(k, v);
                }
                let name = match object.remove(T::TAG) {
                    Some(serde_json::Value::String(name)) => name,
                    Some(_) => {
                        return Err(de::Error::custom(format_args!(
                            "the `{}` field is not a string",
                            T::TAG
                        )));
                    }
                    None => return Err(de::Error::missing_field(T::TAG)),
                };
                T::decode_variant(Variant {
                    name: &name,
                    fields: serde_json::Value::Object(object),
                })
                .map_err(de::Error::custom)
            }
        }
    }
}

/// An object key: the tag, or another (kept, for the collecting path).
enum Key {
    Tag,
    Other(String),
}

struct KeySeed(&'static str);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(if v == self.0 {
            Key::Tag
        } else {
            Key::Other(v.to_string())
        })
    }
}

/// A string, borrowed from the input when it has no escapes.
struct CowStr;

impl<'de> DeserializeSeed<'de> for CowStr {
    type Value = std::borrow::Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CowStr {
    type Value = std::borrow::Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a variant name")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_string()))
    }
}

/// The variant named by the tag, with the object's other fields: what serde's externally
/// tagged code reads as `{"name": {fields}}`.
struct Variant<'a, F> {
    name: &'a str,
    fields: F,
}

impl<'de, F: Deserializer<'de>> Deserializer<'de> for Variant<'_, F> {
    type Error = F::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, F::Error> {
        visitor.visit_enum(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, F::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de, F: Deserializer<'de>> de::EnumAccess<'de> for Variant<'_, F> {
    type Error = F::Error;
    type Variant = Fields<F>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Fields<F>), F::Error> {
        let name = StrDeserializer::<F::Error>::new(self.name);
        Ok((seed.deserialize(name)?, Fields(self.fields)))
    }
}

/// The fields of the variant, after its tag.
struct Fields<F>(F);

impl<'de, F: Deserializer<'de>> de::VariantAccess<'de> for Fields<F> {
    type Error = F::Error;

    fn unit_variant(self) -> Result<(), F::Error> {
        // Fields beside a unit variant's tag are ignored, as any unknown field is.
        IgnoredAny::deserialize(self.0).map(|_| ())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, F::Error> {
        Err(de::Error::custom(
            "tagged messages have no newtype variants",
        ))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, F::Error> {
        Err(de::Error::custom("tagged messages have no tuple variants"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, F::Error> {
        self.0.deserialize_struct("", fields, visitor)
    }
}

/// A serializer that writes serde's externally tagged variants as objects with the tag first.
struct TagFirst<S> {
    inner: S,
    tag: &'static str,
}

/// The fields of a struct variant, after the tag.
struct TaggedStruct<S>(S);

impl<S: SerializeStruct> ser::SerializeStructVariant for TaggedStruct<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: ser::Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        self.0.serialize_field(key, value)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), S::Error> {
        self.0.skip_field(key)
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.0.end()
    }
}

fn only_variants<E: ser::Error>() -> E {
    E::custom("a tagged message is an enum of unit and struct variants")
}

impl<S: Serializer> Serializer for TagFirst<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = Impossible<S::Ok, S::Error>;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = Impossible<S::Ok, S::Error>;
    type SerializeStructVariant = TaggedStruct<S::SerializeStruct>;

    fn serialize_unit_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        let mut s = self.inner.serialize_struct(name, 1)?;
        s.serialize_field(self.tag, variant)?;
        s.end()
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let mut s = self.inner.serialize_struct(name, len + 1)?;
        s.serialize_field(self.tag, variant)?;
        Ok(TaggedStruct(s))
    }

    fn serialize_bool(self, _v: bool) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_i8(self, _v: i8) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_i16(self, _v: i16) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_i32(self, _v: i32) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_i64(self, _v: i64) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_u8(self, _v: u8) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_u16(self, _v: u16) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_u32(self, _v: u32) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_u64(self, _v: u64) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_f32(self, _v: f32) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_f64(self, _v: f64) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_char(self, _v: char) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_str(self, _v: &str) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_some<T: ser::Serialize + ?Sized>(self, _v: &T) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_newtype_struct<T: ser::Serialize + ?Sized>(
        self,
        _name: &'static str,
        _v: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_newtype_variant<T: ser::Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _v: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(only_variants())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Err(only_variants())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, S::Error> {
        Err(only_variants())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        Err(only_variants())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Err(only_variants())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Err(only_variants())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        Err(only_variants())
    }
}

#[cfg(test)]
mod tests {
    use crate::Bytes;
    use crate::message::*;

    fn ctx() -> ChallengeContext {
        ChallengeContext {
            user: UserContext {
                account: "CONTOSO\\jdoe".into(),
                display_name: "J. \"Doe\"".into(),
                phone: Some("+14255550100".into()),
                email: None,
            },
            role: "admins".into(),
            request_id: "r1".into(),
            ttl_s: 0,
            justification: String::new(),
            credentials: vec![Credential {
                id: "c".into(),
                label: "key".into(),
                data: Bytes(vec![0, 1, 255]),
            }],
            origin: None,
            now: 5,
        }
    }

    #[test]
    fn every_kind_of_variant_round_trips_with_its_tag_first() {
        let requests = [
            Request::Info,
            Request::ChallengeStart { ctx: ctx() },
            Request::ChallengeContinue {
                ctx: ctx(),
                state: Bytes(b"s".to_vec()),
                input: Input::Acknowledge,
            },
            Request::Cancel {
                ctx: ctx(),
                state: Bytes::default(),
            },
        ];
        for r in requests {
            let json = serde_json::to_string(&r).unwrap();
            assert!(
                json.starts_with(&format!(r#"{{"op":"{}""#, r.op())),
                "{json}"
            );
            let back: Request = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }
        assert_eq!(
            serde_json::to_string(&Request::Health).unwrap(),
            r#"{"op":"health"}"#
        );
        assert_eq!(
            serde_json::to_string(&Input::Code { code: "12".into() }).unwrap(),
            r#"{"kind":"code","code":"12"}"#
        );
    }

    #[test]
    fn the_tag_may_come_anywhere_in_the_object() {
        // As a hand-written encoder (a C provider) may order it; nested tags too.
        let json = r#"{"prompt":{"message":"m","kind":"code","length":6},"expires_in":60,
            "step":"ask","state":"AQ=="}"#;
        let step: Step = serde_json::from_str(json).unwrap();
        assert_eq!(
            step,
            Step::Ask {
                prompt: Prompt::Code {
                    message: "m".into(),
                    length: Some(6),
                },
                state: Bytes(vec![1]),
                expires_in: 60,
                reference: None,
            }
        );
        let v: Verdict =
            serde_json::from_str(r#"{"credential":null,"outcome":"approved"}"#).unwrap();
        assert_eq!(v, Verdict::approved(None));
        let i: Input = serde_json::from_str(r#"{"x":1,"kind":"acknowledge"}"#).unwrap();
        assert_eq!(i, Input::Acknowledge);
    }

    #[test]
    fn unknown_fields_are_ignored_wherever_the_tag_is() {
        for json in [
            r#"{"kind":"acknowledge","later":{"a":[1,2]}}"#,
            r#"{"later":{"a":[1,2]},"kind":"acknowledge"}"#,
        ] {
            assert_eq!(
                serde_json::from_str::<Input>(json).unwrap(),
                Input::Acknowledge
            );
        }
        for json in [
            r#"{"outcome":"denied","reason":"fraud","message":"m","new":true}"#,
            r#"{"new":true,"outcome":"denied","reason":"fraud","message":"m"}"#,
        ] {
            assert_eq!(
                serde_json::from_str::<Verdict>(json).unwrap(),
                Verdict::denied(DenyReason::Fraud, "m")
            );
        }
    }

    #[test]
    fn bad_objects_are_refused_with_an_error_that_names_the_problem() {
        let cases: [(&str, &str); 7] = [
            (r#"{"ctx":{}}"#, "missing field `op`"),
            (r#"{}"#, "missing field `op`"),
            (r#"{"op":"dance"}"#, "unknown variant `dance`"),
            (r#"{"x":1,"op":"dance"}"#, "unknown variant `dance`"),
            (r#"{"x":1,"op":7}"#, "the `op` field is not a string"),
            (r#"{"op":"challenge_start"}"#, "missing field `ctx`"),
            (r#"["op","info"]"#, "an object with the field `op`"),
        ];
        for (json, want) in cases {
            let e = serde_json::from_str::<Request>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        let e = serde_json::from_str::<Step>(
            r#"{"step":"ask","prompt":{"kind":"code"},"state":"","expires_in":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing field `message`"), "{e}");
    }
}
