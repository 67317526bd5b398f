"""Many LoRA adapters over one base model, each row of a batch with its own (BGMV-style).

Every adapted nn.Linear W of a *view* of the base (a copy of the module tree whose parameters are
the base's own tensors: no weight is copied) is wrapped by a BankedLinear that holds the
adapters' low-rank factors stacked in banks, one slot per adapter:

    A_bank (slots, r_max, in)   B_bank (slots, out, r_max)   scale (slots,)     slot 0: zeros

and before each forward the engine says which slot each row uses (`LoraBanks.use(slots)`):

    y[b] = W x[b] + scale[i_b] * B_bank[i_b] (A_bank[i_b] x[b])        i_b: row b's slot

The gather A_bank[i] is vLLM's BGMV reference (`einsum("td,tld->tl", x, loras[idxs])`) done per
row with batched matmuls; rows of slot 0 (no LoRA: text prompts, soft prompts, the base) are left
out of the low-rank product. Ranks differ between adapters: each is zero-padded to r_max, which
adds exact zeros. A module an adapter does not adapt keeps zeros in its slot.
"""

from __future__ import annotations

import copy
import itertools

import torch


def shallow_view(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model`'s module tree that shares every parameter and buffer (same tensors):
    its modules can be swapped without touching `model`, and it costs no weight memory."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


class LoraBanks:
    """The view of the base, its BankedLinear layers, and the slots of the adapters loaded."""

    def __init__(self, base: torch.nn.Module):
        self.view = shallow_view(base).eval()
        self.layers: dict[str, BankedLinear] = {}
        self.used = [True]  # slot 0: no LoRA, always "used"
        self.rows: torch.Tensor | None = None  # (b,) slots of the rows that have one
        self.active: torch.Tensor | None = None  # (b,) indices of those rows in the batch

    def add(self, tensors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]) -> int:
        """Put an adapter's factors into a free slot (a new one if none); returns the slot."""
        slot = next((i for i, used in enumerate(self.used) if not used), len(self.used))
        if slot == len(self.used):
            self.used.append(True)
            for layer in self.layers.values():
                layer.grow(slot + 1)
        self.used[slot] = True
        for name, (A, B, scale) in tensors.items():
            self._layer(name).set(slot, A, B, scale)
        return slot

    def remove(self, slot: int) -> None:
        if slot <= 0:
            return
        for layer in self.layers.values():
            layer.clear(slot)
        self.used[slot] = False

    def use(self, slots: list[int] | torch.Tensor) -> None:
        """The slot of each row of the next forward passes."""
        slots = torch.as_tensor(slots, dtype=torch.long)
        active = torch.nonzero(slots, as_tuple=True)[0]
        if not len(active) or not self.layers:
            self.rows = self.active = None
        else:
            self.rows, self.active = slots[active], active

    def nbytes_per_slot(self) -> int:
        return sum(layer.slot_bytes() for layer in self.layers.values())

    def _layer(self, name: str) -> BankedLinear:
        if name not in self.layers:
            linear = self.view.get_submodule(name)
            if not isinstance(linear, torch.nn.Linear):
                raise ValueError(f"LoRA module {name} is a {type(linear).__name__}, not a Linear")
            parent, _, child = name.rpartition(".")
            layer = BankedLinear(linear, self, len(self.used))
            setattr(self.view.get_submodule(parent) if parent else self.view, child, layer)
            self.layers[name] = layer
        return self.layers[name]


class BankedLinear(torch.nn.Module):
    """A base nn.Linear (shared, unchanged) plus the banks of every adapter's low-rank factors."""

    def __init__(self, base: torch.nn.Linear, banks: LoraBanks, slots: int):
        super().__init__()
        self.base = base
        self._banks = [banks]  # a list: not registered as a submodule (it holds the view)
        w = base.weight
        self.A = torch.zeros((slots, 0, base.in_features), dtype=w.dtype, device=w.device)
        self.B = torch.zeros((slots, base.out_features, 0), dtype=w.dtype, device=w.device)
        self.scale = torch.zeros(slots, dtype=w.dtype, device=w.device)

    def grow(self, slots: int) -> None:
        extra = slots - self.A.shape[0]
        self.A = torch.cat([self.A, self.A.new_zeros((extra, *self.A.shape[1:]))])
        self.B = torch.cat([self.B, self.B.new_zeros((extra, *self.B.shape[1:]))])
        self.scale = torch.cat([self.scale, self.scale.new_zeros(extra)])

    def set(self, slot: int, A: torch.Tensor, B: torch.Tensor, scale: float) -> None:
        r = A.shape[0]
        if r > self.A.shape[1]:  # pad every slot to the new largest rank (zeros add nothing)
            self.A = torch.cat([self.A, self.A.new_zeros((self.A.shape[0], r - self.A.shape[1],
                                                          self.A.shape[2]))], dim=1)
            self.B = torch.cat([self.B, self.B.new_zeros((*self.B.shape[:2],
                                                          r - self.B.shape[2]))], dim=2)
        self.clear(slot)
        self.A[slot, :r] = A.to(self.A.dtype)
        self.B[slot, :, :r] = B.to(self.B.dtype)
        self.scale[slot] = scale

    def clear(self, slot: int) -> None:
        self.A[slot].zero_()
        self.B[slot].zero_()
        self.scale[slot] = 0

    def slot_bytes(self) -> int:
        return (self.A[0].numel() + self.B[0].numel()) * self.A.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        banks = self._banks[0]
        if banks.rows is None:
            return y
        rows, active = banks.rows, banks.active
        xs = x[active] if len(active) != x.shape[0] else x  # (b, T, in)
        low = torch.bmm(xs.reshape(len(active), -1, xs.shape[-1]), self.A[rows].transpose(1, 2))
        delta = torch.bmm(low, self.B[rows].transpose(1, 2)) * self.scale[rows][:, None, None]
        delta = delta.reshape(*xs.shape[:-1], delta.shape[-1])
        if len(active) == x.shape[0]:
            return y + delta
        return y.index_add(0, active, delta)
