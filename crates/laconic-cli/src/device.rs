//! Choosing the compute device from `--device`.

use anyhow::Result;
use burn::prelude::*;

/// The device a `--device` value names. GPU backends exist only when compiled in.
pub fn parse(name: &str) -> Result<Device> {
    Ok(laconic_infer::device::parse_device(name)?)
}
