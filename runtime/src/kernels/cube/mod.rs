//! peftc's kernels as CubeCL `#[cube]` code, for every burn `CubeBackend`:
//! wgpu (Vulkan, Metal, DX12; lavapipe on machines without a GPU) and CUDA
//! (`cuda` feature). Each kernel sits beside its reference composition
//! (`kernels::reference`), and runtime/tests/cube_kernels.rs holds its output
//! and every gradient to that reference on wgpu.
//!
//! - `elementwise.rs`: GELU, SwiGLU, the adapter activations (ReLU, GELU,
//!   SiLU, tanh, chosen at expansion time) and their backward;
//! - `epilogue.rs`: the linear epilogues, (IA)³ `scale_cols`, DoRA's
//!   `dora_mix`, LoRA's `lora_expand` (second product + scale + residual in
//!   one pass), the bottleneck adapter's `adapter_out` (bias + scale +
//!   residual after its up projection), and the two-pass column reduction of
//!   their backward;
//! - `sgmv.rs`: batched multi-adapter LoRA (shrink / expand with a per-row
//!   adapter id);
//! - `dequant.rs`, `packed_matmul.rs`, `packed.rs`: products with a packed
//!   frozen weight (GGUF blocks, NF4, Int8) whose codes stay on the device,
//!   decoded value by value inside a tiled matmul, forward and input
//!   gradient;
//! - `launch.rs`: operand checks, outputs, grids, and the typed refusal.
//!
//! Ops without a kernel here (the dense frozen GEMMs, attention, norms, loss) run
//! their reference composition on the same backend, inside one autodiff node
//! each (`FUSED`), so no intermediate is kept for burn's own backward.
//! A kernel that declines its operands (dtype, size) prints a one-line notice
//! once and falls back to the reference composition.

mod dequant;
mod elementwise;
mod epilogue;
mod launch;
mod packed_matmul;
mod sgmv;

pub use launch::Unsupported;

use super::{AdapterFn, AdapterParams, PeftKernels, prim, reference, tensor};
use crate::weights::PackedMatrix;
use burn::tensor::DType;
use burn::tensor::ops::FloatTensor;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime};
use elementwise::act_code;
use launch::{FLOATS, dims, grid, notice, operands, output, vector_size};
use peftc_compiler::methods::Activation;

type Cube<R, BT> = CubeBackend<R, f32, i32, BT>;

/// Runs `$kernel` on the checked operands, or the reference on refusal.
macro_rules! fused_or {
    ($op:literal, [$($t:ident),+], $fallback:expr, |$($c:ident),+| $kernel:expr) => {
        match operands($op, &FLOATS, [$($t),+]) {
            Ok([$($c),+]) => $kernel,
            Err((e, [$($t),+])) => {
                notice(&e);
                $fallback
            }
        }
    };
}

/// `$go!(element type)` for a float dtype (f32 otherwise).
macro_rules! by_dtype {
    ($dtype:expr, $go:ident) => {
        match $dtype {
            DType::F16 => $go!(half::f16),
            DType::BF16 => $go!(half::bf16),
            _ => $go!(f32),
        }
    };
}

/// Launches `$kernel` over `out` with the given tensor arguments (then the
/// scalars), instantiated for `out`'s float dtype: one unit per element, or
/// with `vectorized` one unit per vector of `N` elements, `N` from
/// [`vector_size`] passed at launch.
macro_rules! elementwise {
    (vectorized $($kernel:ident)::+, $out:expr, [$($arg:expr),*] $(, $scalar:expr)*) => {{
        let out = $out;
        let client = out.client.clone();
        let vs = vector_size(&out);
        let (count, dim) = grid(&client, out.meta.num_elements() / vs);
        macro_rules! go {
            ($f:ty) => {
                $($kernel)::+::launch::<$f, R>(&client, count, dim, vs,
                    $($arg.into_tensor_arg(),)* out.clone().into_tensor_arg() $(, $scalar)*)
            };
        }
        by_dtype!(out.dtype, go);
        out
    }};
    ($($kernel:ident)::+, $out:expr, [$($arg:expr),*] $(, $scalar:expr)*) => {{
        let out = $out;
        let client = out.client.clone();
        let (count, dim) = grid(&client, out.meta.num_elements());
        macro_rules! go {
            ($f:ty) => {
                $($kernel)::+::launch::<$f, R>(&client, count, dim,
                    $($arg.into_tensor_arg(),)* out.clone().into_tensor_arg() $(, $scalar)*)
            };
        }
        by_dtype!(out.dtype, go);
        out
    }};
}

