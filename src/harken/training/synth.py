"""Synthetic multi-voice English speech from the offline TTS engines installed on this machine.

`synthesize(text, out_dir, hours=... | count=...)` picks sentences from a text corpus for coverage
of words and letters (`select_sentences`), renders each with a random voice of a random engine at a
random speaking rate, pitch and level (`plan_jobs`), and writes 16 kHz FLAC or Opus files plus a
JSONL manifest that `harken.training.data.read_manifest` reads:

    {"audio": "audio/flite/000012-3fa2c1d0.flac", "text": "...", "duration": 3.42,
     "speaker": "flite:slt", "id": "000012-3fa2c1d0", "engine": "flite", "voice": "slt",
     "rate": 1.07, "pitch": 0.93}

Engines (each used when its program is on PATH): espeak-ng (its English voices, each with every
voice variant except the robotic-echo novelties; mbrola voices when mbrola is installed), flite
(its built-in voices and any `.flitevox` under `FLITEVOX_DIRS`), festival (its English voices) and
pico2wave. `discover_voices()` says what was found.

Everything random comes from (seed, utterance index), so a run is reproducible and a longer run
with the same seed extends a shorter one. A file's name carries a digest of everything that
determines it, so an interrupted run resumes by keeping the files already rendered, and a file
rendered with other settings is never reused by mistake.
"""

from __future__ import annotations

import functools
import heapq
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf

from harken.errors import ConfigError
from harken.training.synth_neural import NEURAL_RATE_RANGE, KokoroEngine, PiperEngine, parse_blend
from harken.training.voices import Job, SynthesisError, Voice
from harken.audio import resample, SAMPLE_RATE
from harken.text import normalize_text, read_texts

logger = logging.getLogger(__name__)

# Engines used by default; the neural ones (harken.training.synth_neural) only when asked for.
DEFAULT_ENGINES = ("espeak-ng", "flite", "festival", "pico2wave")
NEURAL_ENGINES = ("kokoro", "piper")
ENGINES = DEFAULT_ENGINES + NEURAL_ENGINES
AUDIO_FORMATS = {"flac": ("FLAC", "PCM_16"), "opus": ("OGG", "OPUS")}

# Natural ranges of the per-utterance randomisation. Rate is a speaking-rate factor (1 = the
# engine's default, 1.2 = 20% faster), pitch a factor on the voice's mean F0 (log-uniform,
# about +-4 semitones), level the peak in dBFS.
RATE_RANGE = (0.85, 1.2)
PITCH_RANGE = (0.8, 1.25)
LEVEL_DB_RANGE = (-20.0, -1.0)
# Silence kept before and after the speech (the engines' own padding is trimmed first).
PAD_SECONDS_RANGE = (0.05, 0.4)
# Sentences this long (in words) are used; shorter or longer lines of the corpus are skipped.
MIN_WORDS, MAX_WORDS = 3, 30
# Corpora larger than this are sampled down (seeded) before the coverage selection.
POOL_SIZE = 200_000
# A sentence sharing more than this share of its word trigrams with sentences already chosen
# counts as a near-duplicate and is skipped.
NEAR_DUPLICATE_OVERLAP = 0.5
# Rendered audio outside these bounds (seconds per word) is a failed synthesis, not speech.
SECONDS_PER_WORD_RANGE = (0.08, 2.0)
# Speech is where the 10 ms frame energy is within this many dB of the loudest frame (weak final
# fricatives sit 30-40 dB below the vowels), plus a margin of this many frames on each side.
TRIM_DB = 50.0
TRIM_MARGIN_FRAMES = 3
# Each engine call gets this long before it counts as failed.
ENGINE_TIMEOUT_S = 120

