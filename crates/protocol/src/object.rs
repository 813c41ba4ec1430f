//! Request bodies are JSON objects: [`object_only!`] gives a request type (de)serialization that reads
//! an object and nothing else. Which fields a request has, and how each is read, stays with its type.

/// Request bodies are JSON objects. serde's derive would also take an array for a struct, as its
/// fields in order (`["email", null]` for `{"kind": "email", "payload": null}`), which the API neither
/// promises nor describes: each request type derives its (de)serialization as `remote = "Self"`, and
/// this macro implements the traits with deserialization from an object only.
macro_rules! object_only {
    ($($t:ident),* $(,)?) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $t::serialize(self, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;

                impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
                    type Value = $t;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("an object (", stringify!($t), ")"))
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<$t, A::Error> {
                        $t::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }

                d.deserialize_map(ObjectVisitor)
            }
        }
    )*};
}

pub(crate) use object_only;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::{AckBatchRequest, DeadFilter, EnqueueJob, QueueConfig, Whole};
    use serde_json::json;

    #[test]
    fn a_request_is_an_object_never_an_array_of_its_fields() {
        assert!(serde_json::from_value::<EnqueueJob>(json!(["k", null])).is_err());
        assert!(serde_json::from_value::<DeadFilter>(json!([null, null])).is_err());
        assert!(serde_json::from_value::<QueueConfig>(json!({"retention": []})).is_err());
        let ack = json!({"acks": [["complete", "a", "t"]]});
        assert!(serde_json::from_value::<AckBatchRequest>(ack).is_err());
        // And what the client sends is what the server reads.
        let job = EnqueueJob {
            priority: Some(Whole(7)),
            ..EnqueueJob::new("k", json!({"x": 1}))
        };
        let back: EnqueueJob = serde_json::from_value(serde_json::to_value(&job).unwrap()).unwrap();
        assert_eq!(back, job);
    }
}
