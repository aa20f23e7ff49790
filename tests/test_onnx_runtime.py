"""harken.interop.onnx_runtime: exported models run with numpy features and ONNX Runtime, PyTorch never
imported, give the log-probabilities and transcripts of load_model(folder, backend="onnx")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from harken.decoding.options import DecodeOptions
from harken.errors import ConfigError, ModelError  # noqa: E402
from harken.interop.onnx_export import export_onnx  # noqa: E402
from harken.interop.import_hf import import_hf  # noqa: E402
from harken.interop.import_nemo import import_nemo  # noqa: E402
from harken.decoding.lm import build_lm  # noqa: E402
from harken.model import load_model  # noqa: E402
from harken.interop.onnx_runtime import OnnxModel, load_onnx_model  # noqa: E402
from test_export import random_model  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "import"
CLIP = ROOT / "examples" / "fox.wav"
TOLERANCE = 1e-4
# int8 graphs quantise activations with scales taken from each input's range, so feature
# differences of 1e-5 can move a value by one quantisation step.
INT8_TOLERANCE = 5e-2
CHUNK = 1234  # samples per streamed chunk
SENTENCES = ["the quick brown fox jumps over the lazy dog", "a dog ate the fish",
             "the fox sat on the mat", "we looked at the old dog"] * 3

# Run in a fresh interpreter where importing torch fails: everything it reports comes from
# numpy, ONNX Runtime and harken's own code.
CHILD = r"""
import importlib.abc, json, sys
import numpy as np

job = json.loads(sys.argv[1])
job_blocks_by_none = job["none_in_modules"]

class BlockTorch(importlib.abc.MetaPathFinder):
    attempts = []
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            self.attempts.append(name)
            raise ImportError(f"torch is blocked in this test ({name})")
        return None

sys.meta_path.insert(0, BlockTorch())
if job_blocks_by_none:
    sys.modules["torch"] = None  # the other way to make torch unimportable
from harken.decoding import DecodeOptions
from harken.interop.onnx_runtime import load_onnx_model

audios = [np.load(path) for path in job["audio"]]
report, arrays = {}, {}
for name, (folder, backend) in job["folders"].items():
    # threads=None: ONNX Runtime picks, which must not consult torch either
    model = load_onnx_model(folder, backend, threads=None if job_blocks_by_none else 1)
    for i, lp in enumerate(model.log_probs(audios)):
        arrays[f"{name}/{i}"] = lp
    entry = {"greedy": [t.text for t in model.transcribe_batch(audios, greedy=True)],
             "words": [[w.word, w.start, w.end] for w in model.transcribe(audios[0]).words],
             "beam": model.transcribe(audios[0], DecodeOptions(beam_width=8, lm=job["lm"])).text}
    if model.network.streamable:
        stream = model.stream(greedy=True)
        for start in range(0, len(audios[0]), job["chunk"]):
            stream.feed(audios[0][start: start + job["chunk"]])
        entry["stream"] = stream.finish().text
        entry["stream_exact"] = stream.exact
    report[name] = entry
np.savez(job["out"], **arrays)
report["torch_in_modules"] = sorted(m for m, module in sys.modules.items()
                                    if m.split(".")[0] == "torch" and module is not None)