# espeak-ng's -p (0-99, default 50) moves F0 by about a factor 2 per 70 steps (measured: p 20 ->
# 79 Hz, 50 -> 103 Hz, 80 -> 139 Hz with en-us).
_ESPEAK_PITCH_STEPS_PER_OCTAVE = 70.0
_ESPEAK_DEFAULT_WPM = 175
# Mean F0 of flite's voices at their defaults (Hz, measured with flite 2.2); flite takes an
# absolute target, so the pitch factor multiplies these. rms ignores the setting.
_FLITE_F0 = {"slt": 170.0, "awb": 130.0, "kal": 95.0, "kal16": 95.0, "rms": 103.0}
# flite voices that only say the time of day.
_FLITE_LIMITED = frozenset({"awb_time"})
FLITEVOX_DIRS = (Path("/usr/share/flite"), Path("/usr/local/share/flite"))
_PICO_VOICES = ("en-US", "en-GB")
_FRAME_S = 0.01






@dataclass
class SynthReport:
    """What `synthesize` did: the manifest it wrote and the figures of the run."""

    manifest: Path
    utterances: int = 0
    seconds: float = 0.0
    rendered: int = 0
    reused: int = 0
    failures: list[str] = field(default_factory=list)
    voices: dict[str, list[Voice]] = field(default_factory=dict)




# ----------------------------------------------------------------------------------------------
# Engines


