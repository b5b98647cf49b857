//! Messages the server handles as bytes: responses whose `Split` can go out already
//! encoded, and the Compute request kept as it arrived.
//!
//! A stored result never changes, so a replayed Compute (or a GetSplit) can send the bytes
//! it encoded the first time instead of converting and encoding the result again. These
//! types stand in for the generated `ComputeResponse` and `GetSplitResponse` (build.rs maps
//! them with `extern_path`); on the wire they are the messages of the .proto, field for
//! field: `Split split = 1`, a length-delimited field, whichever way it was produced.

use bytes::{Buf, BufMut, Bytes, BytesMut};
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

/// `prorata.v1.ComputeRequest` as the server of Compute and ComputeStream receives it: the
/// bytes it arrived as, decoded on demand ([`ComputeRequest::decode_message`]). A retry
/// that sends the same bytes as an earlier, confirmed replay is answered from those bytes
/// alone (`App::replay_identical`), without decoding or fingerprinting it again.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct ComputeRequest {
    bytes: Bytes,
}

impl ComputeRequest {
    /// A request of these bytes (the encoding of a `ComputeRequest` message, or not).
    pub fn from_bytes(bytes: Bytes) -> Self {
        ComputeRequest { bytes }
    }

    /// The bytes the request arrived as.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Writes more encoded fields after the bytes.
    fn append(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let mut b = BytesMut::from(&self.bytes[..]);
        write(&mut b);
        self.bytes = b.freeze();
    }

    /// The request decoded.
    pub fn decode_message(&self) -> Result<pb::ComputeRequest, DecodeError> {
        <pb::ComputeRequest as prost::Message>::decode(self.bytes.clone())
    }
}

impl prost::Message for ComputeRequest {
    fn decode(mut buf: impl Buf) -> Result<Self, DecodeError> {
        Ok(ComputeRequest {
            bytes: buf.copy_to_bytes(buf.remaining()),
        })
    }

    fn merge(&mut self, mut buf: impl Buf) -> Result<(), DecodeError> {
        // Two encodings one after the other are the encoding of their merge.
        self.append(|b| b.put(&mut buf));
        Ok(())
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Reached only when decoded field by field (as part of another message): keep the
        // field's canonical encoding.
        let mut one = pb::ComputeRequest::default();
        one.merge_field(tag, wire_type, buf, ctx)?;
        self.append(|b| prost::Message::encode_raw(&one, b));
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes = Bytes::new();
    }
}

/// Field number of `order` in `ComputeRequest` and of `id` in `Order`.
const ORDER_TAG: u32 = 1;
const ORDER_ID_TAG: u32 = 1;

/// The order id an encoded `ComputeRequest` carries, read without decoding the rest: the
/// last `order.id` of the bytes, as a decoder would keep it. `None` for bytes that are not
/// a well-formed message or carry no id.
///
/// Only a hint for finding a cached result: a replay of identical bytes is answered only
/// when they equal, byte for byte, a request already decoded and checked for that result.
pub fn order_id(request: &[u8]) -> Option<&str> {
    let mut buf = request;
    let mut id = None;
    while !buf.is_empty() {
        let (tag, wire_type) = encoding::decode_key(&mut buf).ok()?;
        if tag == ORDER_TAG && wire_type == WireType::LengthDelimited {
            let mut order = length_delimited(&mut buf)?;
            while !order.is_empty() {
                let (tag, wire_type) = encoding::decode_key(&mut order).ok()?;
                if tag == ORDER_ID_TAG && wire_type == WireType::LengthDelimited {
                    id = Some(std::str::from_utf8(length_delimited(&mut order)?).ok()?);
                } else {
                    encoding::skip_field(wire_type, tag, &mut order, DecodeContext::default())
                        .ok()?;
                }
            }
        } else {
            encoding::skip_field(wire_type, tag, &mut buf, DecodeContext::default()).ok()?;
        }
    }
    id
}

/// The next length-delimited value of `buf`, which moves past it.
fn length_delimited<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(encoding::decode_varint(buf).ok()?).ok()?;
    if len > buf.len() {
        return None;
    }
    let (value, rest) = buf.split_at(len);
    *buf = rest;
    Some(value)
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
        let replayed = ComputeResponse::encoded(Bytes::from(split().encode_to_vec()));
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

    fn request(id: &str) -> pb::ComputeRequest {
        pb::ComputeRequest {
            order: Some(pb::Order {
                id: id.into(),
                merchant: "m-1".into(),
                tags: vec!["t".into()],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_request_keeps_its_bytes_and_decodes_to_the_message() {
        let bytes = request("o-1").encode_to_vec();
        let raw = ComputeRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(raw.bytes().as_ref(), bytes.as_slice());
        assert_eq!(raw.encode_to_vec(), bytes);
        assert_eq!(raw.encoded_len(), bytes.len());
        assert_eq!(raw.decode_message().unwrap(), request("o-1"));
        // Merging appends, as a decoder merges two messages sent one after the other.
        let mut merged = raw.clone();
        merged
            .merge(request("o-2").encode_to_vec().as_slice())
            .unwrap();
        let mut expect = request("o-1");
        expect
            .merge(request("o-2").encode_to_vec().as_slice())
            .unwrap();
        assert_eq!(merged.decode_message().unwrap(), expect);
        // Inside another message, field by field: the same request.
        let mut outer = Vec::new();
        encoding::message::encode(1, &request("o-3"), &mut outer);
        let mut nested = ComputeRequest::default();
        let mut buf = &outer[..];
        let (tag, wire_type) = encoding::decode_key(&mut buf).unwrap();
        assert_eq!(tag, 1);
        encoding::message::merge(wire_type, &mut nested, &mut buf, DecodeContext::default())
            .unwrap();
        assert_eq!(nested.decode_message().unwrap(), request("o-3"));
        // Bytes that are not a message are kept too; decoding them fails.
        let bad = ComputeRequest::from_bytes(Bytes::from_static(&[0x0a, 0x05, 0x0a]));
        assert!(bad.decode_message().is_err());
    }

    #[test]
    fn the_order_id_is_read_as_a_decoder_would_keep_it() {
        let bytes = request("o-1").encode_to_vec();
        assert_eq!(order_id(&bytes), Some("o-1"));
        // Two order fields merge: the last id wins, as when decoding.
        let mut two = bytes.clone();
        two.extend(request("o-2").encode_to_vec());
        assert_eq!(order_id(&two), Some("o-2"));
        assert_eq!(
            pb::ComputeRequest::decode(two.as_slice())
                .unwrap()
                .order
                .unwrap()
                .id,
            "o-2"
        );
        // Unknown fields are skipped, at both levels.
        let mut unknown = vec![0x48, 0x05];
        unknown.extend(&bytes);
        assert_eq!(order_id(&unknown), Some("o-1"));
        assert_eq!(
            order_id(&pb::ComputeRequest::default().encode_to_vec()),
            None
        );
        // An empty id is not on the wire at all.
        assert_eq!(order_id(&request("").encode_to_vec()), None);
        // Not a message: no id.
        for bad in [
            &[0x0a, 0x05, 0x0a][..],
            &[0x0a],
            &[0x0f, 0x01],
            &[0x0a, 0x03, 0x0a, 0x01, 0xff],
        ] {
            assert_eq!(order_id(bad), None, "{bad:?}");
        }
        let mut truncated = bytes.clone();
        truncated.pop();
        assert_eq!(order_id(&truncated), None);
    }
}
