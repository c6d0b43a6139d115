//! Built-in extensions.
use crate::component::Registry;
pub fn register(_r: &mut Registry) {}