def _run(cmd: Sequence[str], stdin: str | None = None) -> bytes:
    try:
        done = subprocess.run(
            list(cmd),
            input=None if stdin is None else stdin.encode(),
            capture_output=True,
            timeout=ENGINE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SynthesisError(f"{cmd[0]}: {exc}") from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise SynthesisError(f"{cmd[0]} exited with {done.returncode}: {' '.join(message[-2:])}")
    return done.stdout


def _read_wav(data: bytes | str | Path, what: str) -> tuple[np.ndarray, int]:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        audio, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise SynthesisError(f"{what}: the engine wrote no readable audio ({exc})") from exc
    return audio.mean(axis=1), int(rate)


class _Espeak:
    name = "espeak-ng"

    def available(self) -> bool:
        return shutil.which("espeak-ng") is not None

    def voices(self) -> list[Voice]:
        base: list[str] = []
        mbrola = shutil.which("mbrola") is not None
        for fields in _table(_run(["espeak-ng", "--voices=en"]).decode()):
            language, file = fields[1], fields[4]
            if file.startswith("mb/"):
                if mbrola and self._speaks(file):
                    base.append(file)
            elif language.startswith("en") and language not in base:
                base.append(language)
        variants = [
            fields[4].split("/", 1)[1]
            for fields in _table(_run(["espeak-ng", "--voices=variant"]).decode())
            if fields[4].startswith("!v/") and not _is_novelty_variant(fields[4])
        ]
        voices = []
        for name in base:
            voices.append(Voice(self.name, name))
            if not name.startswith("mb/"):  # mbrola voices ignore variants
                voices.extend(Voice(self.name, f"{name}+{v}") for v in sorted(set(variants)))
        return voices

    def _speaks(self, voice: str) -> bool:
        try:
            return (
                len(_read_wav(_run(["espeak-ng", "-v", voice, "--stdout", "test"]), voice)[0]) > 0
            )
        except SynthesisError:
            return False

    def render(self, job: Job, workdir: Path) -> tuple[np.ndarray, int]:
        wpm = round(_ESPEAK_DEFAULT_WPM * job.rate)
        pitch = round(50 + _ESPEAK_PITCH_STEPS_PER_OCTAVE * math.log2(job.pitch))
        cmd = [
            "espeak-ng",
            "-v",
            job.voice.name,
            "-s",
            str(wpm),
            "-p",
            str(min(max(pitch, 0), 99)),
            "--stdout",
            "--stdin",
        ]
        return _read_wav(_run(cmd, stdin=job.text), job.voice.speaker)


def _table(listing: str) -> Iterator[list[str]]:
    """Rows of `espeak-ng --voices` output: Pty, Language, Age/Gender, VoiceName, File, Other.

    The columns are fixed-width (a file name may hold a space: `!v/Mr serious`), so each row is
    cut where the header's column titles start.
    """
    lines = listing.splitlines()
    if not lines:
        return
    header = lines[0]
    starts = [
        header.index(title) for title in ("Language", "Age/Gender", "VoiceName", "File", "Other")
    ]
    bounds = list(zip([0] + starts, starts + [None]))
    for line in lines[1:]:
        fields = [line[a:b].strip() for a, b in bounds]
        if fields[4]:
            yield fields


def _is_novelty_variant(file: str) -> bool:
    """Variants that add a loud robotic echo (amplitude > 100%) or are marked unstable."""
    name = file.split("/", 1)[1]
    path = Path(_espeak_data_dir(), "voices", "!v", name)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return False
    for line in lines:
        words = line.split()
        if words[:1] == ["fast_test2"]:
            return True
        if words[:1] == ["echo"] and len(words) >= 3 and float(words[2]) > 100:
            return True
    return False


@functools.lru_cache(maxsize=1)
def _espeak_data_dir() -> str:
    match = re.search(r"Data at:\s*(\S+)", _run(["espeak-ng", "--version"]).decode())
    return match.group(1) if match else ""


class _Flite:
    name = "flite"

    def available(self) -> bool:
        return shutil.which("flite") is not None

    def voices(self) -> list[Voice]:
        listing = _run(["flite", "-lv"]).decode()
        names = listing.split(":", 1)[-1].split()
        voices = [Voice(self.name, n) for n in names if n not in _FLITE_LIMITED]
        for folder in FLITEVOX_DIRS:
            if folder.is_dir():
                voices.extend(Voice(self.name, str(p)) for p in sorted(folder.rglob("*.flitevox")))
        return voices

    def render(self, job: Job, workdir: Path) -> tuple[np.ndarray, int]:
        out = workdir / "flite.wav"
        cmd = ["flite", "-voice", job.voice.name, "--setf", f"duration_stretch={1 / job.rate:.4f}"]
        base_f0 = _FLITE_F0.get(job.voice.name)
        if base_f0 is not None:
            cmd += ["--setf", f"int_f0_target_mean={base_f0 * job.pitch:.1f}"]
        _run(cmd + ["-t", job.text, "-o", str(out)])
        return _read_wav(out, job.voice.speaker)


class _Festival:
    name = "festival"

    def available(self) -> bool:
        return shutil.which("festival") is not None and shutil.which("text2wave") is not None

    def voices(self) -> list[Voice]:
        script = (
            '(mapcar (lambda (v) (format t "%s %l\\n" v '
            "(cadr (assoc 'language (cadr (voice.description v)))))) (voice.list))"
        )
        listing = _run(["festival", "--pipe"], stdin=script).decode()
        voices = []
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1] == "english":
                voices.append(Voice(self.name, fields[0]))
        return voices

    def render(self, job: Job, workdir: Path) -> tuple[np.ndarray, int]:
        out = workdir / "festival.wav"
        settings = [f"(voice_{job.voice.name})"]
        if job.voice.name.endswith("_hts"):
            # HTS voices: hts_engine's own speed option; they have no F0 target to move.
            speed = f'(list "-r" {job.rate:.4f})'
            settings.append(f"(set! hts_engine_params (append hts_engine_params (list {speed})))")
        else:
            settings.append(f"(Parameter.set 'Duration_Stretch {1 / job.rate:.4f})")

            # Linear-regression intonation (diphone voices): scale the target F0 mean and spread.
            def scaled(key: str) -> str:
                return f"(list '{key} (* {job.pitch:.4f} (cadr (assoc '{key} int_lr_params))))"

            kept = "(assoc 'model_f0_mean int_lr_params) (assoc 'model_f0_std int_lr_params)"
            targets = f"{scaled('target_f0_mean')} {scaled('target_f0_std')} {kept}"
            settings.append(f"(if (boundp 'int_lr_params) (set! int_lr_params (list {targets})))")
        cmd = ["text2wave", "-o", str(out)]
        for expression in settings:
            cmd += ["-eval", expression]
        _run(cmd, stdin=job.text + "\n")
        return _read_wav(out, job.voice.speaker)


