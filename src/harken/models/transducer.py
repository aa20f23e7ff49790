"""Transducer (RNN-T) models: any harken encoder + prediction network + joint network, with an
optional auxiliary CTC head (hybrid models decode either way).

    config = model_config("transducer", "tiny", encoder="conformer", head="hybrid")
    net = build_model("transducer", config, input_dim=80, vocab_size=29)
    encoder_out, out_lengths = net(features, lengths)      # (B, T', D) encoder frames
    per_utterance_loss = net(features, lengths, targets, target_lengths)   # training
    ctc_log_probs = net.ctc_log_probs(encoder_out)         # (B, T', V), hybrid only

The encoder is the harken network of `encoder` ("conformer", "deepspeech2", "citrinet"): its
last hidden frames (the input of its CTC output layer) feed the joint network. A "hybrid"
model keeps that CTC output layer and trains it with weight `ctc_weight`; a "transducer"
model drops it.

Prediction network ("predictor"): an embedding of the last emitted token (the blank id stands
for "start of sentence") through an LSTM or GRU, or "stateless" (Ghodsi et al. 2020, icefall):
a depthwise convolution over the embeddings of the last `context_size` tokens.

Joint network: out(tanh(enc_proj(encoder frame) + pred_proj(predictor output))) -> (V,)
logits; the projections are applied once per frame and once per token, so a lattice of
T x (U + 1) cells costs one addition, a tanh and one (J x V) product per cell.

Decoding, streaming and ONNX export: `harken.decoding.transducer_search`; docs/transducer.md.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harken.errors import ConfigError
from harken.models.registry import ARCHITECTURES, build_model, ConfigMixin, model_config
from harken.models.rnnt_loss import chunked_rnnt_loss

Head = Literal["transducer", "hybrid"]
PredictorKind = Literal["lstm", "gru", "stateless"]


@dataclass(frozen=True)
class TransducerConfig(ConfigMixin):
    """Transducer hyper-parameters; the defaults are the "small" size.

    - `encoder`, `encoder_size`, `encoder_overrides`: the harken encoder network, as
      `model_config(encoder, encoder_size, **encoder_overrides)`.
    - `head`: "transducer" (RNN-T only) or "hybrid" (RNN-T + CTC output layer).
    - `ctc_weight`: hybrid loss = (1 - ctc_weight) * RNN-T + ctc_weight * CTC.
    - `predictor`: "lstm", "gru" or "stateless"; `predictor_dim`, `predictor_layers`;
      `context_size`: tokens seen by the stateless predictor.
    - `joint_dim`: width of the joint network.
    - `loss_chunk`: utterances per joint/loss chunk in training (0: the whole batch at once;
      smaller bounds the memory of the (B, T, U + 1, V) joint output, see
      `harken.models.rnnt_loss.chunked_rnnt_loss`).
    """

    encoder: str = "conformer"
    encoder_size: str = "small"
    encoder_overrides: Any = None
    head: Head = "transducer"
    ctc_weight: float = 0.3
    predictor: PredictorKind = "lstm"
    predictor_dim: int = 320
    predictor_layers: int = 1
    context_size: int = 2
    joint_dim: int = 320
    dropout: float = 0.1
    loss_chunk: int = 0

    def __post_init__(self) -> None:
        self._require(self.encoder in ARCHITECTURES and self.encoder != "transducer",
                      "encoder", f"one of {sorted(set(ARCHITECTURES) - {'transducer'})}")
        self._require(self.encoder_overrides is None or isinstance(self.encoder_overrides, dict),
                      "encoder_overrides", "a table of encoder settings or None")
        self._require(self.head in ("transducer", "hybrid"), "head", "'transducer' or 'hybrid'")
        self._require(0.0 <= self.ctc_weight < 1.0, "ctc_weight", "a weight in [0, 1)")
        self._require(self.predictor in ("lstm", "gru", "stateless"), "predictor",
                      "'lstm', 'gru' or 'stateless'")
        self._require(self.predictor_dim >= 1, "predictor_dim", "a positive size")
        self._require(self.predictor_layers >= 1, "predictor_layers", "at least 1")
        self._require(self.context_size >= 1, "context_size", "at least 1")
        self._require(self.joint_dim >= 1, "joint_dim", "a positive size")
        self._require(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)")
        self._require(self.loss_chunk >= 0, "loss_chunk", "0 (whole batch) or a positive count")
        self.encoder_config()  # ConfigError now for a bad encoder size or override

    def encoder_config(self) -> Any:
        """The encoder's own config dataclass."""
        return model_config(self.encoder, self.encoder_size, **(self.encoder_overrides or {}))


