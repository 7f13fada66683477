"""A second implementation of every forward, as plain loops written straight from the formulas.

Only for tiny shapes in tests: it shares no code with convnet/reference.py (no
windows, no tensordot, its own scalar Philox), so the two cannot share a bug.
Everything is accumulated in Python floats (float64) and returned as float64
arrays (or Python numbers).
"""
import math

import numpy as np


def conv2d(x, w, b=None, stride=(1, 1), pad=(0, 0), groups=1):
    """y[n, f, i, j] = b[f] + sum_{c, p, q} w[f, c, p, q] * x[n, g*Cg + c, i*sh + p - ph, j*sw + q - pw]
    (terms outside the image are zero)."""
    sh, sw = stride
    ph, pw = pad
    n_, c_, h, w_ = x.shape
    f_, cg, kh, kw = w.shape
    fg = f_ // groups
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w_ + 2 * pw - kw) // sw + 1
    y = np.zeros((n_, f_, oh, ow))
    for n in range(n_):
        for f in range(f_):
            g = f // fg
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0 if b is None else float(b[f])
                    for c in range(cg):
                        for p in range(kh):
                            for q in range(kw):
                                r, s = i * sh + p - ph, j * sw + q - pw
                                if 0 <= r < h and 0 <= s < w_:
                                    acc += float(w[f, c, p, q]) * float(x[n, g * cg + c, r, s])
                    y[n, f, i, j] = acc
    return y


def fc(x, w, b=None):
    """y[n, o] = b[o] + sum_i w[o, i] * x[n, i]."""
    y = np.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            acc = 0.0 if b is None else float(b[o])
            for i in range(x.shape[1]):
                acc += float(w[o, i]) * float(x[n, i])
            y[n, o] = acc
    return y


def lrn(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """b[i] = a[i] / (k + alpha * sum_{j=max(0,i-size//2)}^{min(C-1,i+size//2)} a[j]^2) ** beta."""
    n_, c_, h, w_ = x.shape
    y = np.zeros(x.shape)
    for n in range(n_):
        for i in range(c_):
            for r in range(h):
                for s in range(w_):
                    total = 0.0
                    for j in range(max(0, i - size // 2), min(c_ - 1, i + size // 2) + 1):
                        total += float(x[n, j, r, s]) ** 2
                    y[n, i, r, s] = float(x[n, i, r, s]) / (k + alpha * total) ** beta
    return y


def pool_size(n, size, stride):
    """ceil((n - size) / stride) + 1, less the last window when it would start at or past n."""
    out = math.ceil((n - size) / stride) + 1
    return out - 1 if (out - 1) * stride >= n else out


def _pool(x, size, stride, reduce):
    n_, c_, h, w_ = x.shape
    oh, ow = pool_size(h, size, stride), pool_size(w_, size, stride)
    y = np.zeros((n_, c_, oh, ow))
    for n in range(n_):
        for c in range(c_):
            for i in range(oh):
                for j in range(ow):
                    window = [float(x[n, c, r, s])
                              for r in range(i * stride, min(i * stride + size, h))
                              for s in range(j * stride, min(j * stride + size, w_))]
                    y[n, c, i, j] = reduce(window)
    return y


def maxpool(x, size=3, stride=2):
    """Maximum of the window clipped at the border."""
    return _pool(x, size, stride, max)


def avgpool(x, size=3, stride=2):
    """Mean of the in-image elements of the window."""
    return _pool(x, size, stride, lambda v: sum(v) / len(v))


def relu(x):
    return np.array([max(0.0, float(v)) for v in x.reshape(-1)]).reshape(x.shape)


def tanh(x):
    return np.array([math.tanh(float(v)) for v in x.reshape(-1)]).reshape(x.shape)


def softmax(z):
    """p[n, c] = exp(z[n, c]) / sum_j exp(z[n, j]), computed with the row maximum subtracted."""
    p = np.zeros(z.shape)
    for n in range(z.shape[0]):
        m = max(float(v) for v in z[n])
        e = [math.exp(float(v) - m) for v in z[n]]
        for c in range(z.shape[1]):
            p[n, c] = e[c] / sum(e)
    return p


def cross_entropy(z, labels):
    """mean_n -log softmax(z)[n, label[n]] (via log-sum-exp)."""
    total = 0.0
    for n in range(z.shape[0]):
        m = max(float(v) for v in z[n])
        lse = m + math.log(sum(math.exp(float(v) - m) for v in z[n]))
        total += lse - float(z[n, labels[n]])
    return total / z.shape[0]


def topk_errors(z, labels, k):
    """Rows whose label has k or more classes with a strictly larger score."""
    errors = 0
    for n in range(z.shape[0]):
        larger = sum(1 for c in range(z.shape[1]) if z[n, c] > z[n, labels[n]])
        errors += larger >= k
    return errors


def sgd(w, dw, v, lr, momentum=0.9, weight_decay=0.0005):
    """Returns new (w, v): v <- momentum*v - weight_decay*lr*w - lr*dw ; w <- w + v."""
    w_new, v_new = np.zeros(w.shape), np.zeros(w.shape)
    for i in np.ndindex(w.shape):
        vi = momentum * float(v[i]) - weight_decay * lr * float(w[i]) - lr * float(dw[i])
        v_new[i] = vi
        w_new[i] = float(w[i]) + vi
    return w_new, v_new


# --- Philox4x32-10 on Python ints, one block at a time ---------------------

def philox(counter, key):
    """Random123 Philox4x32-10 of one counter (4 words) and key (2 words)."""
    mask = 0xFFFFFFFF
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(10):
        if r > 0:
            k0 = (k0 + 0x9E3779B9) & mask
            k1 = (k1 + 0xBB67AE85) & mask
        prod0 = 0xD2511F53 * c0
        prod1 = 0xCD9E8D57 * c2
        hi0, lo0 = prod0 >> 32, prod0 & mask
        hi1, lo1 = prod1 >> 32, prod1 & mask
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def dropout(x, p, seed):
    """Inverted dropout: element i kept when philox((i mod 2^32, i >> 32, 0, 0), seed words)[0]
    >= min(round(p * 2^32), 2^32 - 1); kept elements are divided by (1 - p)."""
    threshold = min(round(p * 2 ** 32), 2 ** 32 - 1)
    key = (seed % 2 ** 32, seed >> 32)
    flat = x.reshape(-1)
    y = np.zeros(flat.size)
    for i in range(flat.size):
        word = philox((i % 2 ** 32, i >> 32, 0, 0), key)[0]
        if word >= threshold:
            y[i] = float(flat[i]) / (1 - p)
    return y.reshape(x.shape)
