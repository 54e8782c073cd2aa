//! placeholder
use super::{Decoded, Limits};
pub(crate) fn decode_json(_v: &[u8], _l: &Limits, _o: &mut Decoded) {}
pub(crate) fn decode_avro(_v: &[u8], _l: &Limits, _o: &mut Decoded) {}
