"""The Trainable of the methods that train a model's own weights: LoRA and full fine-tuning.

Both hand the loop a transformers causal LM; what trains is whatever in it requires grad (the
injected A and B matrices for LoRA, every weight for full fine-tuning), and the loss is
`lm_loss.target_loss` on the model as it stands. So one small class serves both.

    ModuleTrainable(model).parameters()   -> [p for p in model.parameters() if p.requires_grad]
    ModuleTrainable(model).loss(batch)    -> target_loss(model, ids, mask, target_mask)

Fitting code: lora.py and full.py import it inside their `fit` only, so that loading and binding a
saved adapter never imports the training loop (methods/tuned.py says what inference needs).
"""

from __future__ import annotations

import torch

from tailorlm.engine.lm_loss import target_loss
from tailorlm.engine.train import Batch

# AdamW keeps two float32 moments (m and v) per trained parameter: 8 bytes each, whatever the
# weights' own dtype. The cost report shows it because it is what makes full fine-tuning heavy.
ADAMW_BYTES_PER_PARAM = 8


class ModuleTrainable:
    """The parameters of `model` that require grad, and the target-token loss through it."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        # named_parameters() yields a tied weight once, so the state dict holds it once
        self.named = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.named.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        # Views, not copies: the checkpoint writer copies what it must, and cloning every weight
        # of a full fine-tune at each checkpoint would double its memory for nothing.
        return {n: p.detach() for n, p in self.named.items()}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.named) - set(sd))
        if missing:
            raise KeyError(f"state dict lacks {len(missing)} trained tensors, e.g. {missing[0]}")
        with torch.no_grad():
            for n, p in self.named.items():
                p.copy_(sd[n])

    def train(self, mode: bool) -> None:
        self.model.train(mode)  # dropout (LoRA's, the model's own) on while training

    def loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        return target_loss(self.model, batch.input_ids, batch.attention_mask, batch.target_mask)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.named.values())


def optimizer_bytes(n_trainable: int) -> int:
    return ADAMW_BYTES_PER_PARAM * n_trainable
