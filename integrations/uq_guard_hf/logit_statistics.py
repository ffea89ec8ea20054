"""Per-token log-probabilities and entropies, read from a model's raw logits.

The logits are those ``generate(output_logits=True)`` returns: before
temperature or any other logits processor touches them, so the numbers
describe the model and not the sampler (a token sampled at T=0.3 gets the
same log-probability as when chosen greedily).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["raw_logit_statistics"]


def raw_logit_statistics(
    step_logits: Sequence[torch.Tensor], generated: torch.Tensor
) -> tuple[list[list[float]], list[list[float]]]:
    """Log-probability of each chosen token and entropy of each step, from raw logits.

    Args:
        step_logits: one ``(rows, vocab)`` tensor per generated step, as
            ``generate(output_logits=True)`` returns them (before any
            logits processor).
        generated: the ``(rows, steps)`` generated token ids.

    Returns:
        Per row, the chosen tokens' log-probabilities and the per-step
        entropies in nats.
    """
    import torch

    chosen_per_step = []
    entropy_per_step = []
    for step, logits in enumerate(step_logits):
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        chosen = generated[:, step].unsqueeze(-1).to(log_probs.device)
        chosen_per_step.append(log_probs.gather(-1, chosen).squeeze(-1))
        # entr(p) = -p log p with entr(0) = 0, so masked (-inf) logits are harmless.
        entropy_per_step.append(torch.special.entr(log_probs.exp()).sum(dim=-1))
    chosen_logprobs = torch.stack(chosen_per_step, dim=1).cpu().tolist()
    entropies = torch.stack(entropy_per_step, dim=1).clamp_min(0.0).cpu().tolist()
    return chosen_logprobs, entropies