class _Tap(nn.Module):
    """Wraps an encoder's CTC output layer and keeps its input (the encoder's last hidden
    frames) for the joint network; `inner` is the CTC layer (hybrid) or an identity."""

    def __init__(self, inner: nn.Module, channels_first: bool) -> None:
        super().__init__()
        self.inner = inner
        self.channels_first = channels_first
        self._seen = threading.local()

    def __getstate__(self) -> dict[str, Any]:  # (copy/pickle: the thread-local slot is not kept)
        state = self.__dict__.copy()
        state.pop("_seen", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._seen = threading.local()

    def forward(self, x: Tensor) -> Tensor:
        self._seen.value = x.transpose(1, 2) if self.channels_first else x
        return self.inner(x)  # type: ignore[no-any-return]

    def take(self) -> Tensor | None:
        """The (B, T', D) frames seen by the last call in this thread (None if none)."""
        value = getattr(self._seen, "value", None)
        self._seen.value = None
        return value


def _attach_tap(network: nn.Module, keep_ctc: bool) -> tuple[_Tap, int]:
    """Put a `_Tap` around the CTC output layer of a harken network; returns it and the
    width of the encoder frames."""
    if isinstance(getattr(network, "head", None), nn.Linear):  # DeepSpeech2: (B, T, D) in
        layer = network.head
        width = layer.in_features
        network.head = _Tap(layer if keep_ctc else nn.Identity(), channels_first=False)
        return network.head, width
    decoder = getattr(network, "decoder", None)
    layers = getattr(decoder, "decoder_layers", None)
    if isinstance(layers, nn.Sequential) and isinstance(layers[0], nn.Conv1d):
        # Conformer's decoder takes (B, T, D), Citrinet's (B, C, T).
        channels_first = type(network).__name__ == "Citrinet"
        width = layers[0].in_channels
        if not keep_ctc:
            decoder.decoder_layers = nn.Identity()
        tap = _Tap(decoder, channels_first)
        network.decoder = tap
        return tap, width
    raise ConfigError(f"{type(network).__name__} cannot be a transducer encoder (its CTC output "
                      "layer is not a Linear head or a 1x1 conv decoder)")


class Predictor(nn.Module):
    """Prediction network: token history -> (B, U + 1, H) outputs.

    forward(tokens (B, U)) -> (B, U + 1, H): output u summarises blank(start) + tokens[:u].
    step(tokens (N,), state) -> (N, H) output after `tokens`, and the new state.
    """

    def __init__(self, config: TransducerConfig, vocab_size: int) -> None:
        super().__init__()
        self.kind = config.predictor
        self.context_size = config.context_size
        dim = config.predictor_dim
        self.embedding = nn.Embedding(vocab_size, dim)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn: nn.Module | None = None
        self.conv: nn.Conv1d | None = None
        if self.kind == "lstm":
            self.rnn = nn.LSTM(dim, dim, config.predictor_layers, batch_first=True,
                               dropout=config.dropout if config.predictor_layers > 1 else 0.0)
        elif self.kind == "gru":
            self.rnn = nn.GRU(dim, dim, config.predictor_layers, batch_first=True,
                              dropout=config.dropout if config.predictor_layers > 1 else 0.0)
        elif self.context_size > 1:
            self.conv = nn.Conv1d(dim, dim, self.context_size, groups=dim, bias=False)
        self.dim = dim
        self.layers = config.predictor_layers

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, U) int64 (padding anything) -> (B, U + 1, H)."""
        start = tokens.new_zeros(tokens.size(0), 1)  # the blank id starts every sentence
        history = torch.cat([start, tokens], dim=1)
        if self.kind == "stateless":
            history = F.pad(history, (self.context_size - 1, 0))
        return self._run(history, None)[0]

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> Any:
        """The state before any token: zero RNN state, or a history of blanks (stateless)."""
        if self.kind == "stateless":
            return torch.zeros(batch, self.context_size - 1, dtype=torch.long, device=device)
        zeros = torch.zeros(self.layers, batch, self.dim, device=device)
        return (zeros, zeros.clone()) if self.kind == "lstm" else zeros

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """tokens (N,) int64 (the blank at the start) -> output (N, H) and the new state."""
        if self.kind == "stateless":
            history = torch.cat([state, tokens[:, None]], dim=1)
            out, _ = self._run(history, None)
            return out[:, -1], history[:, 1:]
        out, state = self._run(tokens[:, None], state)
        return out[:, -1], state

    def _run(self, history: Tensor, state: Any) -> tuple[Tensor, Any]:
        x = self.dropout(self.embedding(history))
        if self.kind == "stateless":
            if self.conv is not None:
                x = self.conv(x.transpose(1, 2)).transpose(1, 2)
            return torch.relu(x), None
        assert self.rnn is not None
        out, state = self.rnn(x, state)
        return self.dropout(out), state


class Joint(nn.Module):
    """logits = out(tanh(encoder frame + predictor output)), both already projected to J.

    forward(encoder_out (..., J), predictor_out (..., J)) -> logits (..., V) (broadcasting).
    """

    def __init__(self, encoder_dim: int, predictor_dim: int, joint_dim: int,
                 vocab_size: int) -> None:
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joint_dim)
        self.predictor_proj = nn.Linear(predictor_dim, joint_dim)
        self.out = nn.Linear(joint_dim, vocab_size)

    def forward(self, encoder_out: Tensor, predictor_out: Tensor) -> Tensor:
        return self.out(torch.tanh(encoder_out + predictor_out))  # type: ignore[no-any-return]


class Transducer(nn.Module):
    """RNN-T (or hybrid RNN-T + CTC) acoustic model; see the module docstring.

    forward(features (B, T, F), lengths (B,)) -> (encoder_out (B, T', D), out_lengths (B,));
    with `targets` (B, U) and `target_lengths` (B,): the training loss of each utterance (B,),
    each term divided by the utterance's target length (as harken's CTC training does).
    """

    is_transducer = True
    tap: _Tap

    def __init__(self, config: TransducerConfig, input_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        self.vocab_size = vocab_size
        self.blank_id = 0
        self.encoder = build_model(config.encoder, config.encoder_config(), input_dim, vocab_size)
        tap, encoder_dim = _attach_tap(self.encoder, keep_ctc=config.head == "hybrid")
        object.__setattr__(self, "tap", tap)  # a submodule of the encoder, not registered twice
        self.encoder_dim = encoder_dim
        self.subsampling: int = self.encoder.subsampling  # type: ignore[assignment]
        self.predictor = Predictor(config, vocab_size)
        self.joint = Joint(encoder_dim, config.predictor_dim, config.joint_dim, vocab_size)

    @property
    def has_ctc(self) -> bool:
        return self.config.head == "hybrid"

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.encoder.output_lengths(lengths)  # type: ignore[operator,no-any-return]

    def encode(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> encoder_out (B, T', D), CTC log-probs (B, T', V) (or the encoder's unused output
        for RNN-T-only models), out_lengths (B,)."""
        log_probs, out_lengths = self.encoder(features, lengths)
        hidden = self.tap.take()
        assert hidden is not None
        return hidden, log_probs, out_lengths

    def forward(self, features: Tensor, lengths: Tensor, targets: Tensor | None = None,
                target_lengths: Tensor | None = None) -> Any:
        encoder_out, ctc_log_probs, out_lengths = self.encode(features, lengths)
        if targets is None:
            return encoder_out, out_lengths
        assert target_lengths is not None
        return self.loss(encoder_out, ctc_log_probs, out_lengths, targets, target_lengths)

    def loss(self, encoder_out: Tensor, ctc_log_probs: Tensor, out_lengths: Tensor,
             targets: Tensor, target_lengths: Tensor) -> Tensor:
        """Per-utterance loss (B,): RNN-T (and the weighted CTC of hybrid models), each
        divided by the target length."""
        labels = int(target_lengths.max()) if targets.numel() else 0
        targets = targets[:, :labels]
        predictor_out = self.joint.predictor_proj(self.predictor(targets))
        frames = int(out_lengths.max())
        encoder_out = self.joint.encoder_proj(encoder_out[:, :frames])
        rnnt = chunked_rnnt_loss(self.joint, encoder_out, predictor_out, targets,
                                 out_lengths, target_lengths, self.blank_id,
                                 self.config.loss_chunk)
        norm = target_lengths.clamp(min=1).to(torch.float32)
        loss = rnnt.float() / norm
        if self.has_ctc and self.config.ctc_weight > 0:
            ctc = F.ctc_loss(ctc_log_probs.float().transpose(0, 1), targets, out_lengths,
                             target_lengths, blank=self.blank_id, reduction="none",
                             zero_infinity=True)
            loss = (1 - self.config.ctc_weight) * loss + self.config.ctc_weight * ctc / norm
        return loss

    def ctc_log_probs(self, encoder_out: Tensor) -> Tensor:
        """encoder_out (B, T', D) -> CTC log_probs (B, T', V) float32 (hybrid models only)."""
        if not self.has_ctc:
            raise ValueError("this transducer has no CTC head (build it with head='hybrid')")
        x = encoder_out.transpose(1, 2) if self.tap.channels_first else encoder_out
        return F.log_softmax(self.tap.inner(x).float(), dim=-1)

    # -- streaming ------------------------------------------------------------------------
    @property
    def streamable(self) -> bool:
        return bool(getattr(self.encoder, "streamable", False))

    def initial_state(self) -> Any:
        return self.encoder.initial_state()  # type: ignore[operator]

    @torch.no_grad()
    def stream_step(self, features: Tensor, state: Any,
                    final: bool = False) -> tuple[Tensor, Any]:
        """The encoder's `stream_step`: features (B, T, F) -> encoder_out (B, T_out, D) of the
        frames that became computable, and the new encoder state."""
        self.tap.take()
        _, state = self.encoder.stream_step(features, state, final)  # type: ignore[operator]
        hidden = self.tap.take()
        if hidden is None:  # no complete chunk yet
            return features.new_zeros(features.size(0), 0, self.encoder_dim), state
        return hidden, state


def parameter_summary(network: Transducer) -> dict[str, int]:
    """Parameter counts of the encoder, predictor and joint networks."""
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {"encoder": count(network.encoder), "predictor": count(network.predictor),
            "joint": count(network.joint)}

