"""Many LoRA adapters over one base model, each row of a batch with its own (per-row slots).

Every adapted nn.Linear W of a *view* of the base (a copy of the module tree whose parameters are
the base's own tensors: no weight is copied) is wrapped by a BankedLinear that holds the
adapters' low-rank factors stacked in banks, one slot per adapter:

    A_bank (slots, r_max, in)   B_bank (slots, out, r_max)   scale (slots,)     slot 0: zeros

and before each forward the engine says which slot each row uses (`LoraBanks.use(slots)`):

    y[b] = W x[b] + scale[i_b] * B_bank[i_b] (A_bank[i_b] x[b])        i_b: row b's slot

The engine orders a batch's rows by slot, so each adapter's rows are one contiguous run (a
segment, as in Punica's SGMV): its low-rank product is two small matmuls on a slice of x, added in
place to the same slice of y, with no per-row gather of A and B (vLLM's BGMV reference,
`einsum("td,tld->tl", x, loras[idxs])`, computes the same sum row by row; gathering copies of
A_bank[i] per row cost more than the matmuls here). Rows of slot 0 (no LoRA: text prompts, soft
prompts, the base) are left out. Ranks differ between adapters: the banks are zero-padded to
r_max, and each slot's product uses its own rank's rows only (a view, no copy).
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
        self.ranks = [0]  # each slot's own rank
        self.segments: list[tuple[int, int, int]] = []  # (slot, first row, end row) runs
        self.by_token = False  # segments count rows (B, T, in) or packed tokens (1, N, in)

    def add(self, tensors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]) -> int:
        """Put an adapter's factors into a free slot (a new one if none); returns the slot."""
        slot = next((i for i, used in enumerate(self.used) if not used), len(self.used))
        if slot == len(self.used):
            self.used.append(True)
            self.ranks.append(0)
            for layer in self.layers.values():
                layer.grow(slot + 1)
        self.used[slot] = True
        self.ranks[slot] = max(A.shape[0] for A, _, _ in tensors.values())
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
        """The slot of each row of the next forward passes (rows of a slot best adjacent)."""
        slots = [int(s) for s in slots]
        self.segments, self.by_token = [], False
        if not self.layers:
            return
        for b, slot in enumerate(slots):
            if not slot:
                continue
            if self.segments and self.segments[-1][0] == slot and self.segments[-1][2] == b:
                self.segments[-1] = (slot, self.segments[-1][1], b + 1)
            else:
                self.segments.append((slot, b, b + 1))

    def use_tokens(self, runs: list[tuple[int, int, int]]) -> None:
        """For a packed sequence (1, N, in): (slot, first token, end token) of each row's
        tokens, in order (engine/mixed_batch.py packs rows of one slot next to each other)."""
        self.segments, self.by_token = [], True
        for slot, start, end in runs:
            if not slot or start == end:
                continue
            if self.segments and self.segments[-1][0] == slot and self.segments[-1][2] == start:
                self.segments[-1] = (slot, self.segments[-1][1], end)
            else:
                self.segments.append((slot, start, end))

    @property
    def nbytes(self) -> int:
        """What the banks hold in all: every slot (free ones too) at the largest rank per layer,
        so mixing ranks costs padding (a rank-2 adapter beside a rank-16 one is held at 16)."""
        return sum(layer.A.nbytes + layer.B.nbytes for layer in self.layers.values())

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
        self.slots: set[int] = set()  # the slots that adapt this layer

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
        self.slots.add(slot)

    def clear(self, slot: int) -> None:
        self.A[slot].zero_()
        self.B[slot].zero_()
        self.scale[slot] = 0
        self.slots.discard(slot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        banks = self._banks[0]
        if banks.by_token:  # packed: segments are token ranges of the one sequence
            x, out = x.reshape(-1, x.shape[-1]), y.view(-1, y.shape[-1])
        else:
            out = y
        for slot, start, end in banks.segments:
            if slot not in self.slots:
                continue
            r = banks.ranks[slot]
            xs = x[start:end].reshape(-1, x.shape[-1])  # (n*T, in): a view, rows are contiguous
            low = xs @ self.A[slot, :r].t()  # (n*T, r)
            out[start:end].view(-1, y.shape[-1]).addmm_(low, self.B[slot, :, :r].t(),
                                                        alpha=float(self.scale[slot]))
        return y
