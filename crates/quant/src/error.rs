//! Typed errors for shapes and data that a packing cannot hold.

/// What is wrong with a quantization or packing request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    #[error("{what}: expected {expected} values, got {got}")]
    Length { what: &'static str, expected: usize, got: usize },
    #[error("{format} needs {dim} to be a multiple of {multiple}, got {value}")]
    NotMultiple { format: &'static str, dim: &'static str, multiple: usize, value: usize },
    #[error("{format}: {reason}")]
    Unsupported { format: &'static str, reason: String },
    #[error("{format}: invalid code {code} at byte {byte}")]
    InvalidCode { format: &'static str, code: u8, byte: usize },
    #[error("ternary value {value} at index {index} is not -1, 0 or +1")]
    NotTernary { value: i8, index: usize },
}

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), QuantError> {
    if expected == got { Ok(()) } else { Err(QuantError::Length { what, expected, got }) }
}

pub(crate) fn check_multiple(
    format: &'static str,
    dim: &'static str,
    value: usize,
    multiple: usize,
) -> Result<(), QuantError> {
    if multiple != 0 && value.is_multiple_of(multiple) {
        Ok(())
    } else {
        Err(QuantError::NotMultiple { format, dim, multiple, value })
    }
}
