//! placeholder
use super::{Decoded, Limits};
pub(crate) fn decode(_v: &[u8], _l: &Limits, _o: &mut Decoded) {}
