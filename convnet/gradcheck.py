"""Check a backward pass against central finite differences in float64.

The scalar loss is a random projection of the forward's output,
    L = sum(y * g)        (g random, fixed; so dL/dy = g),
and for every tensor t checked, on every element i (or a random subset of
`max_points` elements when t is large)
    numeric[i] = (L(t + eps*e_i) - L(t - eps*e_i)) / (2*eps)
is compared with the backward's gradient by the relative error
    max_i |analytic[i] - numeric[i]| / max(max_i |numeric[i]|, max_i |analytic[i]|).
The errors are printed, one line per tensor, and returned; a tensor over the
tolerance raises AssertionError naming the tensor.

    from convnet import reference as R
    from convnet.gradcheck import check_gradients
    check_gradients(
        lambda x, w: R.conv2d_forward(x, w, stride=2, pad=1),
        lambda dy, y, x, w: {"x": R.conv2d_backward_data(dy, w, x.shape, 2, 1),
                             "w": R.conv2d_backward_filter(dy, x, w.shape, 2, 1)},
        {"x": x, "w": w}, name="conv s2 p1")

`forward(**inputs)` returns an array or a tuple of arrays (a scalar loss is
fine); `backward(dy, y, **inputs)` gets dy shaped like y (a tuple when y is a
tuple) and returns {name: gradient} for the tensors in `wrt` (a tuple in
`wrt` order is accepted too). Floating inputs are converted to float64 copies
first, so the caller's arrays are never changed; other inputs (labels, ints)
are passed through as they are.
"""
import numpy as np

__all__ = ["check_gradients", "relative_error"]


def relative_error(analytic, numeric):
    """max |analytic - numeric| / max(max |numeric|, max |analytic|); 0 when both are 0."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.size == 0:
        return 0.0
    if not np.all(np.isfinite(a)):
        return float("inf")
    scale = max(float(np.max(np.abs(n))), float(np.max(np.abs(a))))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - n))) / scale


def _as_tuple(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def check_gradients(forward, backward, inputs, wrt=None, eps=1e-6, tol=1e-6, seed=0,
                    max_points=200, name="op", verbose=True):
    """Compare backward's gradients with central differences of L = sum(forward(**inputs) * g).

    inputs: dict name -> value; wrt: the names to check (default: every floating array);
    eps: the finite-difference step; tol: the largest relative error accepted;
    max_points: elements perturbed per tensor (a random subset when there are more).
    Returns {name: relative error}; raises AssertionError naming the first tensor over tol.
    """
    if not isinstance(inputs, dict):
        raise TypeError("inputs must be a dict name -> value")
    inputs = {k: np.array(v, dtype=np.float64) if _is_float_array(v) else v
              for k, v in inputs.items()}
    if wrt is None:
        wrt = [k for k, v in inputs.items() if _is_float_array(v)]
    for k in wrt:
        if k not in inputs or not _is_float_array(inputs[k]):
            raise ValueError(f"wrt names {k!r}, which is not a floating array among the inputs")
    rng = np.random.default_rng(seed)

    y = forward(**inputs)
    ys = tuple(np.asarray(t, dtype=np.float64) for t in _as_tuple(y))
    gs = tuple(rng.standard_normal(t.shape) for t in ys)

    def loss():
        out = _as_tuple(forward(**inputs))
        if len(out) != len(gs):
            raise AssertionError(f"{name}: forward returned {len(out)} outputs, first call {len(gs)}")
        return sum(float(np.sum(np.asarray(t, dtype=np.float64) * g)) for t, g in zip(out, gs))

    dy = gs if isinstance(y, (tuple, list)) else gs[0]
    grads = backward(dy, y, **inputs)
    if not isinstance(grads, dict):
        grads = dict(zip(wrt, _as_tuple(grads)))

    errors = {}
    for k in wrt:
        t = inputs[k]
        if k not in grads:
            raise AssertionError(f"{name}: backward returned no gradient for {k!r}")
        analytic = np.asarray(grads[k], dtype=np.float64)
        if analytic.shape != t.shape:
            raise AssertionError(f"{name}: gradient of {k!r} has shape {analytic.shape}, "
                                 f"{k!r} has shape {t.shape}")
        flat = t.reshape(-1)          # a view: perturbing it perturbs inputs[k]
        points = np.arange(flat.size)
        if flat.size > max_points:
            points = np.sort(rng.choice(flat.size, size=max_points, replace=False))
        numeric = np.empty(points.size)
        for j, i in enumerate(points):
            saved = flat[i]
            flat[i] = saved + eps
            plus = loss()
            flat[i] = saved - eps
            minus = loss()
            flat[i] = saved
            numeric[j] = (plus - minus) / (2 * eps)
        err = relative_error(analytic.reshape(-1)[points], numeric)
        errors[k] = err
        if verbose:
            print(f"gradcheck {name}: d{k} {tuple(t.shape)} relative error {err:.2e} "
                  f"({points.size} of {flat.size} elements)")
    for k, err in errors.items():
        if not err <= tol:
            raise AssertionError(f"{name}: gradient of {k!r} is wrong: relative error {err:.2e} "
                                 f"> tolerance {tol:.0e}")
    return errors


def _is_float_array(v):
    return isinstance(v, np.ndarray) and v.dtype.kind == "f"
