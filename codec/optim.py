"""Adam without ``torch.optim``: the same update, element for element, at no start-up cost.

``torch.optim.Optimizer`` imports ``torch._dynamo`` the first time an optimiser is built: 2-5 s of
a CPU encode's wall time before the first step (measured on the developers' 2-core machine,
``python -X importtime``), more than a whole ``latent-tiny`` fit. This class performs the same
arithmetic as ``torch.optim.Adam``'s single-tensor path (no weight decay, no amsgrad), in the same
order, so a fit gives the same numbers with either (tested), and offers the few members the encoder
uses: ``param_groups`` (each with its ``lr``), ``zero_grad``, ``step`` and ``state``.
"""
from __future__ import annotations

import torch


class Adam:
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups = [{"params": list(g["params"]), "lr": float(g.get("lr", lr))} for g in groups]
        self.betas, self.eps = betas, eps
        self.state: dict = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        for g in self.param_groups:
            lr = g["lr"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state.get(p)
                if st is None:
                    st = self.state[p] = [0, torch.zeros_like(p), torch.zeros_like(p)]
                st[0] += 1
                n, m, v = st
                m.lerp_(p.grad, 1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                step_size = lr / (1 - b1 ** n)
                denom = (v.sqrt() / (1 - b2 ** n) ** 0.5).add_(self.eps)
                p.addcdiv_(m, denom, value=-step_size)