class _Pico:
    name = "pico2wave"

    def available(self) -> bool:
        return shutil.which("pico2wave") is not None

    def voices(self) -> list[Voice]:
        return [Voice(self.name, v) for v in _PICO_VOICES]

    def render(self, job: Job, workdir: Path) -> tuple[np.ndarray, int]:
        out = workdir / "pico.wav"  # pico2wave wants a .wav name
        text = (
            f"<speed level='{round(100 * job.rate)}'><pitch level='{round(100 * job.pitch)}'>"
            f"{job.text}</pitch></speed>"
        )
        _run(["pico2wave", "-l", job.voice.name, "-w", str(out), text])
        return _read_wav(out, job.voice.speaker)



_ENGINES = {e.name: e for e in (_Espeak(), _Flite(), _Festival(), _Pico(), KokoroEngine(), PiperEngine())}


def discover_voices(engines: Sequence[str] | None = None) -> dict[str, list[Voice]]:
    """The voices of each requested engine (`DEFAULT_ENGINES` by default) that is installed.

    An engine that is not installed, or whose voice listing fails, maps to an empty list.
    Raises `ConfigError` for an unknown engine name.
    """
    names = list(DEFAULT_ENGINES if engines is None else engines)
    unknown = sorted(set(names) - set(_ENGINES))
    if unknown:
        raise ConfigError(
            f"unknown TTS engine(s) {', '.join(unknown)}; known: {', '.join(ENGINES)}"
        )
    found: dict[str, list[Voice]] = {}
    for name in names:
        engine = _ENGINES[name]
        try:
            found[name] = engine.voices() if engine.available() else []
        except SynthesisError as exc:
            logger.warning("%s: cannot list its voices (%s)", name, exc)
            found[name] = []
    return found


