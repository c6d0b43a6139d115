//! The collector's config model: YAML files with positions, `${env:...}`
//! expansion, merging of several files and `--set`, and validation of the
//! service graph against the registry.

pub mod duration;
