//! Responses whose `Split` can go out already encoded.
//!
//! A stored result never changes, so a replayed Compute (or a GetSplit) can send the bytes
//! it encoded the first time instead of converting and encoding the result again. These
//! types stand in for the generated `ComputeResponse` and `GetSplitResponse` (build.rs maps
//! them with `extern_path`); on the wire they are the messages of the .proto, field for
//! field: `Split split = 1`, a length-delimited field, whichever way it was produced.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use super::pb;

/// Field number of `split` in both responses.
const SPLIT_TAG: u32 = 1;

macro_rules! split_response {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Default, Debug)]
        pub struct $name {
            /// The split: what a client decodes, and what the server encodes when
            /// `encoded_split` is not set.
            pub split: Option<pb::Split>,
            /// The same split, already encoded as a `Split` message: sent instead of
            /// `split` when set. Decoding never sets it.
            pub encoded_split: Option<Bytes>,
        }

        impl $name {
            /// A response sending `encoded`, the encoding of a `Split` message.
            pub fn encoded(encoded: Bytes) -> Self {
                $name { split: None, encoded_split: Some(encoded) }
            }
        }

        impl prost::Message for $name {
            fn encode_raw(&self, buf: &mut impl BufMut) {
                if let Some(bytes) = &self.encoded_split {
                    encoding::encode_key(SPLIT_TAG, WireType::LengthDelimited, buf);
                    encoding::encode_varint(bytes.len() as u64, buf);
                    buf.put_slice(bytes);
                } else if let Some(split) = &self.split {
                    encoding::message::encode(SPLIT_TAG, split, buf);
                }
            }

            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), DecodeError> {
                if tag == SPLIT_TAG {
                    let split = self.split.get_or_insert_with(Default::default);
                    encoding::message::merge(wire_type, split, buf, ctx).map_err(|mut e| {
                        e.push(stringify!($name), "split");
                        e
                    })
                } else {
                    encoding::skip_field(wire_type, tag, buf, ctx)
                }
            }

            fn encoded_len(&self) -> usize {
                if let Some(bytes) = &self.encoded_split {
                    encoding::key_len(SPLIT_TAG)
                        + encoding::encoded_len_varint(bytes.len() as u64)
                        + bytes.len()
                } else {
                    self.split
                        .as_ref()
                        .map_or(0, |s| encoding::message::encoded_len(SPLIT_TAG, s))
                }
            }

            fn clear(&mut self) {
                self.split = None;
                self.encoded_split = None;
            }
        }
    };
}

split_response!(
    /// `prorata.v1.ComputeResponse`.
    ComputeResponse
);
split_response!(
    /// `prorata.v1.GetSplitResponse`.
    GetSplitResponse
);

/// The encoding of a `Split` message, as [`ComputeResponse::encoded`] sends it.
pub fn encode_split(split: &pb::Split) -> Bytes {
    Bytes::from(prost::Message::encode_to_vec(split))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn split() -> pb::Split {
        pb::Split {
            order_id: "o-1".into(),
            merchant: "m-1".into(),
            currency: "CNY".into(),
            currency_exponent: 2,
            ruleset_version: 7,
            paid_minor: 12_345,
            notes: vec!["a note".into()],
            ..Default::default()
        }
    }

    #[test]
    fn an_encoded_split_is_the_same_bytes_as_the_message() {
        let fresh = ComputeResponse {
            split: Some(split()),
            encoded_split: None,
        };
        let replayed = ComputeResponse::encoded(encode_split(&split()));
        assert_eq!(fresh.encode_to_vec(), replayed.encode_to_vec());
        assert_eq!(fresh.encoded_len(), replayed.encoded_len());
        assert_eq!(replayed.encoded_len(), replayed.encode_to_vec().len());
        let decoded = GetSplitResponse::decode(replayed.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.split, Some(split()));
        assert_eq!(decoded.encoded_split, None);
    }

    #[test]
    fn an_empty_response_and_unknown_fields_decode() {
        assert_eq!(ComputeResponse::default().encode_to_vec(), Vec::<u8>::new());
        // field 9, varint 5: skipped.
        let decoded = ComputeResponse::decode(&[0x48, 0x05][..]).unwrap();
        assert_eq!(decoded, ComputeResponse::default());
        // field 1 with the wrong wire type: an error, not a panic.
        assert!(ComputeResponse::decode(&[0x08, 0x01][..]).is_err());
    }
}