// After the macros, which it uses.
mod packed;

impl<R: CubeRuntime, BT: BoolElement> PeftKernels for Cube<R, BT> {
    const FUSED: bool = true;
    const SGMV: bool = true;
    const PACKED: bool = true;

    fn k_packed_linear(
        x: FloatTensor<Self>,
        w: &PackedMatrix,
        b: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        let y = match operands("packed_linear", &FLOATS, [x]) {
            Ok([x]) => match packed::resident(w, &x) {
                Ok(d) => packed::packed_matmul_on(x, w, &d, false),
                Err(e) => {
                    notice(&e);
                    return prim(reference::packed_linear::<Self>(
                        tensor(x),
                        w,
                        b.map(tensor),
                    ));
                }
            },
            Err((e, [x])) => {
                notice(&e);
                return prim(reference::packed_linear::<Self>(
                    tensor(x),
                    w,
                    b.map(tensor),
                ));
            }
        };
        match b {
            Some(b) => prim(tensor::<Self, 2>(y) + tensor::<Self, 2>(b)),
            None => y,
        }
    }

    fn k_packed_linear_dx(w: &PackedMatrix, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        match operands("packed_linear_dx", &FLOATS, [dy]) {
            Ok([dy]) => match packed::resident(w, &dy) {
                Ok(d) => packed::packed_matmul_on(dy, w, &d, true),
                Err(e) => {
                    notice(&e);
                    prim(reference::packed_linear_dx::<Self>(w, tensor(dy)))
                }
            },
            Err((e, [dy])) => {
                notice(&e);
                prim(reference::packed_linear_dx::<Self>(w, tensor(dy)))
            }
        }
    }

