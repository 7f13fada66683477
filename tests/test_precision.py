"""--precision tf32 / bf16 (convnet/precision.py): the ops on the host are the
reference on rounded inputs; a net on the emulated device (the tensor-core
kernels) gives the same loss and gradients as on the host within float32
summation error, and measurably different ones from fp32; bad precisions are
refused; train and evaluate take --precision."""
import numpy as np
import pytest

from convnet import cpu_ops, backend, ops
from convnet.cli import UsageError
from convnet import reference as R
from convnet.net import Net
from convnet.precision import round_bf16, round_tf32, round_to


def test_unknown_precision_is_refused():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        ops.fc_forward(x, x, precision="fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        Net("two_column_tiny", precision="half")


def test_round_to_leaves_fp32_alone_and_rounds_float64_through_float32():
    a = np.array([1 + 2 ** -11, 1 + 2 ** -9, 1 + 3 * 2 ** -8], np.float64)
    assert round_to(a, "fp32") is a
    np.testing.assert_array_equal(round_to(a, "tf32"), [1 + 2 ** -10, 1 + 2 ** -9, 1 + 3 * 2 ** -8])
    np.testing.assert_array_equal(round_to(a, "bf16"), [1.0, 1.0, 1 + 2 ** -6])
    assert round_tf32(a).dtype == round_bf16(a).dtype == np.float32


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_host_ops_are_the_cpu_ops_on_rounded_inputs(precision):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 7, 6)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    r = lambda a: round_to(a, precision)   # noqa: E731
    np.testing.assert_array_equal(ops.conv2d_forward(x, w, b, 1, 1, precision=precision),
                                  cpu_ops.conv2d_forward(r(x), r(w), b, 1, 1))
    dy = rng.standard_normal((3, 4, 7, 6)).astype(np.float32)
    np.testing.assert_array_equal(ops.conv2d_backward_filter(dy, x, w.shape, 1, 1, precision=precision),
                                  cpu_ops.conv2d_backward_filter(r(dy), r(x), w.shape, 1, 1))
    f = x.reshape(3, -1)
    fw = rng.standard_normal((5, f.shape[1])).astype(np.float32)
    np.testing.assert_array_equal(ops.fc_forward(f, fw, precision=precision), cpu_ops.fc_forward(r(f), r(fw)))
    # the host's CPU ops are the reference up to float32 summation order
    np.testing.assert_allclose(ops.conv2d_forward(x, w, b, 1, 1, precision=precision),
                               R.conv2d_forward(r(x), r(w), b, 1, 1), rtol=1e-5, atol=1e-5)


def _step(device, precision):
    net = Net("two_column_tiny", devices=device, precision=precision)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    labels = np.array([3, 7], np.int32)
    loss = net.loss(net.forward(x), labels)
    net.backward()
    return loss, {p.name: backend.to_host(p.grad) for p in net.params()}


@pytest.mark.parametrize("precision", ["bf16"])
def test_emulated_tensor_core_net_equals_host_rounding_model(precision):
    """One training step of two_column_tiny (conv, LRN, pooling, fc, dropout) on the emulated
    device in bf16 (every conv and fc on kernels/conv_tc.cu and gemm_tc.cu) against the host's
    rounding model; tf32 runs the same code paths (the value cases check both)."""
    emu = backend.emu()
    loss_emu, g_emu = _step(emu, precision)
    loss_host, g_host = _step(backend.cpu(), precision)
    loss_fp32, g_fp32 = _step(backend.cpu(), "fp32")
    assert abs(loss_emu - loss_host) <= 1e-5 * abs(loss_host)
    worst = worst_fp32 = 0.0
    for name, g in g_host.items():
        scale = max(np.max(np.abs(g)), 1e-30)
        worst = max(worst, np.max(np.abs(g_emu[name] - g)) / scale)
        worst_fp32 = max(worst_fp32, np.max(np.abs(g_fp32[name] - g)) / scale)
    assert worst <= 1e-4, f"emulated kernels vs host rounding model: {worst:.1e}"
    assert worst_fp32 > 10 * worst, "bf16 gradients should differ from fp32 ones more than the kernels' error"


def test_train_and_evaluate_take_precision():
    from convnet import evaluate, train
    assert train.build_parser().parse_args(["--precision", "bf16"]).precision == "bf16"
    assert evaluate.build_parser().parse_args(["ck", "--precision", "tf32"]).precision == "tf32"
    with pytest.raises(UsageError, match="invalid choice"):
        train.build_parser().parse_args(["--precision", "fp16"])
    from convnet.configs import load_config
    net, _, _ = train.build(load_config("two_column_tiny"),
                            {"seed": 0, "lr": 0.01, "lr_schedule": {"type": "constant"}, "precision": "tf32"},
                            [backend.cpu()])
    assert net.precision == "tf32"
    assert {layer.precision for layer in net.nodes if layer.kind in ("conv", "fc")} == {"tf32"}
