//! placeholder
use super::EmitError;
use crate::window::Output;
#[derive(Debug)]
pub struct Schemas;
impl Schemas {
    pub fn load() -> Self {
        Self
    }
    pub fn encode(&self, _out: &Output) -> Result<Vec<u8>, EmitError> {
        Ok(Vec::new())
    }
}