def describe_voices(voices: dict[str, list[Voice]]) -> str:
    """A few lines saying which engines and voices were found."""
    lines = []
    for engine, found in voices.items():
        if not found:
            lines.append(f"{engine}: not installed (or no English voice)")
            continue
        names = [v.name for v in found]
        if engine == "kokoro":
            packs = [n for n in names if "=" not in n]
            lines.append(f"{engine}: {len(names)} voices ({len(packs)} packs: {', '.join(packs)}; "
                         f"{len(names) - len(packs)} blends of 2-3 packs)")
            continue
        base = sorted({n.split("+", 1)[0] for n in names})
        variants = len(names) - len(base)
        detail = f" with {variants} voice+variant combinations" if variants else ""
        lines.append(f"{engine}: {len(names)} voices ({', '.join(base)}){detail}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Text selection


def read_sentences(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    pool_size: int = POOL_SIZE,
    min_words: int = MIN_WORDS,
    max_words: int = MAX_WORDS,
) -> list[str]:
    """Normalised, distinct sentences from a text file (one a line, .gz ok) or a manifest.

    Lines are read with `harken.text.read_texts` and normalised with `normalize_text` (numbers
    spelled out, lowercase); lines outside [min_words, max_words] words are dropped. A file of
    more than `pool_size` lines is sampled down to that many (seeded) before normalising.
    """

    try:
        total = sum(1 for _ in read_texts(path))
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    keep: set[int] | None = None
    if total > pool_size:
        rng = np.random.default_rng([seed, 0x7E47])
        keep = set(rng.choice(total, size=pool_size, replace=False).tolist())
    sentences: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(read_texts(path)):
        if keep is not None and lineno not in keep:
            continue
        text = normalize_text(line)
        if min_words <= len(text.split()) <= max_words and text not in seen:
            seen.add(text)
            sentences.append(text)
    if not sentences:
        raise ConfigError(f"{path}: no line of {min_words}-{max_words} words to synthesise")
    return sentences


def select_sentences(sentences: Sequence[str], seed: int = 0) -> Iterator[int]:
    """Indices of `sentences` in greedy coverage order, near-duplicates left out.

    Each sentence is worth, per word, the words and letter trigrams it adds with diminishing
    returns: a word or trigram already chosen c times adds 1/(1+c) (trigrams count half). The next
    sentence is the one with the most worth per word (plus a constant, so short lines do not win
    by length alone). Lazy greedy: worth only falls as the selection grows, so a stale score is
    an upper bound. Ties are broken at random (seeded). A prefix of the order does not depend on
    how many are taken.
    """
    feature_ids: dict[str, int] = {}
    features: list[list[int]] = []
    weights: list[float] = []
    for text in sentences:
        ids = set()
        for word in text.split():
            ids.add(_feature(feature_ids, weights, word, 1.0))
            padded = f"^{word}$"
            for i in range(len(padded) - 2):
                ids.add(_feature(feature_ids, weights, padded[i : i + 3], 0.5))
        features.append(sorted(ids))
    counts = [0] * len(weights)
    lengths = [len(t.split()) + 5 for t in sentences]
    tiebreak = np.random.default_rng([seed, 0x5E1]).random(len(sentences)).tolist()

    def score(i: int) -> float:
        return sum(weights[f] / (1 + counts[f]) for f in features[i]) / lengths[i]

    heap = [(-score(i), tiebreak[i], i) for i in range(len(sentences))]
    heapq.heapify(heap)
    chosen_trigrams: set[tuple[str, ...]] = set()
    while heap:
        _, tie, i = heapq.heappop(heap)
        fresh = score(i)
        if heap and fresh < -heap[0][0]:
            heapq.heappush(heap, (-fresh, tie, i))
            continue
        trigrams = _word_trigrams(sentences[i])
        overlap = sum(t in chosen_trigrams for t in trigrams) / len(trigrams)
        if overlap > NEAR_DUPLICATE_OVERLAP:
            continue
        chosen_trigrams.update(trigrams)
        for f in features[i]:
            counts[f] += 1
        yield i


def _feature(ids: dict[str, int], weights: list[float], key: str, weight: float) -> int:
    if key not in ids:
        ids[key] = len(weights)
        weights.append(weight)
    return ids[key]


def _word_trigrams(text: str) -> list[tuple[str, ...]]:
    words = text.split()
    if len(words) < 3:
        return [tuple(words)]
    return [tuple(words[i : i + 3]) for i in range(len(words) - 2)]


# ----------------------------------------------------------------------------------------------
# Planning and rendering


def plan_jobs(
    sentences: Sequence[str],
    voices: dict[str, list[Voice]],
    *,
    seed: int = 0,
    audio_format: str = "flac",
) -> Iterator[Job]:
    """An endless, deterministic stream of jobs: sentences in coverage order, then again.

    Job i's engine (uniform over engines with voices), voice (uniform within the engine), rate,
    pitch, level and padding come from a generator seeded with (seed, i) alone.
    """
    engines = [name for name in sorted(voices) if voices[name]]
    if not engines:
        raise ConfigError(
            f"no TTS engine with an English voice is installed ({', '.join(ENGINES)})"
        )
    if audio_format not in AUDIO_FORMATS:
        raise ConfigError(
            f"audio format must be one of {', '.join(AUDIO_FORMATS)}, got {audio_format!r}"
        )
    order: list[int] = []
    selection = select_sentences(sentences, seed)
    index = 0
    while True:
        for i in selection:
            order.append(i)
            yield _job(index, sentences[i], engines, voices, seed, audio_format)
            index += 1
        if not order:
            return
        selection = iter(order)  # the text ran out: the same sentences again, new voices


def _job(
    index: int,
    text: str,
    engines: list[str],
    voices: dict[str, list[Voice]],
    seed: int,
    audio_format: str,
) -> Job:
    rng = np.random.default_rng([seed, index])
    engine = engines[rng.integers(len(engines))]
    voice = voices[engine][rng.integers(len(voices[engine]))]
    low, high = np.log(PITCH_RANGE)
    neural = engine in NEURAL_ENGINES
    rate = float(rng.uniform(*(NEURAL_RATE_RANGE if neural else RATE_RANGE)))
    pitch = float(np.exp(rng.uniform(low, high)))
    return Job(
        index=index,
        text=text,
        voice=voice,
        rate=rate,
        pitch=1.0 if neural else pitch,  # the neural engines keep their voice's own pitch
        level_db=float(rng.uniform(*LEVEL_DB_RANGE)),
        lead_s=float(rng.uniform(*PAD_SECONDS_RANGE)),
        tail_s=float(rng.uniform(*PAD_SECONDS_RANGE)),
        audio_format=audio_format,
    )


def render(job: Job) -> np.ndarray:
    """Render one job: float32 mono 16 kHz, engine padding trimmed, padded and levelled.

    Raises `SynthesisError` when the engine fails or its output is not plausible speech for the
    text (silent, or far too short or long for the number of words).
    """

    with tempfile.TemporaryDirectory(prefix="harken-synth-") as workdir:
        audio, rate = _ENGINES[job.voice.engine].render(job, Path(workdir))
    audio = _trim(resample(audio, rate, SAMPLE_RATE), SAMPLE_RATE)
    words = len(job.text.split())
    seconds = len(audio) / SAMPLE_RATE
    low, high = SECONDS_PER_WORD_RANGE
    if not low * words <= seconds <= high * words + 1.0:
        raise SynthesisError(
            f"{job.voice.speaker}: {seconds:.2f} s of speech for {words} words: not plausible"
        )
    audio *= 10 ** (job.level_db / 20) / np.abs(audio).max()
    lead = np.zeros(round(job.lead_s * SAMPLE_RATE), np.float32)
    tail = np.zeros(round(job.tail_s * SAMPLE_RATE), np.float32)
    return np.concatenate([lead, audio.astype(np.float32), tail])


def _trim(audio: np.ndarray, rate: int) -> np.ndarray:
    frame = round(_FRAME_S * rate)
    n = len(audio) // frame
    if n == 0:
        return audio[:0]
    energy = np.square(audio[: n * frame].reshape(n, frame)).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (-TRIM_DB / 10))
    if energy.max() <= 0 or len(loud) == 0:
        return audio[:0]
    start = max(0, loud[0] - TRIM_MARGIN_FRAMES) * frame
    return audio[start : (loud[-1] + 1 + TRIM_MARGIN_FRAMES) * frame]


