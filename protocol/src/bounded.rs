//! Bounded serde deserializers: the only way a `String` or `Vec` field of a message is decoded.
//!
//! bincode's serde decoder allocates a `String` or `Vec<u8>` of the length it reads *before* it
//! reads the bytes, and serde's `Vec` visitor pre-allocates from the length too. Every string and list
//! field therefore goes through this module: strings are requested as borrowed `&str` (the codec
//! decodes from a slice, so nothing is allocated until the length has been checked against the
//! field's limit and against the bytes actually present), and lists check the announced count
//! before reserving anything.
//!
//! A violation is recorded in a thread-local slot as well as returned as a serde error, so that
//! [`crate::codec`] can turn it into a typed [`crate::DecodeError`] instead of a string.

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

/// What a bounded deserializer refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    UnknownVariant {
        ty: &'static str,
        found: u64,
    },
}

thread_local! {
    static LAST: Cell<Option<Violation>> = const { Cell::new(None) };
}

fn record<E: de::Error>(v: Violation) -> E {
    LAST.with(|c| c.set(Some(v)));
    E::custom(match v {
        Violation::TooLong { field, len, max } => {
            format!("field `{field}` is {len} bytes, limit {max}")
        }
        Violation::TooMany { field, count, max } => {
            format!("field `{field}` has {count} items, limit {max}")
        }
        Violation::Invalid { field, reason } => format!("field `{field}`: {reason}"),
        Violation::UnknownVariant { ty, found } => format!("unknown variant {found} of `{ty}`"),
    })
}

/// Clears the slot before a decode.
pub(crate) fn reset() {
    LAST.with(|c| c.set(None));
}

/// Takes the violation recorded by the last failed decode on this thread, if any.
pub(crate) fn take() -> Option<Violation> {
    LAST.with(Cell::take)
}

/// An error for an enum (or option tag) index this version does not define.
pub(crate) fn unknown_variant<E: de::Error>(ty: &'static str, found: u64) -> E {
    record(Violation::UnknownVariant { ty, found })
}

/// An error for a field whose value breaks a rule other than its length.
pub(crate) fn invalid<E: de::Error>(field: &'static str, reason: &'static str) -> E {
    record(Violation::Invalid { field, reason })
}

struct StrVisitor {
    field: &'static str,
    max: usize,
}

impl<'de> Visitor<'de> for StrVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of at most {} bytes", self.max)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if v.len() > self.max {
            return Err(record(Violation::TooLong {
                field: self.field,
                len: v.len(),
                max: self.max,
            }));
        }
        Ok(v.to_owned())
    }
}

/// Decodes a string of at most `max` bytes.
pub(crate) fn string<'de, D: Deserializer<'de>>(
    d: D,
    field: &'static str,
    max: usize,
) -> Result<String, D::Error> {
    d.deserialize_str(StrVisitor { field, max })
}

struct SeqVisitor<T> {
    field: &'static str,
    max: usize,
    marker: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {} items", self.max)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let announced = seq.size_hint().unwrap_or(0);
        if announced > self.max {
            return Err(record(Violation::TooMany {
                field: self.field,
                count: announced,
                max: self.max,
            }));
        }
        let mut out = Vec::with_capacity(announced);
        while let Some(item) = seq.next_element()? {
            if out.len() == self.max {
                return Err(record(Violation::TooMany {
                    field: self.field,
                    count: out.len() + 1,
                    max: self.max,
                }));
            }
            out.push(item);
        }
        Ok(out)
    }
}

/// Decodes a list of at most `max` items.
pub(crate) fn vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    field: &'static str,
    max: usize,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(SeqVisitor {
        field,
        max,
        marker: PhantomData,
    })
}

struct IndexVisitor {
    ty: &'static str,
    variants: &'static [&'static str],
}

impl<'de> Visitor<'de> for IndexVisitor {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a variant of `{}`", self.ty)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
        match usize::try_from(v) {
            Ok(i) if i < self.variants.len() => Ok(i),
            _ => Err(record(Violation::UnknownVariant {
                ty: self.ty,
                found: v,
            })),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        self.variants
            .iter()
            .position(|name| *name == v)
            .ok_or_else(|| E::unknown_variant(v, self.variants))
    }
}

impl<'de> de::DeserializeSeed<'de> for IndexVisitor {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(self)
    }
}

struct UnitEnumVisitor(IndexVisitor);

impl<'de> Visitor<'de> for UnitEnumVisitor {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<usize, A::Error> {
        let (index, variant) = data.variant_seed(self.0)?;
        de::VariantAccess::unit_variant(variant)?;
        Ok(index)
    }
}

/// Decodes the index of a field-less enum, recording an unknown index as a typed violation.
pub(crate) fn unit_enum<'de, D: Deserializer<'de>>(
    d: D,
    ty: &'static str,
    variants: &'static [&'static str],
) -> Result<usize, D::Error> {
    d.deserialize_enum(ty, variants, UnitEnumVisitor(IndexVisitor { ty, variants }))
}

/// Defines `fn $name(d) -> Result<String, _>` bounded by `$max`, for `#[serde(deserialize_with)]`.
macro_rules! bounded_string {
    ($name:ident, $field:literal, $max:expr) => {
        fn $name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
            $crate::bounded::string(d, $field, $max)
        }
    };
}

/// Same as [`bounded_string`] for `Option<String>`.
macro_rules! bounded_opt_string {
    ($name:ident, $field:literal, $max:expr) => {
        fn $name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
            #[derive(serde::Deserialize)]
            struct Inner(#[serde(deserialize_with = "inner")] String);
            bounded_string!(inner, $field, $max);
            Ok(<Option<Inner> as serde::Deserialize>::deserialize(d)?.map(|i| i.0))
        }
    };
}

/// Defines `fn $name(d) -> Result<Vec<$t>, _>` bounded by `$max` items.
macro_rules! bounded_vec {
    ($name:ident, $t:ty, $field:literal, $max:expr) => {
        fn $name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<$t>, D::Error> {
            $crate::bounded::vec(d, $field, $max)
        }
    };
}

pub(crate) use {bounded_opt_string, bounded_string, bounded_vec};
