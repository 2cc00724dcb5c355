"""Recurrent encoder and latent-conditioned decoder for series [B, T, C] (plain nn.Modules)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

RNNKind = Literal["lstm", "gru"]


def _rnn(kind: RNNKind, input_size: int, hidden: int, layers: int) -> nn.RNNBase:
    rnn_type = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
    return rnn_type(input_size, hidden, num_layers=layers, batch_first=True)


class RecurrentEncoder(nn.Module):
    """Reads the whole series; the top layer's last hidden state, projected, is the code."""

    def __init__(self, channels: int, out_features: int, hidden: int, layers: int, kind: RNNKind) -> None:
        super().__init__()
        self.rnn = _rnn(kind, channels, hidden, layers)
        self.head = nn.Linear(hidden, out_features)

    def forward(self, series: Tensor) -> Tensor:
        _, state = self.rnn(series)
        hidden = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
        return self.head(hidden[-1])


class RecurrentDecoder(nn.Module):
    """Unrolls T steps from a code (the initial state, also fed each step) and the previous value: in training
    the true one with probability `teacher_forcing`, else its own; `hold_within` bounds the outputs."""

    def __init__(
        self, latent_dim: int, channels: int, seq_len: int, hidden: int, layers: int, kind: RNNKind
    ) -> None:
        super().__init__()
        self.kind = kind
        self.layers = layers
        self.hidden = hidden
        self.seq_len = seq_len
        self.channels = channels
        states = 2 if kind == "lstm" else 1  # an LSTM's cell state is set from the code as well
        self.initial_state = nn.Linear(latent_dim, states * layers * hidden)
        self.rnn = _rnn(kind, channels + latent_dim, hidden, layers)
        self.head = nn.Linear(hidden, channels)
        self.register_buffer("bounded", torch.tensor(False))
        self.register_buffer("output_range", torch.zeros(2, channels))

    def hold_within(self, output_range: Tensor | None) -> None:
        """Hold every output inside `output_range` [2, C] (per channel low, high); None: a linear output."""
        self.bounded.fill_(output_range is not None)
        if output_range is not None:
            self.output_range.copy_(output_range)

    def _read_out(self, out: Tensor) -> Tensor:
        value = self.head(out)
        low, high = self.output_range
        return torch.where(self.bounded, low + (high - low) * torch.sigmoid(value), value)

    def _state(self, latents: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        batch = len(latents)
        state = torch.tanh(self.initial_state(latents)).view(batch, -1, self.layers, self.hidden)
        state = state.permute(1, 2, 0, 3).contiguous()  # [states, layers, B, H]
        return (state[0], state[1]) if self.kind == "lstm" else state[0]

    def forward(self, latents: Tensor, targets: Tensor | None = None, teacher_forcing: float = 0.0) -> Tensor:
        """[B, latent] -> [B, T, C]; `targets` [B, T, C] are fed back with probability `teacher_forcing`."""
        batch = len(latents)
        state = self._state(latents)
        first = latents.new_zeros(batch, 1, self.channels)
        if targets is not None and teacher_forcing >= 1.0:
            # Every step teacher-forced: one call over the whole sequence instead of a Python loop.
            previous = torch.cat([first, targets[:, :-1]], dim=1)
            code = latents.unsqueeze(1).expand(-1, self.seq_len, -1)
            out, _ = self.rnn(torch.cat([previous, code], dim=2), state)
            return self._read_out(out)
        outputs = []
        previous = first
        code = latents.unsqueeze(1)
        for step in range(self.seq_len):
            out, state = self.rnn(torch.cat([previous, code], dim=2), state)
            value = self._read_out(out)
            outputs.append(value)
            previous = value
            if targets is not None and teacher_forcing > 0.0:
                forced = torch.rand(batch, 1, 1, device=latents.device) < teacher_forcing
                previous = torch.where(forced, targets[:, step : step + 1], value)
        return torch.cat(outputs, dim=1)
