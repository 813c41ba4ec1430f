//! Integers in requests: [`Whole`], and `int` for a field that is not optional. Both read a number the
//! same way; the range a field allows within its type is the server's to enforce and the field's schema's
//! to describe.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};
use serde::{Serialize, Serializer};

pub(crate) trait Int: Sized + TryFrom<u64> + TryFrom<i64> {
    const NAME: &'static str;
}

struct IntVisitor<T>(PhantomData<T>);

impl<T: Int> Visitor<'_> for IntVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::NAME)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // 2^64 and -2^63 are exact as f64; a whole f64 in between converts exactly.
        if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            return self.visit_u64(v as u64);
        }
        if v.fract() == 0.0 && (-9_223_372_036_854_775_808.0..0.0).contains(&v) {
            return self.visit_i64(v as i64);
        }
        Err(E::invalid_value(Unexpected::Float(v), &self))
    }
}

/// An integer field.
pub(crate) fn int<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(IntVisitor(PhantomData))
}

/// An integer of a request (`u32`, `u64`, `i32` or `i64`). JSON has one kind of number, and the JSON
/// Schema of `/openapi.json` counts `2.0` as the integer 2, so a whole number written with a fraction or
/// an exponent (`2.0`, `3e3`) is taken as that integer; `2.5`, or a number out of the type's range, is
/// still refused. An optional field is an `Option<Whole<T>>`, where `null` is absent.
///
/// It is written as the integer it holds, and `{:?}` shows just the integer.
///
/// ```
/// use errand_protocol::{EnqueueJob, Whole};
///
/// let job: EnqueueJob = serde_json::from_str(r#"{"kind": "k", "priority": 2.0}"#).unwrap();
/// assert_eq!(job.priority, Some(Whole(2)));
/// assert_eq!(job.priority.map(Whole::get), Some(2));
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Whole<T>(pub T);

impl<T> Whole<T> {
    /// The integer.
    pub fn get(self) -> T {
        self.0
    }
}

impl<T> From<T> for Whole<T> {
    fn from(v: T) -> Self {
        Whole(v)
    }
}

impl<T> Deref for Whole<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

// The integer alone, so that a request's `{:?}` reads `priority: Some(2)`, as its JSON does.
impl<T: fmt::Debug> fmt::Debug for Whole<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Serialize> Serialize for Whole<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

// One impl per integer type rather than one bounded by `Int`: `Int` is the crate's own, and a public
// impl must not depend on a private trait.
macro_rules! ints {
    ($($t:ident),*) => {$(
        impl Int for $t {
            const NAME: &'static str = stringify!($t);
        }

        impl<'de> Deserialize<'de> for Whole<$t> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                int(d).map(Whole)
            }
        }

        impl From<Whole<$t>> for $t {
            fn from(w: Whole<$t>) -> $t {
                w.0
            }
        }
    )*};
}

ints!(u32, u64, i32, i64);

/// Described as the integer it holds. The protocol's fields still name `value_type = Option<u64>` (say)
/// beside their range: utoipa's derive describes a field of a type it does not know by name as a
/// `oneOf` of `null` and a reference, without the range, where `Option<u64>` is one nullable integer.
#[cfg(feature = "openapi")]
impl<T: utoipa::PartialSchema> utoipa::PartialSchema for Whole<T> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        T::schema()
    }
}

#[cfg(feature = "openapi")]
impl<T: utoipa::ToSchema> utoipa::ToSchema for Whole<T> {
    fn name() -> std::borrow::Cow<'static, str> {
        T::name()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        T::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::EnqueueJob;
    use serde_json::json;

    #[test]
    fn whole_numbers_written_as_floats_are_integers_and_fractions_are_not() {
        let j: EnqueueJob =
            serde_json::from_value(json!({"kind": "k", "priority": 2.0, "delay_ms": 1e3})).unwrap();
        assert_eq!(
            (j.priority.map(Whole::get), j.delay_ms.map(Whole::get)),
            (Some(2), Some(1000))
        );
        for bad in [json!(2.5), json!(-1), json!(4_294_967_296_u64), json!("2")] {
            let e = serde_json::from_value::<EnqueueJob>(json!({"kind": "k", "max_attempts": bad}));
            assert!(e.is_err(), "{bad}");
        }
    }

    #[test]
    fn a_whole_is_written_as_its_integer_and_refusals_name_its_type() {
        assert_eq!(serde_json::to_value(Whole(7_u32)).unwrap(), json!(7));
        assert_eq!(format!("{:?}", Some(Whole(7_u32))), "Some(7)");
        let e = serde_json::from_value::<Option<Whole<u32>>>(json!(2.5)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value: floating point `2.5`, expected u32"
        );
        assert_eq!(
            serde_json::from_value::<Option<Whole<i64>>>(json!(null)).unwrap(),
            None
        );
    }
}