report["blocked_attempts"] = BlockTorch.attempts
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Exports covering every feature kind and tokenizer: harken log-mels (per utterance and
    global normalisation, a streaming step graph, int8), NeMo log-mels with SentencePiece,
    waveform features with a Hugging Face vocabulary."""
    root = tmp_path_factory.mktemp("exports")
    streaming = random_model("deepspeech2", bidirectional=False, lookahead=3,
                             features={"normalize": "global", "global_mean": (-8.0,) * 80,
                                       "global_std": (2.5,) * 80})
    models = {
        "deepspeech2 streaming": (streaming, False),
        "conformer int8": (random_model("conformer"), True),
        "nemo citrinet sentencepiece": (
            import_nemo(FIXTURES / "nemo_citrinet_bpe" / "model.nemo"), False),
        "hf wav2vec2 vocab": (import_hf(FIXTURES / "hf_wav2vec2_stable"), False),
    }
    return {name: export_onnx(model, root / name.replace(" ", "-"), int8=int8)
            for name, (model, int8) in models.items()}


@pytest.fixture(scope="module")
def audios() -> list[np.ndarray]:
    speech, rate = sf.read(CLIP, dtype="float32")
    assert rate == 16000
    rng = np.random.default_rng(0)
    t = np.arange(21_000) / 16000
    tones = (0.3 * np.sin(2 * np.pi * 300 * t * (1 + t)) + 0.05 * rng.standard_normal(len(t)))
    return [speech, tones.astype(np.float32), speech[:5_000]]


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory) -> str:
    return str(build_lm(SENTENCES, 3, tmp_path_factory.mktemp("lm") / "words",
                        estimator="builtin").arpa)


@pytest.mark.parametrize("none_in_modules", [False, True], ids=["import-hook", "modules-none"])
def test_runs_without_torch_and_equals_the_onnx_backend(exports, audios, word_lm, tmp_path,
                                                        none_in_modules):
    paths = []
    for i, audio in enumerate(audios):
        paths.append(str(tmp_path / f"audio{i}.npy"))
        np.save(paths[-1], audio)
    runs = {name: (str(folder), "onnx-fp32") for name, folder in exports.items()}
    runs["conformer int8 (int8)"] = (str(exports["conformer int8"]), "onnx")
    job = {"folders": runs, "audio": paths,
           "lm": word_lm, "chunk": CHUNK, "out": str(tmp_path / "log_probs.npz"),
           "none_in_modules": none_in_modules}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["torch_in_modules"] == [] and report["blocked_attempts"] == []
    got = np.load(tmp_path / "log_probs.npz")
    lm_options = DecodeOptions(beam_width=8, lm=word_lm)
    int8 = load_model(exports["conformer int8"], backend="onnx")
    for i, expected in enumerate(int8.log_probs(audios)):
        difference = np.abs(got[f"conformer int8 (int8)/{i}"] - expected).max()
        assert difference < INT8_TOLERANCE, i
    for name, folder in exports.items():
        reference = load_model(folder, backend="onnx-fp32")
        entry = report[name]
        for i, expected in enumerate(reference.log_probs(audios)):
            assert got[f"{name}/{i}"].shape == expected.shape, (name, i)
            assert np.abs(got[f"{name}/{i}"] - expected).max() < TOLERANCE, (name, i)
        greedy = [t.text for t in reference.transcribe_batch(audios, greedy=True)]
        assert entry["greedy"] == greedy, name
        assert any(greedy), f"{name}: random weights should still emit some tokens"
        words = [[w.word, w.start, w.end] for w in reference.transcribe(audios[0]).words]
        assert entry["words"] == words, name
        assert entry["beam"] == reference.transcribe(audios[0], lm_options).text, name
        if name == "deepspeech2 streaming":
            stream = reference.stream(greedy=True)
            for start in range(0, len(audios[0]), CHUNK):
                stream.feed(audios[0][start: start + CHUNK])
            assert entry["stream_exact"] and entry["stream"] == stream.finish().text
            assert entry["stream"] == greedy[0]
        else:
            assert "stream" not in entry  # no step graph: nothing streamed step by step


def test_variants_errors_and_what_an_export_cannot_do(exports, tmp_path):
    folder = exports["conformer int8"]
    model = load_onnx_model(folder)
    assert isinstance(model, OnnxModel) and model.network.path.name == "model.int8.onnx"
    assert load_onnx_model(folder, "onnx-fp32").network.path.name == "model.onnx"
    assert repr(model).startswith("OnnxModel(conformer/tiny, model.int8.onnx")
    with pytest.raises(ConfigError, match="expected backend one of .*got 'torch'"):
        load_onnx_model(folder, backend="torch")
    with pytest.raises(ModelError, match="has no int8 model"):
        load_onnx_model(exports["deepspeech2 streaming"], backend="onnx-int8")
    with pytest.raises(ModelError, match="no PyTorch weights to save"):
        model.save(tmp_path / "copy")
    with pytest.raises(ConfigError, match="device 'cuda:3' is not available|loaded for"):
        model.to("cuda:3")
    plain = random_model("citrinet").save(tmp_path / "torch-model")
    with pytest.raises(ModelError, match="not an ONNX export"):
        load_onnx_model(plain)
    changed = tmp_path / "changed"
    changed.mkdir()
    for member in folder.iterdir():
        (changed / member.name).write_bytes(member.read_bytes())
    with open(changed / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match=r"model.onnx is corrupt or was changed"):
        load_onnx_model(changed)