    fn k_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        fused_or!(
            "gelu",
            [x],
            prim(reference::gelu::<Self, 2>(tensor(x))),
            |x| {
                let out = output(&x, dims(&x));
                elementwise!(vectorized elementwise::gelu, out, [x])
            }
        )
    }

    fn k_gelu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        fused_or!(
            "gelu_backward",
            [x, dy],
            prim(reference::gelu_backward::<Self>(tensor(x), tensor(dy))),
            |x, dy| {
                let out = output(&x, dims(&x));
                elementwise!(vectorized elementwise::gelu_backward, out, [x, dy])
            }
        )
    }

    fn k_silu_mul(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        fused_or!(
            "silu_mul",
            [g, u],
            prim(reference::silu_mul::<Self>(tensor(g), tensor(u))),
            |g, u| {
                let out = output(&g, dims(&g));
                elementwise!(vectorized elementwise::silu_mul, out, [g, u])
            }
        )
    }

    fn k_silu_mul_backward(
        g: FloatTensor<Self>,
        u: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match operands("silu_mul_backward", &FLOATS, [g, u, dy]) {
            Ok([g, u, dy]) => {
                let (dg, du) = (output(&g, dims(&g)), output(&g, dims(&g)));
                let client = g.client.clone();
                let vs = vector_size(&dg);
                let (count, dim) = grid(&client, dg.meta.num_elements() / vs);
                macro_rules! go {
                    ($f:ty) => {
                        elementwise::silu_mul_backward::launch::<$f, R>(
                            &client,
                            count,
                            dim,
                            vs,
                            g.into_tensor_arg(),
                            u.into_tensor_arg(),
                            dy.into_tensor_arg(),
                            dg.clone().into_tensor_arg(),
                            du.clone().into_tensor_arg(),
                        )
                    };
                }
                by_dtype!(dg.dtype, go);
                (dg, du)
            }
            Err((e, [g, u, dy])) => {
                notice(&e);
                let (a, b) = reference::silu_mul_backward::<Self>(tensor(g), tensor(u), tensor(dy));
                (prim(a), prim(b))
            }
        }
    }

    fn k_scale_cols(x: FloatTensor<Self>, l: FloatTensor<Self>) -> FloatTensor<Self> {
        fused_or!(
            "scale_cols",
            [x, l],
            prim(reference::scale_cols::<Self>(tensor(x), tensor(l))),
            |x, l| {
                let out = output(&x, dims(&x));
                elementwise!(vectorized epilogue::scale_cols, out, [x, l])
            }
        )
    }

    fn k_col_dot(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        fused_or!(
            "col_dot",
            [a, b],
            prim((tensor::<Self, 2>(a) * tensor::<Self, 2>(b)).sum_dim(0)),
            |a, b| col_dot(a, b)
        )
    }

    fn k_dora_mix(
        y: FloatTensor<Self>,
        base: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        mag: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        fused_or!(
            "dora_mix",
            [y, base, delta, mag],
            prim(reference::dora_mix::<Self>(
                tensor(y),
                tensor(base),
                tensor(delta),
                tensor(mag)
            )),
            |y, base, delta, mag| {
                let out = output(&y, dims(&y));
                elementwise!(vectorized epilogue::dora_mix, out, [y, base, delta, mag])
            }
        )
    }

    fn k_lora_expand(
        y: FloatTensor<Self>,
        u: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        fused_or!(
            "lora_expand",
            [y, u, b],
            prim(reference::lora_expand::<Self>(
                tensor(y),
                tensor(u),
                tensor(b),
                scale
            )),
            |y, u, b| {
                let out = output(&y, dims(&y));
                elementwise!(epilogue::lora_expand, out, [y, u, b], scale as f32)
            }
        )
    }

    fn k_act(act: Activation, z: FloatTensor<Self>) -> FloatTensor<Self> {
        fused_or!(
            "activation",
            [z],
            prim(reference::activation::<Self>(act, tensor(z))),
            |z| {
                let out = output(&z, dims(&z));
                elementwise!(vectorized elementwise::activation, out, [z], act_code(act))
            }
        )
    }

    fn k_act_backward(
        act: Activation,
        z: FloatTensor<Self>,
        dh: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        fused_or!(
            "activation_backward",
            [z, dh],
            prim(reference::activation_backward::<Self>(
                act,
                tensor(z),
                tensor(dh)
            )),
            |z, dh| {
                let out = output(&z, dims(&z));
                elementwise!(
                    vectorized elementwise::activation_backward,
                    out,
                    [z, dh],
                    act_code(act)
                )
            }
        )
    }

    /// The down projection through this backend's linear, the activation
    /// kernel over `[n, r]`, the up projection's matmul, then bias + scale +
    /// residual in one `adapter_out` pass.
    fn k_adapter(
        res: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: AdapterParams<FloatTensor<Self>>,
        f: AdapterFn,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let AdapterParams {
            down,
            down_bias,
            up,
            up_bias,
        } = w;
        let z = Self::k_linear(x, down, Some(down_bias));
        let h = Self::k_act(f.act, z.clone());
        let u = prim(reference::linear::<Self>(tensor(h), tensor(up), None));
        let out = fused_or!(
            "adapter_out",
            [res, u, up_bias],
            prim(
                tensor::<Self, 2>(res)
                    + (tensor::<Self, 2>(u) + tensor::<Self, 2>(up_bias)).mul_scalar(f.scale)
            ),
            |res, u, up_bias| {
                let out = output(&res, dims(&res));
                elementwise!(
                    vectorized epilogue::adapter_out,
                    out,
                    [res, u, up_bias],
                    f.scale as f32
                )
            }
        );
        (out, z)
    }

    fn k_sgmv(
        y: FloatTensor<Self>,
        x: FloatTensor<Self>,
        ids: &[u32],
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scales: &[f32],
    ) -> FloatTensor<Self> {
        match operands("sgmv", &FLOATS, [y, x, a, b]) {
            Ok([y, x, a, b]) => sgmv(y, x, ids, a, b, scales),
            Err((e, [y, x, a, b])) => {
                notice(&e);
                prim(reference::sgmv::<Self>(
                    tensor(y),
                    tensor(x),
                    ids,
                    tensor(a),
                    tensor(b),
                    scales,
                ))
            }
        }
    }
}

