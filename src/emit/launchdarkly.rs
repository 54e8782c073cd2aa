//! placeholder
use crate::window::Output;
pub fn write(_out: &Output, _buf: &mut Vec<u8>) {}
pub fn write_data_export(_out: &Output, _p: Option<&str>, _e: Option<&str>, _buf: &mut Vec<u8>) {}
