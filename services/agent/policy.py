"""The MNAS controller: an LSTM that emits a search space's tokens one at a time.

Paper 4.1 / 6.1 (following MnasNet and NASNet): the policy pi_theta maps each
architecture to a token list a_{1:T} sampled autoregressively by a one-layer
LSTM with 100 hidden units. Step t feeds the embedding of token t-1 (a learned
start embedding at t = 0) and reads token t from a softmax head sized by the
space's vocabulary at position t. Everything is batched over samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Categorical

#: One-layer LSTM with 100 hidden units (paper 6.1).
HIDDEN_SIZE = 100
#: ENAS/NASNet controllers initialise every weight in U(-0.1, 0.1); small logits
#: make the first batches close to uniform, which is the exploration we want.
INIT_RANGE = 0.1


class Controller(nn.Module):
    """LSTM policy over token lists with per-position vocabularies `vocab`."""

    def __init__(
        self,
        vocab: Sequence[int],
        hidden_size: int = HIDDEN_SIZE,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not vocab or min(vocab) < 1:
            raise ValueError(f"vocab must be a non-empty list of positive sizes, got {list(vocab)}")
        self.vocab = tuple(int(v) for v in vocab)
        self.hidden_size = hidden_size
        self.start = nn.Parameter(torch.empty(1, hidden_size))
        # embeddings[t] embeds token t as the input of step t + 1; the last token feeds nothing.
        self.embeddings = nn.ModuleList(nn.Embedding(v, hidden_size) for v in self.vocab[:-1])
        self.lstm = nn.LSTMCell(hidden_size, hidden_size)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, v) for v in self.vocab)
        # Explicit generator: the same seed gives the same initial policy without the global RNG.
        for p in self.parameters():
            nn.init.uniform_(p, -INIT_RANGE, INIT_RANGE, generator=generator)

    @property
    def n_tokens(self) -> int:
        return len(self.vocab)

    def _steps(
        self,
        n: int,
        tokens: torch.Tensor | None,
        generator: torch.Generator | None,
        temperature: float = 1.0,
    ):
        """Runs the T steps; samples tokens when `tokens` is None, else scores the given ones.

        `temperature` divides the logits (the distribution sampled and scored).
        Returns (tokens [n, T], log_prob [n], entropy [n]).
        """
        x = self.start.expand(n, -1)
        hc = None
        out, log_prob, entropy = [], torch.zeros(n), torch.zeros(n)
        for t, head in enumerate(self.heads):
            hc = self.lstm(x, hc)
            logits = head(hc[0])
            if temperature != 1.0:
                logits = logits / temperature
            dist = Categorical(logits=logits, validate_args=False)  # bad tokens fail in gather
            if tokens is None:
                a = torch.multinomial(dist.probs, 1, generator=generator).squeeze(1)
            else:
                a = tokens[:, t]
            log_prob = log_prob + dist.log_prob(a)
            entropy = entropy + dist.entropy()
            out.append(a)
            if t < len(self.embeddings):
                x = self.embeddings[t](a)
        return torch.stack(out, dim=1), log_prob, entropy

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples n token lists: (tokens [n, T] int64, log_prob [n]) under the current policy.

        With a temperature above 1 the draws are flatter; the log-probs are those of the
        tempered distribution, i.e. the behaviour policy that PPO's ratio must use.
        """
        tokens, log_prob, _ = self._steps(n, None, generator, temperature)
        return tokens, log_prob

    def evaluate_actions(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log_prob [n], entropy [n]) of given token lists [n, T], with gradients (SB3 naming).

        The entropy is the sum over positions of each step's conditional entropy along
        the given prefix, the usual per-sequence estimate in NAS controllers.
        """
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() != 2 or tokens.shape[1] != self.n_tokens:
            raise ValueError(f"tokens must be [n, {self.n_tokens}], got {list(tokens.shape)}")
        _, log_prob, entropy = self._steps(tokens.shape[0], tokens, None)
        return log_prob, entropy

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """Log-probability [n] of given token lists [n, T] under the current policy."""
        return self.evaluate_actions(tokens)[0]