/// Column sums of `a * b` in two passes: blocks of rows, then the blocks.
fn col_dot<R: CubeRuntime>(a: CubeTensor<R>, b: CubeTensor<R>) -> CubeTensor<R> {
    const ROWS_PER: usize = 64;
    let [n, d] = [dims(&a)[0], dims(&a)[1]];
    let blocks = n.div_ceil(ROWS_PER).max(1);
    let partial = output(&a, vec![blocks, d]);
    let partial = elementwise!(epilogue::col_dot_partial, partial, [a, b], ROWS_PER as u32);
    let out = output(&partial, vec![1, d]);
    elementwise!(epilogue::col_sum, out, [partial])
}

/// A host vector as a contiguous 1-D tensor on `like`'s device.
fn upload<R: CubeRuntime, E: cubecl::CubeElement>(
    like: &CubeTensor<R>,
    values: &[E],
    dtype: DType,
) -> CubeTensor<R> {
    let handle = like.client.create_from_slice(E::as_bytes(values));
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        burn::tensor::Shape::from(vec![values.len()]),
        handle,
        dtype,
    )
}

/// `y + scales[id] * (x A_idᵀ) B_idᵀ` row by row, two launches in all, in
/// the operands' float dtype (the scales are uploaded in it too).
fn sgmv<R: CubeRuntime>(
    y: CubeTensor<R>,
    x: CubeTensor<R>,
    ids: &[u32],
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    scales: &[f32],
) -> CubeTensor<R> {
    // One cube of SHRINK_BLOCK units per element of `u`.
    const SHRINK_BLOCK: usize = 64;
    let n = dims(&x)[0];
    let r = dims(&b)[1];
    let client = x.client.clone();
    let ids_t = upload(&x, ids, DType::U32);
    let u = output(&x, vec![n, r]);
    let out = output(&y, dims(&y));
    let shrink_count = cubecl::prelude::CubeCount::new_1d((n * r).max(1) as u32);
    let shrink_dim = cubecl::prelude::CubeDim::new_1d(SHRINK_BLOCK as u32);
    let (count, dim) = grid(&client, out.meta.num_elements());
    macro_rules! go {
        ($f:ty, $from:expr) => {{
            let s: Vec<$f> = scales.iter().map(|&v| $from(v)).collect();
            let scales_t = upload(&x, &s, y.dtype);
            sgmv::shrink::launch::<$f, R>(
                &client,
                shrink_count,
                shrink_dim,
                x.into_tensor_arg(),
                ids_t.clone().into_tensor_arg(),
                a.into_tensor_arg(),
                u.clone().into_tensor_arg(),
                SHRINK_BLOCK,
            );
            sgmv::expand::launch::<$f, R>(
                &client,
                count,
                dim,
                y.into_tensor_arg(),
                u.into_tensor_arg(),
                ids_t.into_tensor_arg(),
                b.into_tensor_arg(),
                scales_t.into_tensor_arg(),
                out.clone().into_tensor_arg(),
            );
        }};
    }
    match y.dtype {
        DType::F16 => go!(half::f16, half::f16::from_f32),
        DType::BF16 => go!(half::bf16, half::bf16::from_f32),
        _ => go!(f32, std::convert::identity),
    }
    out
}
