"""Speaker embeddings and diarization: exact clustering, a tiny x-vector trained in seconds, the
bundled encoder against its reference features, a generated two-voice conversation diarized
turn by turn, speaker labels in every output format, the server, and clear usage errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harken.audio import SAMPLE_RATE, load_audio
from harken.decoding import Segment, Transcript, Word
from harken.diarization.diarize import (
    Diarization,
    DiarizeOptions,
    OnlineDiarizer,
    SpeakerTurn,
    assign_speakers,
    cluster_embeddings,
    diarize,
)
from harken.errors import ConfigError, ModelError
from harken.training.speakers import (
    SpeakerTrainOptions,
    equal_error_rate,
    train_speaker_encoder,
)
from harken.diarization.speakers import (
    MelPower,
    convert_resemblyzer,
    load_speaker_encoder,
    xvector_config,
)
from harken.transcribe import format_transcript

pytest.importorskip("scipy")

# One conversation, two flite voices (female slt, male rms), 0.8 s between turns.
TURNS = [("slt", "the weather is lovely today and the sun is shining over the hills"),
         ("rms", "yes indeed I was thinking of going for a long walk by the river"),
         ("slt", "that sounds like a wonderful idea may I come along with you"),
         ("rms", "of course we could bring some sandwiches and a flask of tea"),
         ("slt", "perfect I will meet you at the station at ten")]
PAUSE = 0.8


def flite(text: str, voice: str, path: Path) -> np.ndarray:
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True,
                   capture_output=True)
    return load_audio(path)


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[np.ndarray, list[tuple[float, float, str]], Path]:
    """(audio, true turns (start, end, voice), wav path)."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (make system-deps installs it)")
    import soundfile as sf

    folder = tmp_path_factory.mktemp("conversation")
    pieces, truth, position = [], [], 0.0
    for i, (voice, text) in enumerate(TURNS):
        wave = flite(text, voice, folder / f"turn{i}.wav")
        pieces += [wave, np.zeros(int(PAUSE * SAMPLE_RATE), np.float32)]
        truth.append((position, position + len(wave) / SAMPLE_RATE, voice))
        position += len(wave) / SAMPLE_RATE + PAUSE
    audio = np.concatenate(pieces[:-1])
    sf.write(folder / "talk.wav", audio, SAMPLE_RATE)
    return audio, truth, folder / "talk.wav"


def blobs(centres: int, per: int, dim: int = 16, noise: float = 0.05, seed: int = 0
          ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim))
    labels = rng.permutation(np.repeat(np.arange(centres), per))
    return means[labels] + noise * rng.standard_normal((len(labels), dim)), labels


def first_appearance(labels: np.ndarray) -> list[int]:
    order: dict[int, int] = {}
    return [order.setdefault(int(x), len(order)) for x in labels]


# --- clustering ----------------------------------------------------------------------------------

def test_clustering_is_exact_on_separated_embeddings() -> None:
    emb, truth = blobs(4, 15)
    expected = first_appearance(truth)
    assert cluster_embeddings(emb, 4).tolist() == expected  # count given
    assert cluster_embeddings(emb).tolist() == expected  # count estimated
    assert cluster_embeddings(emb, max_speakers=2).max() == 1  # at most 2
    assert cluster_embeddings(emb[:1]).tolist() == [0]
    assert cluster_embeddings(np.zeros((0, 16))).tolist() == []
    same, _ = blobs(1, 20, seed=3)
    assert set(cluster_embeddings(same).tolist()) == {0}
    assert cluster_embeddings(same, min_speakers=2).max() == 1


def test_equal_error_rate() -> None:
    emb, truth = blobs(3, 10)
    assert equal_error_rate(emb, truth.tolist())[0] == 0.0
    rng = np.random.default_rng(0)
    eer, _ = equal_error_rate(rng.standard_normal((200, 8)), (np.arange(200) % 4).tolist())
    assert 0.4 < eer < 0.6  # chance
    with pytest.raises(ValueError, match="at least two speakers"):
        equal_error_rate(emb, [0] * len(emb))


# --- encoders -------------------------------------------------------------------------------------

def test_mel_features_match_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    x = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    ref = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    ours = MelPower()(torch.from_numpy(x)[None])[0].numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.max())


def test_bundled_encoder_loads_checked_and_rejects_bad_folders(tmp_path: Path) -> None:
    encoder = load_speaker_encoder()
    assert encoder.config.architecture == "ge2e" and encoder.config.embedding_dim == 256
    emb = encoder.embed(np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1)
    assert emb.shape == (256,) and abs(np.linalg.norm(emb) - 1) < 1e-5
    with pytest.raises(ModelError, match="not a speaker encoder"):
        load_speaker_encoder(tmp_path)
    folder = encoder.save(tmp_path / "copy")
    (folder / "speaker.json").write_text(json.dumps({"architecture": "xvector"}))
    with pytest.raises(ModelError, match="do not fit a xvector"):
        load_speaker_encoder(folder)
    with pytest.raises(ValueError, match="shorter than"):
        encoder.embed_windows(np.zeros(8000, np.float32), [(0, 100)])


