"""Acoustic models: the forward contract, padding, streaming context, configs, a tiny overfit."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harken.models.citrinet import CitrinetConfig
from harken.models.conformer import Conformer, ConformerConfig
from harken.models.deepspeech2 import DeepSpeech2Config
from harken.errors import ConfigError
from harken.models.registry import (
    ARCHITECTURES,
    build_model,
    config_from_dict,
    count_parameters,
    model_config,
)

N_FEATURES = 40
VOCAB = 12

# name -> (architecture, overrides of the "tiny" size)
VARIANTS = {
    "deepspeech2": ("deepspeech2", {}),
    "deepspeech2-streaming": ("deepspeech2", {"bidirectional": False, "lookahead": 2}),
    "conformer": ("conformer", {}),
    "conformer-chunked": ("conformer", {"chunk_size": 4, "causal_conv": True}),
    "conformer-layernorm": ("conformer", {"conv_norm": "layer_norm", "att_context": (6, 2)}),
    "citrinet": ("citrinet", {}),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(variant: str, **extra: object) -> nn.Module:
    architecture, overrides = VARIANTS[variant]
    torch.manual_seed(0)
    config = model_config(architecture, "tiny", **{**overrides, **extra})
    return build_model(architecture, config, N_FEATURES, VOCAB)


def random_batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Features whose padding is loud garbage, so any leak shows."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), N_FEATURES, generator=g)
    for i, n in enumerate(lengths):
        features[i, n:] = 100.0 * torch.randn(max(lengths) - n, N_FEATURES, generator=g)
    return features, torch.tensor(lengths)


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shape_and_lengths(variant: str) -> None:
    model = tiny(variant).eval()
    s = model.subsampling
    lengths = torch.arange(0, 70)
    expected = torch.tensor([math.ceil(n / s) for n in range(70)])
    assert torch.equal(model.output_lengths(lengths), expected)
    assert model.output_lengths(lengths).dtype == torch.int64
    with torch.no_grad():
        for total in (1, s - 1, s, s + 1, 3 * s + 1, 61):
            if total < 1:
                continue
            log_probs, out_lengths = model(*random_batch([total]))
            assert log_probs.shape == (1, math.ceil(total / s), VOCAB)
            assert out_lengths.tolist() == [math.ceil(total / s)]
        log_probs, out_lengths = model(*random_batch([61, 40, 9, 1]))
    assert log_probs.dtype == torch.float32
    assert log_probs.shape == (4, math.ceil(61 / s), VOCAB)
    assert out_lengths.tolist() == [math.ceil(n / s) for n in (61, 40, 9, 1)]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(4, log_probs.size(1)), atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_does_not_leak(variant: str) -> None:
    model = tiny(variant).eval()
    lengths = [83, 70, 46, 5]
    with torch.no_grad():
        batched, out_lengths = model(*random_batch(lengths))
        for i, n in enumerate(lengths):
            features, _ = random_batch(lengths)
            alone, _ = model(features[i : i + 1, :n], torch.tensor([n]))
            valid = batched[i, : out_lengths[i]]
            assert valid.shape == alone[0].shape
            assert (valid - alone[0]).abs().max() < 1e-5, f"sequence {i} (length {n}) differs"


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter(variant: str) -> None:
    model = tiny(variant).train()
    features, lengths = random_batch([80, 64, 48])
    log_probs, out_lengths = model(features, lengths)
    targets = torch.randint(1, VOCAB, (3, 4), generator=torch.Generator().manual_seed(0))
    loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, torch.tensor([4, 3, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def _changed_outputs(model: nn.Module, total: int, first_perturbed: int) -> torch.Tensor:
    """Per output frame, the largest change when input frames >= first_perturbed change."""
    features, lengths = random_batch([total])
    perturbed = features.clone()
    perturbed[:, first_perturbed:] += 3.0 * torch.randn_like(perturbed[:, first_perturbed:])
    with torch.no_grad():
        before, _ = model(features, lengths)
        after, _ = model(perturbed, lengths)
    return (before - after).abs().amax(dim=-1)[0]


def test_deepspeech2_lookahead_is_the_only_future_context() -> None:
    model = tiny("deepspeech2-streaming").eval()
    s, tau = model.subsampling, model.config.lookahead
    assert model.lookahead_frames == tau * s
    # Output t depends on input frames < (t + 1 + tau) * s.
    for t in (0, 5, 17):
        boundary = (t + 1 + tau) * s
        change = _changed_outputs(model, 90, boundary)
        assert change[: t + 1].max() < 1e-6, f"output <= {t} sees input frame >= {boundary}"
        assert _changed_outputs(model, 90, boundary - 1)[t] > 1e-4, (
            "look-ahead shorter than documented"
        )


def test_chunked_causal_conformer_depends_only_on_its_chunk() -> None:
    model = tiny("conformer-chunked").eval()
    chunk_frames = model.config.chunk_size * model.subsampling  # input frames per chunk
    for chunk in (1, 2, 4):
        end = chunk * chunk_frames  # first input frame after `chunk` chunks
        outputs_before = chunk * model.config.chunk_size
        change = _changed_outputs(model, 100, end)
        assert change[:outputs_before].max() < 1e-6, f"chunks < {chunk} see later input"
        # The last frame of a chunk reaches its first output frame (full attention in a chunk).
        first_of_chunk = outputs_before - model.config.chunk_size
        assert _changed_outputs(model, 100, end - 1)[first_of_chunk] > 1e-4


def test_causal_conformer_with_no_right_context() -> None:
    model = tiny("conformer", att_context=(-1, 0), causal_conv=True).eval()
    s = model.subsampling
    for t in (0, 6, 11):
        change = _changed_outputs(model, 64, (t + 1) * s)
        assert change[: t + 1].max() < 1e-6
    # Control: the full-context model does see the future, so the checks above can fail.
    full = tiny("conformer").eval()
    assert _changed_outputs(full, 64, 40)[:3].max() > 1e-4


def test_conformer_context_masks() -> None:
    def blocked(**overrides: object) -> list[list[int]]:
        model = tiny("conformer", **overrides)
        assert isinstance(model, Conformer)
        mask = model.encoder.context_mask(6, torch.device("cpu"))
        return mask.int().tolist()

    assert blocked(chunk_size=2, left_chunks=1) == [
        [0, 0, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1],
        [0, 0, 0, 0, 1, 1],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
    ]
    assert blocked(att_context=(1, 0)) == [
        [0, 1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1],
        [1, 0, 0, 1, 1, 1],
        [1, 1, 0, 0, 1, 1],
        [1, 1, 1, 0, 0, 1],
        [1, 1, 1, 1, 0, 0],
    ]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("size", ["tiny", "small", "medium"])
def test_config_round_trip(architecture: str, size: str) -> None:
    config = model_config(architecture, size)
    stored = json.loads(json.dumps(config.to_dict()))
    assert type(config).from_dict(stored) == config
    assert config_from_dict(architecture, stored) == config


def test_overrides_and_values_are_checked() -> None:
    assert model_config("deepspeech2", "tiny", time_stride=4).time_stride == 4
    assert model_config("conformer", "small", dropout=0).dropout == 0.0
    with pytest.raises(ConfigError, match=r"n_heads = 3.*divisor of d_model \(32\)"):
        model_config("conformer", "tiny", n_heads=3)
    with pytest.raises(ConfigError, match="lookahead.*bidirectional=False"):
        DeepSpeech2Config(lookahead=4)
    with pytest.raises(ConfigError, match="time_stride = 3"):
        DeepSpeech2Config(time_stride=3)
    with pytest.raises(ConfigError, match="block_strides"):
        CitrinetConfig(block_strides=(2, 2))
    with pytest.raises(ConfigError, match=r"d_model = 'big' is not a valid int"):
        ConformerConfig.from_dict({"d_model": "big"})
    with pytest.raises(ConfigError, match="att_context"):
        config_from_dict("conformer", {"att_context": [1, 2, 3]})
    with pytest.raises(ConfigError, match="needs a ConformerConfig, got CitrinetConfig"):
        build_model("conformer", CitrinetConfig(), N_FEATURES, VOCAB)


@pytest.mark.parametrize(
    "config_class", [DeepSpeech2Config, ConformerConfig, CitrinetConfig], ids=lambda c: c.__name__
)
def test_unknown_keys_are_named_with_the_valid_ones(config_class: type) -> None:
    with pytest.raises(ConfigError) as error:
        config_class.from_dict({"dropout": 0.1, "hiden_size": 3})
    message = str(error.value)
    assert "hiden_size" in message and "dropout" in message and config_class.__name__ in message


def test_unknown_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown architecture 'wav2vec'.*'citrinet'"):
        model_config("wav2vec")
    with pytest.raises(ConfigError, match=r"unknown size 'huge'.*'tiny', 'small', 'medium'"):
        model_config("citrinet", "huge")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['layers'\].*'n_layers'"):
        model_config("conformer", "tiny", layers=3)
    with pytest.raises(ConfigError, match="unknown architecture"):
        build_model("lstm", {}, N_FEATURES, VOCAB)


# Expected parameter counts for 80 mel bins and 29 characters (blank + 28).
@pytest.mark.parametrize(
    ("architecture", "expected"),
    [
        pytest.param("deepspeech2", 3_832_573, id="deepspeech2-small-3.8M"),
        pytest.param("conformer", 6_304_253, id="conformer-small-6.3M"),
        pytest.param("citrinet", 9_621_293, id="citrinet-small-9.6M"),
    ],
)
def test_small_parameter_counts(architecture: str, expected: int) -> None:
    with torch.device("meta"):
        model = build_model(architecture, model_config(architecture, "small"), 80, 29)
    assert count_parameters(model) == expected
    assert 3_000_000 <= expected <= 10_000_000


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_tiny_sizes_are_tiny(architecture: str) -> None:
    with torch.device("meta"):
        model = build_model(architecture, model_config(architecture, "tiny"), 80, 29)
    assert count_parameters(model) < 100_000


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_tiny_model_overfits_one_batch(architecture: str) -> None:
    torch.manual_seed(0)
    model = build_model(
        architecture, model_config(architecture, "tiny", dropout=0.0), N_FEATURES, VOCAB
    ).train()
    features, lengths = random_batch([160, 150, 136, 120], seed=3)
    targets = torch.randint(1, VOCAB, (4, 6), generator=torch.Generator().manual_seed(4))
    target_lengths = torch.tensor([6, 6, 5, 4])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        log_probs, out_lengths = model(features, lengths)
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Converges to ~1-5% of the first loss; half is the bar for "it learns at all".
    assert losses[-1] < 0.5 * losses[0], f"CTC loss went from {losses[0]:.2f} to {losses[-1]:.2f}"
