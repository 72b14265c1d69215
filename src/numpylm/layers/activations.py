"""The MLP's nonlinearities: GELU (GPT-2), and SiLU gating in SwiGLU (the Llama family).

One speed rewrite stands beside the formula it computes: ``gelu_fast``, the same numbers as
``gelu`` in one buffer (3.5 ms -> 1.0 ms over a (512, 3072) float32 array, measured), used by
the fast backend and by training; a test keeps the two equal.
"""

from __future__ import annotations

import math

import numpy as np

_GELU_C = math.sqrt(2.0 / math.pi)


def gelu(x: np.ndarray) -> np.ndarray:
    """``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``, elementwise: GPT-2's
    GELU, in the tanh approximation (``gelu_new`` in Hugging Face).

    A smooth ReLU: about ``x`` for large ``x``, about 0 for very negative ``x``.
    """
    return 0.5 * x * (1.0 + np.tanh(_GELU_C * (x + 0.044715 * (x * x * x))))


def gelu_fast(x: np.ndarray) -> np.ndarray:
    """``gelu``, computed step by step in one array (the same numbers, to rounding).

    It runs over the MLP's (B, T, 4C) activations, the largest of the forward pass, and each
    temporary of that size would cost another pass over memory: written in one line, the
    formula makes six of them.
    """
    u = x * x
    u *= 0.044715
    u += 1.0
    u *= x  # x + 0.044715 x^3
    u *= _GELU_C
    np.tanh(u, out=u)  # tanh(sqrt(2 / pi) (x + 0.044715 x^3))
    u += 1.0
    u *= x
    u *= 0.5
    return u


def gelu_backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Backward of ``gelu``: ``dout * gelu'(x)``, elementwise.

    Args:
        dout: gradient with respect to the output.
        x: the forward's input.
        out: the forward's output, ``gelu(x)``.

    Write the forward as ``gelu = x * s`` with ``s = 0.5 (1 + tanh(u))``, a sigmoid of ``2u``,
    and ``u = sqrt(2/pi) (x + 0.044715 x^3)``. Then ``ds/dx = 2 s (1 - s) u'`` (as
    ``1 - tanh^2 = 4 s (1 - s)``), so ``gelu' = s + x ds/dx = s (1 + 2 x (1 - s) u')``, with
    ``u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)``. The forward's output already holds ``s``
    (``s = out / x``), so the backward needs no ``tanh`` (the slowest operation of the MLP):
    the same saving as ``tanh' = 1 - tanh^2`` from the output. At ``x = 0``, ``s = 0.5``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 where x = 0, set next
        s = out / x
    s[x == 0] = 0.5
    # dout * s * (1 + x (1 - s) 2u'), with x (1 - s) = x - out, in one more (B, T, 4C) array
    # (the backward's largest arrays, as in gelu_fast: each temporary is a pass over memory)
    g = x * x
    g *= (3.0 * 0.044715) * (2.0 * _GELU_C)
    g += 2.0 * _GELU_C  # 2 u' = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    g *= x - out  # x (1 - s) 2u'
    g += 1.0
    g *= s
    g *= dout
    return g


def silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)``, elementwise, with ``sigmoid(x) = 1 / (1 + exp(-x))``: the "SiLU" or
    "swish", a smooth ReLU like GELU.

    Computed as ``sigmoid(x) = 0.5 * (1 + tanh(x / 2))``, the same function, because
    ``exp(-x)`` overflows float32 for ``x < -88`` and ``tanh`` never does.
    """
    return x * (0.5 * (1.0 + np.tanh(0.5 * x)))


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """``silu(gate) * up``, elementwise: the SwiGLU MLP's middle.

    GPT-2's MLP bends one projection, ``gelu(x @ W1)``. SwiGLU makes two, and one gates the
    other: ``silu(x @ W_gate) * (x @ W_up)``, then ``@ W_down``. For the same number of
    parameters (its hidden width is about 2/3 of 4C) it trains better.

    Args:
        gate: (B, T, F) the gate projection, ``x @ W_gate``.
        up: (B, T, F) the up projection, ``x @ W_up``.

    Returns:
        (B, T, F).
    """
    return silu(gate) * up