def _render_to_file(task: tuple[Job, str]) -> tuple[Job, float | None, bool, str]:
    """Worker: (job, duration or None, whether reused, error message)."""
    job, out_dir = task
    path = Path(out_dir, job.relative_path)
    if path.exists():
        try:
            info = sf.info(str(path))
            if info.frames > 0:
                return job, info.frames / info.samplerate, True, ""
        except (sf.LibsndfileError, RuntimeError):
            pass  # a damaged file: render it again
    try:
        audio = render(job)
    except SynthesisError as exc:
        return job, None, False, f"{job.id} ({job.text[:40]!r}): {exc}"

    path.parent.mkdir(parents=True, exist_ok=True)
    container, subtype = AUDIO_FORMATS[job.audio_format]
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    sf.write(str(partial), audio, SAMPLE_RATE, format=container, subtype=subtype)
    os.replace(partial, path)
    return job, len(audio) / SAMPLE_RATE, False, ""


def synthesize(
    text: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    hours: float | None = None,
    count: int | None = None,
    engines: Sequence[str] | None = None,
    seed: int = 0,
    jobs: int = 1,
    audio_format: str = "flac",
    progress: bool = True,
    voices: dict[str, list[Voice]] | None = None,
) -> SynthReport:
    """Render `count` utterances, or at least `hours` of speech, into `out_dir`.

    Writes `out_dir/audio/<engine>/<id>.flac|.ogg` and `out_dir/manifest.jsonl` (rewritten
    atomically every few hundred utterances and at the end, in plan order). Files already present
    with the same id are kept, so an interrupted run resumes where it stopped. `jobs` worker
    processes render in parallel; the result does not depend on `jobs`. A failed utterance is
    reported in `failures` and skipped. `voices` (default: `discover_voices(engines)`) lets a
    caller restrict the voices.
    """
    if (hours is None) == (count is None):
        raise ConfigError("give exactly one of hours or count")
    if hours is not None and not hours > 0:
        raise ConfigError(f"hours must be > 0, got {hours}")
    if count is not None and count < 1:
        raise ConfigError(f"count must be >= 1, got {count}")
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    voices = discover_voices(engines) if voices is None else voices
    sentences = read_sentences(text, seed=seed)
    plan = plan_jobs(sentences, voices, seed=seed, audio_format=audio_format)
    report = SynthReport(manifest=out / "manifest.jsonl", voices=voices)
    target = count if count is not None else hours * 3600  # type: ignore[operator]
    entries: list[dict] = []
    bar = _progress_bar(progress, target, "utt" if count is not None else "s")
    tasks = ((job, str(out)) for job in (plan if hours is not None else _take(plan, count)))
    pool = None
    if jobs > 1:
        import multiprocessing

        # fork: workers only run engine programs, and a spawned worker would re-import torch
        # (harken's package import) for seconds each.
        methods = multiprocessing.get_all_start_methods()
        pool = multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(jobs)
    finished = False
    try:
        results = _results(pool, tasks, batch=jobs * 8)
        for job, seconds, reused, error in results:
            if seconds is None:
                report.failures.append(error)
                logger.warning("skipped %s", error)
            else:
                entries.append(_entry(job, seconds))
                report.utterances += 1
                report.seconds += seconds
                report.reused += reused
                report.rendered += not reused
                if len(entries) % 200 == 0:
                    _write_manifest(report.manifest, entries)
            # Whole units, never past the total (tqdm cannot format an overshoot).
            done = len(entries) + len(report.failures) if count is not None else report.seconds
            bar.update(min(int(done), int(target)) - bar.n)
            if hours is not None and report.seconds >= target:
                break
            if len(report.failures) >= 100 and len(report.failures) > 4 * report.utterances:
                raise SynthesisError(f"most utterances fail; the last: {report.failures[-1]}")
        finished = True
    finally:
        if entries:  # first: whatever else fails, the manifest lists every file rendered
            _write_manifest(report.manifest, entries)
        bar.close()
        if pool is not None:
            # Done: let the batch in flight finish (whole files a longer run reuses). Interrupted:
            # stop now (a file being written keeps its temporary name and is redone next time).
            if finished:
                pool.close()
            else:
                pool.terminate()
            pool.join()
    return report


