"""Training's other half: how gradients change the weights.

- ``AdamW``: Adam with decoupled weight decay (Loshchilov & Hutter), the optimiser GPT-2 style
  models are trained with, matching ``torch.optim.AdamW``.
- ``clip_grad_norm``: scale all gradients down together when their norm is too large, so one
  unlucky batch cannot throw the weights far away.
- ``cosine_lr``: the learning-rate schedule, a linear warm-up then a cosine decay.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np


def decays(name: str, param: np.ndarray) -> bool:
    """Whether weight decay applies to a parameter: to the 2-D weight matrices and the
    embeddings, not to biases or LayerNorm gains and biases (nanoGPT's rule). Decay pulls a
    weight towards 0; a LayerNorm gain's natural value is 1 and a bias has nothing to regularise.
    """
    return param.ndim >= 2


class AdamW:
    """Adam with decoupled weight decay, updating a dict of NumPy arrays in place.

    Each step, for every parameter ``p`` with gradient ``g`` (all elementwise):

        p -= lr * weight_decay * p                 (decay, only where ``decays``; not through g)
        m = beta1 * m + (1 - beta1) * g            (running mean of gradients: momentum)
        v = beta2 * v + (1 - beta2) * g * g        (running mean of squared gradients)
        p -= lr * m_hat / (sqrt(v_hat) + eps)      m_hat = m / (1 - beta1^t), v_hat likewise

    Dividing by ``sqrt(v)`` gives every weight a step of about ``lr`` whatever its gradient's
    scale; the bias corrections undo the zero start of ``m`` and ``v`` in the first steps.

    Args:
        params: name -> array, e.g. ``model.params``. The arrays are updated in place and keep
            their dtype; the moment buffers have the same dtype.
        lr: the learning rate (``step`` can override it each step, for a schedule).
        betas: decay rates of the two running means.
        eps: added to ``sqrt(v_hat)`` to keep the step finite where gradients are ~0.
        weight_decay: decoupled decay rate, for the parameters where ``decays`` is true.
    """

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
    ) -> None:
        _check_nonnegative("lr", lr)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        _check_nonnegative("eps", eps)
        _check_nonnegative("weight_decay", weight_decay)
        for name, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                raise TypeError(f"parameter {name!r} must be a float32 or float64 NumPy array")
        self.params = params
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.decay = {name for name, p in params.items() if decays(name, p)}
        self.t = 0  # steps taken
        self.m = {name: np.zeros_like(p) for name, p in params.items()}
        self.v = {name: np.zeros_like(p) for name, p in params.items()}

    def step(self, grads: Mapping[str, np.ndarray], lr: float | None = None) -> None:
        """Update every parameter in place from ``grads`` (the same names and shapes).

        ``lr`` overrides the learning rate for this step (and is remembered as ``self.lr``).
        """
        if lr is not None:
            _check_nonnegative("lr", lr)
            self.lr = float(lr)
        if grads.keys() != self.params.keys():
            missing = sorted(self.params.keys() - grads.keys())
            extra = sorted(grads.keys() - self.params.keys())
            raise ValueError(
                f"grads must have exactly the parameters' names; missing {missing[:5]}, "
                f"unexpected {extra[:5]}"
            )
        for name, p in self.params.items():  # check everything before changing anything
            if grads[name].shape != p.shape:
                raise ValueError(
                    f"gradient {name!r} has shape {grads[name].shape}, parameter {p.shape}"
                )
        self.t += 1
        lr, (beta1, beta2), t = self.lr, self.betas, self.t
        step_size = lr / (1.0 - beta1**t)  # the bias correction of m, folded into the step
        v_correction = 1.0 / math.sqrt(1.0 - beta2**t)  # the bias correction of v, under sqrt
        for name, p in self.params.items():
            g, m, v = grads[name], self.m[name], self.v[name]
            if name in self.decay:
                p *= 1.0 - lr * self.weight_decay  # decoupled: decay is not mixed into m and v
            # Every update is in place, and ``update`` is the one new array: the optimiser
            # touches each of the model's weights several times per step, so this adds up.
            # m = beta1 * m + (1 - beta1) * g
            m *= beta1
            m += (1.0 - beta1) * g
            # v = beta2 * v + (1 - beta2) * g * g
            v *= beta2
            update = np.square(g)
            update *= 1.0 - beta2
            v += update
            # p -= step_size * m / (sqrt(v) * v_correction + eps)
            np.sqrt(v, out=update)
            update *= v_correction
            update += self.eps
            np.divide(m, update, out=update)
            update *= step_size
            p -= update

    def state_dict(self) -> dict[str, np.ndarray]:
        """The optimiser's state as a flat dict of arrays (saves as safetensors or npz, no
        pickle): ``step`` (the step count) and ``exp_avg.<name>`` / ``exp_avg_sq.<name>``
        (m and v, PyTorch's names)."""
        state = {"step": np.array(self.t, dtype=np.int64)}
        for name in self.params:
            state["exp_avg." + name] = self.m[name].copy()
            state["exp_avg_sq." + name] = self.v[name].copy()
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a ``state_dict`` (for the same parameters): training continues exactly."""
        expected = {"step"} | {f"{k}.{n}" for n in self.params for k in ("exp_avg", "exp_avg_sq")}
        if set(state) != expected:
            missing = sorted(expected - set(state))
            extra = sorted(set(state) - expected)
            raise ValueError(
                f"optimiser state does not match the parameters: missing {missing[:5]}, "
                f"unexpected {extra[:5]}"
            )
        for name, p in self.params.items():
            for key, buf in (("exp_avg", self.m[name]), ("exp_avg_sq", self.v[name])):
                saved = np.asarray(state[f"{key}.{name}"])
                if saved.shape != p.shape:
                    raise ValueError(
                        f"optimiser state {key}.{name} has shape {saved.shape}, "
                        f"the parameter {p.shape}"
                    )
                buf[...] = saved  # keeps the buffer's dtype
        self.t = int(state["step"])


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    The norm is taken over all gradients together, as if they were one long vector, so their
    directions relative to each other are kept (PyTorch's ``clip_grad_norm_``). Returns the norm
    *before* clipping, which is worth logging: spikes in it foretell instability.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm!r}")
    # ravel(order="K") is a view for any contiguous layout; the dot product sums in BLAS
    total = math.sqrt(
        sum(float(np.dot(g.ravel(order="K"), g.ravel(order="K"))) for g in grads.values())
    )
    scale = max_norm / (total + 1e-6)  # the 1e-6 keeps an all-zero gradient finite
    if scale < 1.0:
        for g in grads.values():
            g *= scale
    return total


def cosine_lr(
    step: int, *, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float
) -> float:
    """The learning rate at ``step`` (counting from 0): a linear warm-up then a cosine decay.

    - ``step < warmup_steps``: rises linearly, reaching ``max_lr`` at the end of the warm-up
      (starting at ``max_lr / warmup_steps``, not 0, so the first step already moves).
      Large early steps from a random start can push the weights somewhere they never recover.
    - ``warmup_steps <= step <= total_steps``: falls along half a cosine from ``max_lr`` to
      ``min_lr``, slowly at first, fastest in the middle, gently at the end.
    - after ``total_steps``: stays at ``min_lr``.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    if warmup_steps < 0 or total_steps < warmup_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps, got warmup_steps={warmup_steps}, "
            f"total_steps={total_steps}"
        )
    if not 0.0 <= min_lr <= max_lr:
        raise ValueError(f"need 0 <= min_lr <= max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def _check_nonnegative(name: str, value: object) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and math.isfinite(float(value)) and float(value) >= 0):  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