class _RunsCode:
    """Unpickling this runs a command: what a weights-only load must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def test_resemblyzer_checkpoints_convert_without_running_code(tmp_path: Path) -> None:
    bundled = load_speaker_encoder()
    weights = dict(bundled.network.state_dict())
    torch.save({"model_state": {**weights, "similarity_weight": torch.tensor([10.0])},
                "step": 1, "optimizer_state": {"state": {}}}, tmp_path / "pretrained.pt")
    converted = load_speaker_encoder(convert_resemblyzer(tmp_path / "pretrained.pt",
                                                         tmp_path / "ge2e"))
    x = np.random.default_rng(1).standard_normal(20000).astype(np.float32) * 0.1
    np.testing.assert_array_equal(converted.embed(x), bundled.embed(x))
    marker = tmp_path / "ran"
    torch.save({"model_state": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="not a weights-only torch checkpoint"):
        convert_resemblyzer(tmp_path / "evil.pt", tmp_path / "evil")
    assert not marker.exists()


def test_tiny_xvector_trained_in_seconds_separates_two_voices(tmp_path: Path) -> None:
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (make system-deps installs it)")
    featurize = MelPower()
    texts = ["one two three four five", "the quick brown fox jumps", "please call me later",
             "a bird in the hand", "seven eight nine ten", "good morning to you all"]
    mels, labels, waves = [], [], []
    for s, voice in enumerate(("slt", "rms")):
        for i, text in enumerate(texts):
            wave = flite(text, voice, tmp_path / f"{voice}{i}.wav")
            waves.append((wave, s, i))
            if i < 4:  # the last two sentences of each voice are held out
                mels.append(featurize(torch.from_numpy(wave)[None])[0].numpy())
                labels.append(s)
    config = xvector_config("tiny")
    encoder = train_speaker_encoder(config, mels, labels, SpeakerTrainOptions(
        steps=60, batch_size=16, learning_rate=5e-3, noise_probability=0.0))
    held_out = [(encoder.embed(w), s) for w, s, i in waves if i >= 4]
    eer, _ = equal_error_rate(np.stack([e for e, _ in held_out]), [s for _, s in held_out])
    assert eer == 0.0
    saved = load_speaker_encoder(encoder.save(tmp_path / "xv"))
    np.testing.assert_allclose(saved.embed(waves[0][0]), encoder.embed(waves[0][0]), atol=1e-6)


# --- diarization ----------------------------------------------------------------------------------

def test_two_voice_conversation_gets_the_right_turns(conversation) -> None:
    audio, truth, _ = conversation
    for options in (DiarizeOptions(), DiarizeOptions(speakers=2)):
        result = diarize(audio, options)
        assert len(result.turns) == len(truth)
        names = {}
        for turn, (start, end, voice) in zip(result.turns, truth):
            assert names.setdefault(voice, turn.speaker) == turn.speaker
            assert abs(turn.start - start) < 0.3 and abs(turn.end - end) < 0.3
        assert result.speakers == ["S1", "S2"]


def test_long_audio_in_chunks_gives_the_same_speakers(conversation) -> None:
    audio, _, _ = conversation
    whole = diarize(audio)
    chunked = diarize(audio, chunk_seconds=10.0)
    assert [t.speaker for t in chunked.turns] == [t.speaker for t in whole.turns]


def test_online_diarizer_keeps_labels_across_a_stream(conversation) -> None:
    audio, truth, _ = conversation
    online = OnlineDiarizer()
    labels = [online.label(audio[round(s * SAMPLE_RATE): round(e * SAMPLE_RATE)])
              for s, e, _ in truth]
    assert labels == ["S1", "S2", "S1", "S2", "S1"]
    assert online.label(np.zeros(100, np.float32)) is None


def toy_transcript() -> Transcript:
    words = [Word("hello", 0.1, 0.5, 0.9), Word("there", 0.6, 1.0, 0.9),
             Word("hi", 1.6, 1.9, 0.8), Word("you", 2.0, 2.3, 0.8), Word("again", 3.1, 3.5, 0.7)]
    return Transcript("hello there hi you again", words,
                      [Segment("hello there hi you", 0.0, 2.4, words[:4]),
                       Segment("again", 3.0, 3.6, words[4:])], duration=4.0)


def toy_diarization() -> Diarization:
    return Diarization([SpeakerTurn(0.0, 1.2, "S1"), SpeakerTurn(1.3, 2.5, "S2"),
                        SpeakerTurn(3.0, 3.7, "S1")], 4.0)


def test_words_and_segments_get_speakers_and_every_format_shows_them() -> None:
    transcript = assign_speakers(toy_transcript(), toy_diarization())
    assert [w.speaker for w in transcript.words] == ["S1", "S1", "S2", "S2", "S1"]
    assert [(s.text, s.speaker, s.start, s.end) for s in transcript.segments] == [
        ("hello there", "S1", 0.0, 1.0), ("hi you", "S2", 1.6, 2.4), ("again", "S1", 3.0, 3.6)]
    assert format_transcript(transcript, "txt") == "[S1] hello there\n[S2] hi you\n[S1] again\n"
    srt = format_transcript(transcript, "srt")
    assert "00:00:01,600 --> 00:00:02,300\n[S2] hi you\n" in srt
    vtt = format_transcript(transcript, "vtt")
    assert "00:00:00.100 --> 00:00:01.000\n<v S1>hello there\n" in vtt
    assert format_transcript(transcript, "rttm", "talk one") == (
        "SPEAKER talk_one 1 0.000 1.200 <NA> <NA> S1 <NA> <NA>\n"
        "SPEAKER talk_one 1 1.300 1.200 <NA> <NA> S2 <NA> <NA>\n"
        "SPEAKER talk_one 1 3.000 0.700 <NA> <NA> S1 <NA> <NA>\n")
    transcript.speaker_turns = []  # turns made of the words when the diarization is gone
    assert format_transcript(transcript, "rttm", "t").splitlines()[1] == (
        "SPEAKER t 1 1.600 0.700 <NA> <NA> S2 <NA> <NA>")
    transcript = assign_speakers(toy_transcript(), toy_diarization())
    data = json.loads(format_transcript(transcript, "json"))
    assert [w["speaker"] for w in data["words"]] == ["S1", "S1", "S2", "S2", "S1"]
    assert [s["speaker"] for s in data["segments"]] == ["S1", "S2", "S1"]
    assert data["speaker_turns"][1] == {"start": 1.3, "end": 2.5, "speaker": "S2"}
    plain = json.loads(format_transcript(toy_transcript(), "json"))  # not diarized: no field
    assert "speaker" not in plain["words"][0] and "speaker" not in plain["segments"][0]
    assert "speaker_turns" not in plain
    with pytest.raises(ValueError, match="rttm format needs speakers"):
        format_transcript(toy_transcript(), "rttm")


def test_bad_speaker_counts_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="speakers must be a whole number >= 1, got 0"):
        DiarizeOptions(speakers=0)
    with pytest.raises(ConfigError, match=r"min-speakers \(3\) is more than max-speakers \(2\)"):
        DiarizeOptions(min_speakers=3, max_speakers=2)
    with pytest.raises(ConfigError, match="threshold"):
        DiarizeOptions(threshold=0)


def test_cli_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harken.cli import main

    audio = tmp_path / "a.wav"
    with pytest.raises(SystemExit):
        main(["transcribe", str(audio), "--diarize", "--speakers", "0"])
    assert "--speakers: expected a whole number of speakers >= 1, got '0'" in capsys.readouterr().err
    main(["transcribe", str(audio), "--speakers", "2"])
    assert "--speakers need --diarize" in capsys.readouterr().err
    main(["transcribe", str(audio), "--format", "rttm"])
    assert "--format rttm needs --diarize" in capsys.readouterr().err
    main(["transcribe", str(audio), "--diarize", "--min-speakers", "3", "--max-speakers", "2"])
    assert "min-speakers (3) is more than max-speakers (2)" in capsys.readouterr().err


# --- the server -----------------------------------------------------------------------------------

def tiny_model():
    """A random streaming DeepSpeech2 whose head rarely says blank: speech gives words."""
    from harken.model import new_model

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    features = {"normalize": "global", "n_mels": 80,
                "global_mean": tuple(rng.uniform(-12, -6, 80).tolist()),
                "global_std": tuple(rng.uniform(1.5, 3.0, 80).tolist())}
    model = new_model("deepspeech2", "tiny", features=features, bidirectional=False,
                      lookahead=2)
    with torch.no_grad():
        model.network.head.weight.mul_(4.0)
        model.network.head.bias[0] -= 2.0
        model.network.head.bias[model.tokenizer.tokens.index(" ")] += 0.4  # many short words
    return model.eval()


def test_server_verbose_json_jobs_and_stream_label_speakers(conversation) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")  # the test client
    from starlette.testclient import TestClient

    from harken.serving.app import ServerConfig, create_app

    audio, truth, path = conversation
    model = tiny_model()
    expected = assign_speakers(model.transcribe(audio), diarize(audio))
    assert {w.speaker for w in expected.words} == {"S1", "S2"}

    with TestClient(create_app(model, ServerConfig(model_name="tiny", db=":memory:",
                                                   vad="energy"))) as client:
        def post(url: str, **fields: str):
            return client.post(url, files={"file": ("talk.wav", path.read_bytes())},
                               data=fields)

        reply = post("/v1/audio/transcriptions", response_format="verbose_json",
                     diarize="true", **{"timestamp_granularities[]": "word"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["speakers"] == ["S1", "S2"]
        assert [w.get("speaker") for w in body["words"]] == [w.speaker for w in expected.words]
        text = post("/v1/audio/transcriptions", response_format="text", diarize="true").text
        assert text == format_transcript(expected, "txt")
        bad = post("/v1/audio/transcriptions", diarize="true", speakers="0")
        assert bad.status_code == 400 and "speakers must be a whole number >= 1" in bad.text
        bad = post("/v1/audio/transcriptions", speakers="2")
        assert bad.status_code == 400 and "speakers needs diarize=true" in bad.text
        job = post("/v1/jobs", diarize="true", speakers="2").json()
        for _ in range(600):
            state = client.get(f"/v1/jobs/{job['id']}").json()
            if state["status"] in ("done", "failed"):
                break
            time.sleep(0.05)
        assert state["status"] == "done", state
        given = assign_speakers(model.transcribe(audio), diarize(audio, speakers=2))
        assert [w["speaker"] for w in state["result"]["words"]] == [w.speaker for w in given.words]

        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        with client.websocket_connect("/v1/stream") as ws:
            ws.send_json({"diarize": True, "partials": False, "silence_ms": 500})
            assert ws.receive_json()["type"] == "ready"
            for i in range(0, len(pcm), 16000):
                ws.send_bytes(pcm[i: i + 16000])
            ws.send_json({"type": "end"})
            finals = []
            while (message := ws.receive_json())["type"] != "done":
                finals.append(message)
    labelled = [m for m in finals if m["type"] == "final" and m["text"]]
    assert len(labelled) >= 4
    names: dict[str, str] = {}
    for message in labelled:  # each final lies in one turn; a voice keeps its label
        middle = (message["start"] + message["end"]) / 2
        voice = min(truth, key=lambda t: abs((t[0] + t[1]) / 2 - middle))[2]
        assert names.setdefault(voice, message["speaker"]) == message["speaker"]
        assert {w["speaker"] for w in message["words"]} == {message["speaker"]}
    assert sorted(names.values()) == ["S1", "S2"]


def test_cli_diarized_transcripts_and_resumable_jobs(conversation, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from harken.cli import main

    _, truth, path = conversation
    assert main(["transcribe", str(path), "--diarize", "--speakers", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line[:4] for line in lines] == ["[S1]", "[S2]", "[S1]", "[S2]", "[S1]"]
    assert all(len(line.split()) > 3 for line in lines)  # each turn's words, one line
    out = tmp_path / "out"
    assert main(["transcribe", str(path), "--diarize", "-o", str(out), "-f", "all,rttm",
                 "--no-progress"]) == 0
    rttm = (out / "talk.rttm").read_text().splitlines()
    assert [line.split()[7] for line in rttm] == ["S1", "S2", "S1", "S2", "S1"]
    for line, (start, end, _) in zip(rttm, truth):
        fields = line.split()
        assert fields[:3] == ["SPEAKER", "talk", "1"]
        assert abs(float(fields[3]) - start) < 0.3
        assert abs(float(fields[3]) + float(fields[4]) - end) < 0.3
    assert (out / "talk.txt").read_text().startswith("[S1] ")
    assert "\n[S2] " in (out / "talk.srt").read_text()
    assert "<v S2>" in (out / "talk.vtt").read_text()
    words = json.loads((out / "talk.json").read_text())["words"]
    assert {w["speaker"] for w in words} == {"S1", "S2"}


def test_lazy_segments_with_speakers_equal_the_whole_transcript(conversation) -> None:
    from harken.diarization.diarize import diarize_segments

    audio, _, _ = conversation
    model = tiny_model()
    whole = assign_speakers(model.transcribe(audio), diarize(audio))
    lazy = list(diarize_segments(model, audio, batch_seconds=5.0))
    assert [(s.text, s.speaker) for s in lazy] == [(s.text, s.speaker) for s in whole.segments]
    assert [w.speaker for s in lazy for w in s.words] == [w.speaker for w in whole.words]
