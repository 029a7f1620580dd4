//! The recognize phase: the decomposed forms exporters write become single
//! ops with reference semantics (LayerNorm, RmsNorm, GELU, SiLU, SwiGLU,
//! RoPE, Attention).

pub mod patterns;
pub mod recognize_attention;
pub mod recognize_gelu;
pub mod recognize_layer_norm;
pub mod recognize_rms_norm;
pub mod recognize_rope;
pub mod recognize_silu;