def _take(plan: Iterator[Job], count: int | None) -> Iterator[Job]:
    for _, job in zip(range(count or 0), plan):
        yield job


def _results(
    pool: object, tasks: Iterator[tuple[Job, str]], batch: int
) -> Iterator[tuple[Job, float | None, bool, str]]:
    """Results in plan order; tasks are handed to the pool a batch at a time, so an endless
    plan can be stopped as soon as enough audio is done."""
    if pool is None:
        yield from map(_render_to_file, tasks)
        return
    while chunk := list(_take(tasks, batch)):  # type: ignore[arg-type]
        yield from pool.imap(_render_to_file, chunk)  # type: ignore[attr-defined]


def _entry(job: Job, seconds: float) -> dict:
    return {
        "audio": job.relative_path,
        "text": job.text,
        "duration": round(seconds, 3),
        "speaker": job.voice.speaker,
        "id": job.id,
        "engine": job.voice.engine,
        "voice": job.voice.name,
        "rate": round(job.rate, 3),
        "pitch": round(job.pitch, 3),
        **({"blend": parse_blend(job.voice.name)} if job.voice.engine == "kokoro" else {}),
    }


def _write_manifest(path: Path, entries: Iterable[dict]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json.dumps(entry) + "\n")
    os.replace(partial, path)


class _NoBar:
    n = 0

    def update(self, n: float) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(show: bool, total: float, unit: str) -> _NoBar:
    if not show:
        return _NoBar()
    import sys

    from tqdm import tqdm

    return tqdm(  # type: ignore[return-value]
        total=int(total),
        unit=unit,
        desc="synthesising",
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )
