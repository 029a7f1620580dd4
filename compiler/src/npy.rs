//! `.npy` files as graph-IR tensors (the format itself is `kiln_runtime::npy`).

use std::path::Path;

use kiln_ir::Tensor;
use kiln_runtime::HostTensor;

pub use kiln_runtime::npy::NpyError;

/// Reads a `.npy` file as a graph-IR tensor.
pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    Ok(host_to_tensor(&kiln_runtime::npy::read_npy(path)?))
}

/// Writes a graph-IR tensor as a `.npy` file.
pub fn write_npy(path: &Path, tensor: &Tensor) -> Result<(), NpyError> {
    kiln_runtime::npy::write_npy(path, &tensor_to_host(tensor))
}

/// The graph-IR tensor holding a host tensor's elements.
pub fn host_to_tensor(host: &HostTensor) -> Tensor {
    Tensor::from_le_bytes(host.dtype, host.shape.clone(), &host.bytes).expect("a HostTensor's bytes fit its shape")
}

/// The host tensor holding a graph-IR tensor's elements.
pub fn tensor_to_host(tensor: &Tensor) -> HostTensor {
    HostTensor { dtype: tensor.dtype, shape: tensor.shape.clone(), bytes: tensor.to_le_bytes() }
}
