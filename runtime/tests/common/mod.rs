//! Helpers shared by the kernel tests (CPU and CubeCL).

/// `a` equals the reference `b` within `tol` relative to `b`'s largest magnitude.
pub fn close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d <= tol * scale, "{what}: max diff {d:e} (scale {scale:e})");
}
